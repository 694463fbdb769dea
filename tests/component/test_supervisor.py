"""The supervisor with real processes, a controlled clock and a printer writing to memory.

Its state machine alone, without processes, is tested in tests/unit/test_supervisor_script.py.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from devstack.errors import ServiceStartError
from devstack.manifest.spec import HealthSpec, RestartPolicy, ServiceSpec, StackSpec
from devstack.run.output import Printer
from devstack.run.record import stop_order
from devstack.run.spawn import Spawner
from devstack.run.starter import SpawningStarter
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState
from tests.clock import ManualClock
from tests.conditions import async_wait_until

T = TypeVar("T")
PY = sys.executable


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stack(tmp_path: Path, *services: ServiceSpec) -> StackSpec:
    return StackSpec(
        manifest_path=tmp_path / "devstack.yaml", services={s.name: s for s in services}
    )


async def supervise(
    spec: StackSpec,
    body: Callable[[Supervisor], Awaitable[T]],
    *,
    clock: ManualClock | None = None,
) -> tuple[T, str]:
    """Run a supervisor around ``body``; always shut it down; return body's result and output."""
    out = io.BytesIO()
    ports = dict(zip(spec.services, free_ports(len(spec.services)), strict=True))
    printer = Printer(spec.services, stream=out, colour=False)
    starter = SpawningStarter(Spawner(ports))
    supervisor = Supervisor(spec, ports, printer, starter=starter, clock=clock)
    runner = asyncio.ensure_future(supervisor.run())
    try:
        result = await body(supervisor)
    finally:
        supervisor.request_shutdown()
        await asyncio.wait_for(runner, 20)
    return result, out.getvalue().decode()


async def wait_out_backoff(
    supervisor: Supervisor, clock: ManualClock, name: str, restarts: int
) -> float:
    """Wait for ``name`` to back off before its ``restarts``-th restart; move the clock past the
    delay; return it."""

    def backing_off() -> bool:
        status = supervisor.status(name)
        # The backoff's sleep starts in a task of its own, a turn of the loop after the state
        # says BACKOFF: wait until the clock holds it too.
        return (status.state is ServiceState.BACKOFF and status.restarts == restarts
                and bool(clock.pending))  # fmt: skip

    await async_wait_until(backing_off, message=f"{name} to back off before restart {restarts}")
    delay = clock.pending[0]
    clock.advance(delay)
    return delay


def test_crash_loop_backs_off_exponentially_then_fails(tmp_path: Path) -> None:
    clock = ManualClock()
    spec = stack(tmp_path, ServiceSpec(name="flaky", command="false", cwd=tmp_path))

    async def body(supervisor: Supervisor) -> list[float]:
        delays = [await wait_out_backoff(supervisor, clock, "flaky", n) for n in range(1, 5)]
        with pytest.raises(ServiceStartError, match="flaky: exited with code 1; crashed 5 times"):
            await asyncio.wait_for(supervisor.started, 20)
        status = supervisor.status("flaky")
        assert status.state is ServiceState.FAILED
        assert status.restarts == 4
        assert status.exit_code == 1
        return delays

    delays, output = asyncio.run(supervise(spec, body, clock=clock))
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert "flaky: exited with code 1; restarting in 0.5s" in output


def test_a_healthy_period_resets_the_backoff(tmp_path: Path) -> None:
    clock = ManualClock()
    runs, release = tmp_path / "runs", tmp_path / "release"
    # Crashes at once, except the third run, which waits for the test before crashing.
    (tmp_path / "flaky.py").write_text(
        "import pathlib, sys, time\n"
        f"runs, release = pathlib.Path({str(runs)!r}), pathlib.Path({str(release)!r})\n"
        "with runs.open('a') as f:\n"
        "    f.write('x')\n"
        "if len(runs.read_text()) == 3:\n"
        "    while not release.exists():\n"
        "        time.sleep(0.01)\n"
        "sys.exit(1)\n"
    )
    spec = stack(tmp_path, ServiceSpec(name="flaky", command=f"{PY} flaky.py", cwd=tmp_path))

    def third_run_started() -> bool:
        return runs.exists() and len(runs.read_text()) == 3

    async def body(supervisor: Supervisor) -> list[float]:
        delays = [await wait_out_backoff(supervisor, clock, "flaky", n) for n in (1, 2)]
        await async_wait_until(third_run_started, message="the third run")
        clock.advance(3600)  # the third run "lasts" an hour before it crashes
        release.touch()
        delays.append(await wait_out_backoff(supervisor, clock, "flaky", 3))
        return delays

    delays, _ = asyncio.run(supervise(spec, body, clock=clock))
    assert delays == [0.5, 1.0, 0.5]


