"""Supervision under hostile services: descendants that leave their process group on purpose
(``setsid``, a double fork), an escaped child holding the output pipe, a process group number
reused by a stranger, crash cycles, and devstack itself killed with ``kill -9``.

Complements tests/component/test_process.py (grandchildren, SIGTERM ignored, leftovers of an
exited main process, output floods) and tests/e2e/test_up.py (``kill -9`` of devstack, a
crashed run not blocking the next): what is tested there is not repeated here.

Every process a test starts carries a token in its environment (:mod:`.escapees`), so a test
finds, and on failure kills, only what it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devstack.run import guardian
from devstack.run.guardian import Guardian, command_of
from devstack.run.process import ServiceProcess
from devstack.run.spawn import spawn
from tests.conditions import async_wait_until, pid_alive, port_accepts, wait_until
from tests.reliability.escapees import carrying, kill_all, new_token, with_token

PY = sys.executable
ISSUE_COMMAND = "sh -c 'setsid sleep 4242 & python3 -m http.server $PORT --bind 127.0.0.1'"
"""The command of the issue: ``sleep 4242`` leaves the service's session and group."""
DOUBLE_FORK = (
    f"{PY} -c 'import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(4242)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "time.sleep(4242)'"
)
"""A daemon the classic way: fork, setsid, fork again, the middle one exits, so the daemon is
an orphan in a session of its own."""


@pytest.fixture
def token() -> Iterator[str]:
    token = new_token()
    try:
        yield token
    finally:
        kill_all(token)


class Output:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def __call__(self, lines: list[bytes]) -> None:
        self.lines.extend(lines)


@asynccontextmanager
async def service(
    command: str,
    tmp_path: Path,
    token: str,
    *,
    guardian: Guardian | None = None,
    stop_timeout_seconds: float = 5.0,
    env: dict[str, str] | None = None,
) -> AsyncIterator[ServiceProcess]:
    environment = with_token({**os.environ, **(env or {})}, token)
    spawned = spawn(
        "svc",
        command,
        cwd=tmp_path,
        env=environment,
        guardian=guardian,
        stop_timeout_seconds=stop_timeout_seconds,
    )
    process = ServiceProcess(
        "svc",
        spawned,
        on_output=Output(),
        guardian=guardian,
        stop_timeout_seconds=stop_timeout_seconds,
    )
    try:
        yield process
    finally:
        await process.stop(timeout=0, force=True)


async def escaped(token: str, leader: int, count: int = 1) -> list[int]:
    """Wait for ``count`` processes carrying ``token`` outside ``leader``'s process group."""

    def outside() -> list[int]:
        found = [pid for pid in carrying(token) if _pgid(pid) not in (leader, None)]
        return found if len(found) >= count else []

    found = await async_wait_until(outside, message=f"{count} process(es) to leave the group")
    assert isinstance(found, list)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_the_issue_command_leaves_nothing_behind(
    tmp_path: Path, token: str, free_port: int
) -> None:
    async def main() -> None:
        async with service(ISSUE_COMMAND, tmp_path, token, env={"PORT": str(free_port)}) as proc:
            await async_wait_until(lambda: port_accepts(free_port), message="the http server")
            (sleeper,) = await escaped(token, proc.pid)
            assert command_of(sleeper) == "sleep 4242"
            await proc.stop(timeout=5)
            assert not pid_alive(sleeper), "sleep 4242 outlived its service"
            assert carrying(token) == []

    asyncio.run(main())


def test_a_double_forked_daemon_is_stopped_with_its_service(tmp_path: Path, token: str) -> None:
    async def main() -> None:
        async with service(DOUBLE_FORK, tmp_path, token) as proc:
            (daemon,) = await escaped(token, proc.pid)
            await proc.stop(timeout=5)
            assert not pid_alive(daemon)
            assert carrying(token) == []

    asyncio.run(main())


def test_an_escapee_left_by_an_exited_main_process_is_stopped(tmp_path: Path, token: str) -> None:
    async def main() -> None:
        async with service("sh -c 'setsid sleep 4242 & exit 3'", tmp_path, token) as proc:
            assert await proc.wait() == 3
            (sleeper,) = await escaped(token, proc.pid)
            await proc.stop(timeout=5)
            assert not pid_alive(sleeper)

    asyncio.run(main())


def test_an_escaped_child_holding_the_output_pipe_does_not_hold_the_stop(
    tmp_path: Path, token: str
) -> None:
    # The escapee inherited the pipe's write end: the output never reaches end-of-file while
    # it lives, so a stop that waited for the output alone would wait forever.
    async def main() -> None:
        async with service(
            "sh -c 'setsid sh -c \"echo escaped; exec sleep 4242\" & echo leader'", tmp_path, token
        ) as proc:
            await proc.wait()
            escapees = await escaped(token, proc.pid)
            await asyncio.wait_for(proc.stop(timeout=5), 10)
            assert not any(map(pid_alive, escapees))

    asyncio.run(main())


