"""The early spawner of ``devstack up``: each early process handed out once, the rest stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from devstack.errors import ServiceStartError
from devstack.launch import EarlySpawner
from devstack.manifest.spec import ServiceSpec
from devstack.run.guardian import Guardian, kill_groups
from devstack.run.spawn import Spawned
from tests.conditions import pid_alive, wait_until

SLEEPER = f"{sys.executable} -c 'import time; time.sleep(60)'"


@pytest.fixture
def spawned() -> Iterator[list[Spawned]]:
    """Processes a test took from the spawner: stopped, reaped and closed afterwards."""
    taken: list[Spawned] = []
    yield taken
    kill_groups({s.popen.pid: 0 for s in taken})
    for s in taken:
        s.popen.wait()
        os.close(s.output_fd)


def spawner(free_port: int) -> EarlySpawner:
    return EarlySpawner({"svc": free_port}, guardian=Guardian())  # a guardian never started


def test_the_first_start_takes_the_early_process_and_later_ones_spawn(
    tmp_path: Path, free_port: int, spawned: list[Spawned]
) -> None:
    service = ServiceSpec(name="svc", command=SLEEPER, cwd=tmp_path)
    early = spawner(free_port)
    early.spawn_early(service)
    spawned.append(early.spawn(service))
    spawned.append(early.spawn(service))
    first, second = spawned
    assert first.popen.pid != second.popen.pid
    assert pid_alive(first.popen.pid) and pid_alive(second.popen.pid)
    early.close()
    assert pid_alive(first.popen.pid), "close() stopped a process that had been taken"


def test_a_failed_early_spawn_leaves_nothing_and_the_first_start_reports_it(
    tmp_path: Path, free_port: int
) -> None:
    service = ServiceSpec(name="svc", command="no-such-program-xyz --flag", cwd=tmp_path)
    early = spawner(free_port)
    early.spawn_early(service)
    with pytest.raises(ServiceStartError, match=r"svc: command not found: no-such-program-xyz"):
        early.spawn(service)
    early.close()


@pytest.mark.parametrize(
    "session",
    [False, True],
    ids=["a-child-in-its-group", "a-daemon-forked-out-of-its-group"],
)
def test_close_stops_what_no_start_took(tmp_path: Path, free_port: int, session: bool) -> None:
    pids = tmp_path / "pids"
    (tmp_path / "parent.py").write_text(
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        f"                         start_new_session={session})\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    service = ServiceSpec(name="svc", command=f"{sys.executable} parent.py", cwd=tmp_path)
    early = spawner(free_port)
    early.spawn_early(service)
    found: list[int] = []
    try:
        found = cast(list[int], wait_until(lambda: read_pids(pids), message="parent and child"))
        early.close()
        assert not any(pid_alive(pid) for pid in found), "an early process outlived close()"
    finally:
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def read_pids(path: Path) -> list[int] | None:
    try:
        pids = [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return None
    return pids if len(pids) == 2 else None
