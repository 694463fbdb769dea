"""ServiceProcess against real processes: groups, escalation, output at volume."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from devstack.errors import ServiceStartError
from devstack.run.guardian import group_members
from devstack.run.process import ServiceProcess
from devstack.run.spawn import spawn
from tests.conditions import async_wait_until, pid_alive

T = TypeVar("T")
PY = sys.executable


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


class Collected:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.bytes = 0

    def __call__(self, lines: list[bytes]) -> None:
        self.lines.extend(lines)
        self.bytes += sum(len(line) + 1 for line in lines)


def start(
    command: str, tmp_path: Path, out: Collected, stop_timeout_seconds: float = 5.0
) -> ServiceProcess:
    spawned = spawn("svc", command, cwd=tmp_path, env=dict(os.environ))
    return ServiceProcess("svc", spawned, on_output=out, stop_timeout_seconds=stop_timeout_seconds)


@contextlib.asynccontextmanager
async def started(
    command: str, tmp_path: Path, out: Collected, stop_timeout_seconds: float = 5.0
) -> AsyncIterator[ServiceProcess]:
    """Start ``command`` and make sure its whole group is gone afterwards, pass or fail."""
    proc = start(command, tmp_path, out, stop_timeout_seconds)
    try:
        yield proc
    finally:
        await proc.stop(timeout=0, force=True)


def read_pids(path: Path, count: int) -> list[int] | None:
    try:
        pids = [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return None
    return pids if len(pids) >= count else None


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_command_not_found_names_service_and_command(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError, match=r"svc: command not found: no-such-program-xyz"):
        spawn("svc", "no-such-program-xyz --flag", cwd=tmp_path, env=dict(os.environ))


def test_grandchildren_die_with_the_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = (
        f"{PY} -c 'import time; time.sleep(60)' & echo $! >> {pids_file}; "
        f"{PY} -c 'import time; time.sleep(60)' & echo $! >> {pids_file}; wait"
    )

    async def main() -> list[int]:
        pids: list[int] = []
        try:
            async with started(script, tmp_path, Collected()) as proc:
                found = await async_wait_until(
                    lambda: read_pids(pids_file, 2), message="two grandchildren"
                )
                assert isinstance(found, list)
                pids = found
                await proc.stop(timeout=5)
                assert not any(pid_alive(p) for p in pids), "a grandchild survived the stop"
                assert group_members(proc.pid) == []
        finally:
            kill_leftovers(pids)
        return pids

    run(main)


def test_a_child_that_ignores_sigterm_is_killed_after_its_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    (tmp_path / "stubborn.py").write_text(
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )

    async def main() -> None:
        async with started(
            f"{PY} stubborn.py", tmp_path, Collected(), stop_timeout_seconds=0.3
        ) as proc:
            await async_wait_until(ready.exists, message="the child to ignore SIGTERM")
            returncode = await proc.stop()
            assert returncode == -signal.SIGKILL
            assert not pid_alive(proc.pid)

    run(main)


def test_leftovers_of_an_exited_main_process_are_stopped(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = f"{PY} -c 'import time; time.sleep(60)' & echo $! > {pids_file}"

    async def main() -> None:
        proc = start(script, tmp_path, Collected())
        assert await proc.wait() == 0
        pids = read_pids(pids_file, 1)
        assert pids is not None
        try:
            await proc.stop(timeout=5)
            assert not pid_alive(pids[0])
        finally:
            kill_leftovers(pids)

    run(main)


def test_a_hundred_megabytes_of_output_is_drained(tmp_path: Path) -> None:
    # 100 MiB in 1 KiB lines, as fast as the child can write: the pump must keep up (a blocked
    # pipe would stall the child forever) and lose nothing.
    code = (
        "import sys; line = b'x' * 1023 + b'\\n'; w = sys.stdout.buffer.write\n"
        "for _ in range(100 * 1024): w(line)"
    )

    async def main() -> None:
        out = Collected()
        async with started(f'{PY} -c "{code}"', tmp_path, out) as proc:
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            await proc.drained(timeout=30)
        assert out.bytes == 100 * 1024 * 1024
        assert len(out.lines) == 100 * 1024

    run(main)


def test_a_one_megabyte_line_and_a_missing_final_newline(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('y' * (1 << 20) + '\\n' + 'tail without newline')"

    async def main() -> None:
        out = Collected()
        async with started(f'{PY} -c "{code}"', tmp_path, out) as proc:
            await proc.wait()
            await proc.drained(timeout=10)
        assert out.lines == [b"y" * (1 << 20), b"tail without newline"]

    run(main)