def test_restart_never_and_exit_zero_is_done(tmp_path: Path) -> None:
    spec = stack(
        tmp_path,
        ServiceSpec(
            name="migrate",
            command="echo migrated",
            cwd=tmp_path,
            restart=RestartPolicy.NEVER,
            health=HealthSpec(enabled=False),
        ),
    )

    async def body(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.started, 10)
        await async_wait_until(
            lambda: supervisor.status("migrate").state is ServiceState.DONE, message="done"
        )

    _, output = asyncio.run(supervise(spec, body))
    assert "migrate  | migrated" in output


def test_restart_never_and_a_failure_is_crashed(tmp_path: Path) -> None:
    spec = stack(
        tmp_path,
        ServiceSpec(
            name="job", command="sh -c 'exit 3'", cwd=tmp_path, restart=RestartPolicy.NEVER
        ),
    )

    async def body(supervisor: Supervisor) -> None:
        with pytest.raises(ServiceStartError):
            await asyncio.wait_for(supervisor.started, 10)
        assert supervisor.status("job").state is ServiceState.CRASHED
        assert supervisor.status("job").exit_code == 3

    asyncio.run(supervise(spec, body))


def test_dependents_wait_for_readiness_not_just_the_start(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # `db` starts at once but listens only once the test opens the gate.
    (tmp_path / "db.py").write_text(
        "import os, pathlib, socket, time\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "while not gate.exists():\n"
        "    time.sleep(0.01)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
        "while True:\n"
        "    s.accept()[0].close()\n"
    )
    spec = stack(
        tmp_path,
        ServiceSpec(
            name="web",
            command=f"{PY} -m http.server $PORT --bind 127.0.0.1",
            cwd=tmp_path,
            depends_on=("db",),
        ),
        ServiceSpec(name="db", command=f"{PY} db.py", cwd=tmp_path),
    )

    async def body(supervisor: Supervisor) -> None:
        await async_wait_until(
            lambda: supervisor.status("db").state is ServiceState.STARTING, message="db starting"
        )
        assert supervisor.status("web").state is ServiceState.PENDING
        gate.touch()
        await asyncio.wait_for(supervisor.started, 20)
        assert supervisor.status("web").is_ready

    _, output = asyncio.run(supervise(spec, body))
    assert output.index("db: ready") < output.index("web: starting")
    assert output.index("web: stopped") < output.index("db: stopped")  # dependents stop first


def test_a_restart_request_replaces_the_process(tmp_path: Path) -> None:
    spec = stack(
        tmp_path,
        ServiceSpec(
            name="web", command=f"{PY} -m http.server $PORT --bind 127.0.0.1", cwd=tmp_path
        ),
    )

    async def body(supervisor: Supervisor) -> None:
        await asyncio.wait_for(supervisor.started, 20)
        first = supervisor.status("web").pid
        supervisor.restart("web")
        await async_wait_until(
            lambda: supervisor.status("web").is_ready and supervisor.status("web").pid != first,
            message="a new ready process",
        )
        ready = await supervisor.wait_ready("web", 5)
        assert ready.is_ready

    asyncio.run(supervise(spec, body))


def test_stop_order_puts_dependents_first(tmp_path: Path) -> None:
    spec = stack(
        tmp_path,
        ServiceSpec(name="web", command="x", cwd=tmp_path, depends_on=("api",)),
        ServiceSpec(name="api", command="x", cwd=tmp_path, depends_on=("db",)),
        ServiceSpec(name="db", command="x", cwd=tmp_path),
        ServiceSpec(name="cache", command="x", cwd=tmp_path),
    )
    assert stop_order(spec) == [["web", "cache"], ["api"], ["db"]]