def test_a_survivor_that_cannot_be_stopped_is_named(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An escapee devstack may not signal (EPERM: it changed user through a setuid program, say)
    # survives the stop; the stop still ends, and names it by pid and command.
    monkeypatch.setattr(guardian, "_pidfd_signal", lambda pid, sig, needle: False)

    async def main() -> None:
        async with service("sh -c 'setsid sleep 4242 & exec sleep 4243'", tmp_path, token) as proc:
            (survivor,) = await escaped(token, proc.pid)
            with caplog.at_level("WARNING", logger="devstack.run.process"):
                await proc.stop(timeout=0.2)
            assert pid_alive(survivor)
            assert not pid_alive(proc.pid)
            assert f"pid {survivor} (sleep 4242)" in caplog.text

    asyncio.run(main())


def test_one_service_stopping_leaves_another_services_escapees_alone(
    tmp_path: Path, token: str
) -> None:
    other = new_token()

    async def main() -> None:
        command = "sh -c 'setsid sleep 4242 & exec sleep 4243'"
        async with service(command, tmp_path, token) as a, service(command, tmp_path, other) as b:
            (mine,) = await escaped(token, a.pid)
            (theirs,) = await escaped(other, b.pid)
            await a.stop(timeout=5)
            assert not pid_alive(mine)
            assert pid_alive(theirs) and pid_alive(b.pid)
            await b.stop(timeout=5)
            assert not pid_alive(theirs)

    try:
        asyncio.run(main())
    finally:
        kill_all(other)


def test_the_guardian_stops_escapees_when_devstack_is_gone(tmp_path: Path, token: str) -> None:
    async def main() -> None:
        guardian = Guardian()
        guardian.start()
        try:
            async with service(
                ISSUE_COMMAND.replace(
                    "python3 -m http.server $PORT --bind 127.0.0.1", "sleep 4243"
                ),
                tmp_path,
                token,
                guardian=guardian,
                stop_timeout_seconds=1,
            ) as proc:
                (sleeper,) = await escaped(token, proc.pid)
                # devstack "dies": the guardian's pipe closes with the group still registered.
                guardian.close()
                assert not pid_alive(sleeper)
                assert not pid_alive(proc.pid)
        finally:
            guardian.close()

    asyncio.run(main())


def test_the_guardian_never_signals_a_group_it_cannot_prove_is_devstacks(
    tmp_path: Path, token: str
) -> None:
    # A stranger (not a service: nothing of devstack in its environment) leads a process group
    # whose number a registration names, as after the service's group ended and the kernel gave
    # the number to someone else. The guardian must leave it alone.
    stranger = subprocess.Popen(
        ["sleep", "4242"], start_new_session=True, env=with_token(dict(os.environ), token)
    )
    try:
        guardian = subprocess.Popen(
            [PY, "-S", "-m", "devstack.run.guardian"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert guardian.stdin is not None
        guardian.stdin.write(f"+{stranger.pid} 0.2 not-the-strangers-mark 0\n".encode())
        guardian.stdin.close()
        assert guardian.wait(timeout=10) == 0
        assert stranger.poll() is None, "the guardian signalled a stranger's group"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_stop_never_signals_a_group_it_cannot_prove_is_the_services(token: str) -> None:
    # devstack's side of the same rule: a family whose leader is gone (its start time no longer
    # matches) and whose group number a stranger now leads is signalled nowhere.
    stranger = subprocess.Popen(
        ["sleep", "4242"], start_new_session=True, env=with_token(dict(os.environ), token)
    )
    try:
        for started in (0, guardian.start_time(stranger.pid) - 1):
            family = guardian.Family(stranger.pid, "not-the-strangers-mark", started)
            assert not family.owns_group(guardian.group_members(stranger.pid))
            family.signal(signal.SIGKILL)
            assert family.members() == []
        assert stranger.poll() is None, "a stranger's group was signalled"
        ours = guardian.Family(stranger.pid, "any", guardian.start_time(stranger.pid))
        assert ours.owns_group(guardian.group_members(stranger.pid)), "the leader proves it"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_hundred_crash_cycles_leave_no_zombie_and_no_process(tmp_path: Path, token: str) -> None:
    crash = "sh -c 'setsid sleep 4242 & sleep 4243 & exit 1'"

    async def main() -> None:
        for _ in range(100):
            async with service(crash, tmp_path, token) as proc:
                assert await proc.wait() == 1
                await proc.stop(timeout=5)
        assert carrying(token) == []

    asyncio.run(main())
    wait_until(lambda: not _zombie_children(), message="no zombie child of the test's process")


def _zombie_children() -> list[int]:
    me = os.getpid()
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) == me:
            zombies.append(int(entry))
    return zombies


def test_sigterm_to_an_escapee_that_ignores_it_escalates(tmp_path: Path, token: str) -> None:
    stubborn = (
        f"sh -c 'setsid {PY} -c \"import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(4242)\" & exec sleep 4243'"
    )

    async def main() -> None:
        async with service(stubborn, tmp_path, token, stop_timeout_seconds=0.3) as proc:
            (escapee,) = await escaped(token, proc.pid)
            await async_wait_until(
                lambda: _ignores_sigterm(escapee), message="the escapee to ignore SIGTERM"
            )
            await proc.stop()
            assert not pid_alive(escapee)

    asyncio.run(main())


def _ignores_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False
