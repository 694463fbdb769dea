"""The supervisor's state machine, driven through scripted histories: no process, no socket, no
wall-clock time.

Fake processes (the test decides when they print, exit and how they take a stop), a fake
readiness (the test says when a service answers) and a manual clock (the test moves time) go in
through the supervisor's seams; the supervisor itself is the real one, running its real loop.
The test waits for it by turning the event loop, never by sleeping.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import signal
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

import pytest

from devstack.errors import ServiceStartError
from devstack.manifest.spec import (
    HealthSpec,
    ReloadMode,
    RestartPolicy,
    ServiceSpec,
    StackSpec,
)
from devstack.run.events import ProcessExited, ServiceBecameReady, StopRequested
from devstack.run.output import Printer
from devstack.run.process import OutputHandler
from devstack.run.supervisor import Supervisor
from devstack.run.wording import describe_changes
from devstack.status import ServiceState, ServiceStatus
from tests.clock import ManualClock

TURNS = 200
"""How many turns of the event loop a history step may take: far more than any needs."""
FIRST_PORT = 41000
"""Ports only printed and handed to the fake readiness: nothing binds or connects."""
FIRST_PICKED_PORT = 42000
"""The first port the fake port picker hands a blue-green reload's new version."""

PENDING, STARTING, READY = ServiceState.PENDING, ServiceState.STARTING, ServiceState.READY
BACKOFF, STOPPING, STOPPED = ServiceState.BACKOFF, ServiceState.STOPPING, ServiceState.STOPPED
DONE, FAILED, CRASHED = ServiceState.DONE, ServiceState.FAILED, ServiceState.CRASHED
RESTARTING = ServiceState.RESTARTING


async def settle() -> None:
    """Turn the event loop until everything the last step set off has run its course (the fake
    world does nothing by itself): before asserting that something did not happen."""
    for _ in range(TURNS):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], object], message: str) -> None:
    """Turn the event loop until ``predicate`` holds, then :func:`settle`; fail saying what was
    awaited."""
    for _ in range(TURNS):
        if predicate():
            await settle()
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still waiting for {message} after {TURNS} turns of the event loop")


class FakeProcess:
    """A started process that does what the test says, when the test says it."""

    def __init__(
        self,
        pid: int,
        port: int,
        started_at: float,
        on_output: OutputHandler,
        *,
        exits_on_stop: bool,
    ) -> None:
        self.pid = pid
        self.port = port
        """The ``PORT`` it was started with."""
        self.started_at = started_at
        self.stops: list[bool] = []
        """One entry per stop asked while it ran: whether it was forced."""
        self._on_output = on_output
        self._exits_on_stop = exits_on_stop
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def is_running(self) -> bool:
        return not self._exited.done()

    def say(self, *lines: str) -> None:
        self._on_output([line.encode() for line in lines])

    def exit(self, returncode: int) -> None:
        if self.is_running:
            self._exited.set_result(returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def stop(self, *, force: bool = False) -> int | None:
        if self.is_running:
            self.stops.append(force)
            if force or self._exits_on_stop:
                self.exit(-signal.SIGKILL if force else -signal.SIGTERM)
        return await self.wait()


class FakeStarter:
    """Starts fake processes, with pids from 101 up; commands in ``missing`` cannot run.
    ``exits_on_stop`` false: a stop only records the request; the process exits when the test
    says (or when the stop is forced)."""

    def __init__(
        self, clock: ManualClock, *, exits_on_stop: bool, missing: tuple[str, ...]
    ) -> None:
        self.clock = clock
        self.started: list[tuple[str, FakeProcess]] = []
        self._exits_on_stop = exits_on_stop
        self._missing = missing
        self._pids = itertools.count(101)

    def start(self, service: ServiceSpec, port: int, on_output: OutputHandler) -> FakeProcess:
        if service.command in self._missing:
            raise ServiceStartError(
                f"{service.name}: command not found: {service.command} (command: "
                f"{service.command}); check the spelling, the service's cwd and PATH"
            )
        process = FakeProcess(
            next(self._pids), port, self.clock.now(), on_output, exits_on_stop=self._exits_on_stop
        )
        self.started.append((service.name, process))
        return process

    def processes(self, name: str) -> list[FakeProcess]:
        return [process for started, process in self.started if started == name]


class FakeReadiness:
    """Readiness that comes when the test says: one pending wait per port."""

    def __init__(self) -> None:
        self._waits: dict[int, asyncio.Future[None]] = {}
        self.is_closed = False

    async def wait(self, health: HealthSpec, port: int) -> None:
        answer = asyncio.get_running_loop().create_future()
        self._waits[port] = answer
        try:
            await answer
        finally:
            if self._waits.get(port) is answer:
                del self._waits[port]

    def is_waiting(self, port: int) -> bool:
        return port in self._waits

    def answer(self, port: int) -> None:
        self._waits[port].set_result(None)

    def close(self) -> None:
        self.is_closed = True


class Script:
    """A real supervisor wired to fakes, and the steps of a history played on it."""

    def __init__(
        self, services: tuple[ServiceSpec, ...], *, exits_on_stop: bool, missing: tuple[str, ...]
    ) -> None:
        self.spec = StackSpec(
            manifest_path=Path("/nowhere/devstack.yaml"), services={s.name: s for s in services}
        )
        self.ports = {name: FIRST_PORT + i for i, name in enumerate(self.spec.services)}
        self.clock = ManualClock()
        self.starter = FakeStarter(self.clock, exits_on_stop=exits_on_stop, missing=missing)
        self.readiness = FakeReadiness()
        self.avoided: list[frozenset[int]] = []
        """The ports each pick had to avoid."""
        self._picks = itertools.count(FIRST_PICKED_PORT)
        self._out = io.BytesIO()
        printer = Printer(self.spec.services, stream=self._out, colour=False)
        self.supervisor = Supervisor(
            self.spec,
            self.ports,
            printer,
            starter=self.starter,
            readiness=self.readiness,
            clock=self.clock,
            pick_port=self._pick_port,
        )
        self.running: asyncio.Future[None] | None = None
        """The supervisor's :meth:`~Supervisor.run`, once :func:`play` has started it."""

    def _pick_port(self, avoid: Collection[int]) -> int:
        self.avoided.append(frozenset(avoid))
        return next(self._picks)

    def status(self, name: str) -> ServiceStatus:
        return self.supervisor.status(name)

    def state(self, name: str) -> ServiceState:
        return self.status(name).state

    def process(self, name: str) -> FakeProcess:
        """The latest process started for ``name``."""
        return self.starter.processes(name)[-1]

    @property
    def lines(self) -> list[str]:
        """Everything printed, as ``name | text`` (no time stamp, no padding)."""
        text = self._out.getvalue().decode()
        return [re.sub(r"^\S+ (\S+) +\| ", r"\1 | ", line) for line in text.splitlines()]

    async def reaches(self, name: str, state: ServiceState) -> ServiceStatus:
        await until(lambda: self.state(name) is state, f"{name} to be {state}")
        return self.status(name)

    async def answer(self, name: str) -> ServiceStatus:
        """``name``'s latest process passes its readiness probe; wait for the supervisor to see
        the service ready on it."""
        process = self.process(name)
        port = process.port
        await until(lambda: self.readiness.is_waiting(port), f"a readiness probe of {name}")
        self.readiness.answer(port)
        await until(
            lambda: self.status(name).is_ready and self.status(name).pid == process.pid,
            f"{name} to be ready on pid {process.pid}",
        )
        return self.status(name)

    async def crash(self, name: str, returncode: int = 1) -> ServiceStatus:
        """``name``'s process exits; wait for the supervisor to have handled it."""
        process = self.process(name)
        process.exit(returncode)
        await until(
            lambda: self.status(name).pid != process.pid, f"{name} to see pid {process.pid} exit"
        )
        return self.status(name)


def service(
    name: str,
    *depends_on: str,
    command: str | None = None,
    restart: RestartPolicy = RestartPolicy.ON_FAILURE,
    health: HealthSpec | None = None,
    reload: ReloadMode = ReloadMode.RESTART,
) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        command=command or f"serve {name}",
        cwd=Path("/nowhere"),
        depends_on=depends_on,
        restart=restart,
        health=health or HealthSpec(),
        reload=reload,
    )


def play(
    history: Callable[[Script], Awaitable[None]],
    *services: ServiceSpec,
    exits_on_stop: bool = True,
    missing: tuple[str, ...] = (),
) -> Script:
    """Run the supervisor of ``services``, play ``history`` on it, and make sure it finishes
    (asking for a forced shutdown if the history left it running)."""

    async def main() -> Script:
        script = Script(services, exits_on_stop=exits_on_stop, missing=missing)
        script.running = running = asyncio.ensure_future(script.supervisor.run())
        try:
            await history(script)
        finally:
            if not running.done():
                script.supervisor.request_shutdown(force=True)
            await until(running.done, "the supervisor to finish")
            started = script.supervisor.started
            if started.done() and not started.cancelled():
                started.exception()  # looked at by the history, or not of interest to it
        running.result()
        return script

    return asyncio.run(main())


# --- histories -------------------------------------------------------------------------------


def test_a_service_starts_prints_and_becomes_ready() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        assert script.lines == ["devstack | web: starting (pid 101): serve web"]
        script.process("web").say("listening")
        script.clock.advance(0.25)
        ready = await script.answer("web")
        assert ready == ServiceStatus(
            name="web", state=READY, port=FIRST_PORT, pid=101, last_lines=("listening",)
        )
        assert script.supervisor.started.done()
        assert script.lines[1:] == [
            "web | listening",
            f"devstack | web: ready in 250 ms on port {FIRST_PORT}",
        ]

    script = play(history, service("web"))
    assert script.readiness.is_closed


def test_without_a_health_check_a_service_is_ready_once_started() -> None:
    async def history(script: Script) -> None:
        await script.reaches("worker", READY)
        assert not script.readiness.is_waiting(script.ports["worker"])
        assert f"devstack | worker: started in 0 ms on port {FIRST_PORT}" in script.lines

    play(history, service("worker", health=HealthSpec(enabled=False)))


def test_a_slow_start_is_reported_when_the_clock_passes_the_deadline() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        script.clock.advance(29.9)
        await settle()
        assert not any("not ready" in line for line in script.lines)
        script.clock.advance(0.1)
        await until(lambda: len(script.lines) == 2, "the overdue warning")
        assert script.lines[1] == (
            f"devstack | web: not ready after 30s (nothing accepts connections on port "
            f"{FIRST_PORT}); still waiting. A service that does not listen can say `health: false`"
        )
        assert script.state("web") is STARTING
        await script.answer("web")

    play(history, service("web", health=HealthSpec(timeout_seconds=30)))


def test_a_dependent_starts_only_once_its_dependency_is_ready() -> None:
    async def history(script: Script) -> None:
        await script.reaches("db", STARTING)
        await settle()
        assert script.state("web") is PENDING
        assert [name for name, _ in script.starter.started] == ["db"]
        await script.answer("db")
        await script.reaches("web", STARTING)
        await script.answer("web")

    play(history, service("web", "db"), service("db"))


def test_a_crash_backs_off_for_the_delay_then_starts_again() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        crashed = await script.crash("web")
        assert crashed == ServiceStatus(
            name="web",
            state=BACKOFF,
            port=FIRST_PORT,
            exit_code=1,
            restarts=1,
            reason="exited with code 1",
        )
        assert script.lines[-1] == "devstack | web: exited with code 1; restarting in 0.5s"
        assert script.clock.pending == [0.5]
        script.clock.advance(0.49)
        await settle()
        assert script.state("web") is BACKOFF
        assert len(script.starter.processes("web")) == 1
        script.clock.advance(0.01)
        again = await script.reaches("web", STARTING)
        assert (again.pid, again.restarts) == (102, 1)
        assert script.lines[-1] == "devstack | web: starting (pid 102): serve web"

    play(history, service("web"))


def test_a_crash_loop_backs_off_longer_each_time_then_fails() -> None:
    async def history(script: Script) -> None:
        delays = []
        for _ in range(4):
            await script.reaches("web", STARTING)
            await script.crash("web")
            assert script.state("web") is BACKOFF
            delays.append(script.clock.pending[0])
            script.clock.advance(delays[-1])
        assert delays == [0.5, 1.0, 2.0, 4.0]
        await script.reaches("web", STARTING)
        failed = await script.crash("web")
        reason = "web: exited with code 1; crashed 5 times in a row, giving up"
        assert failed == ServiceStatus(
            name="web", state=FAILED, port=FIRST_PORT, exit_code=1, restarts=4, reason=reason
        )
        with pytest.raises(ServiceStartError, match=re.escape(reason)):
            await script.supervisor.started
        assert script.clock.pending == []
        await until(lambda: "every service has ended" in script.lines[-1], "the end")

    script = play(history, service("web"))
    assert len(script.starter.started) == 5
    assert "devstack | web: exited with code 1; restarting in 4s" in script.lines


@pytest.mark.parametrize("policy", [RestartPolicy.ON_FAILURE, RestartPolicy.NEVER])
def test_exit_zero_is_done_unless_the_policy_is_always(policy: RestartPolicy) -> None:
    async def history(script: Script) -> None:
        await script.reaches("migrate", STARTING)
        done = await script.crash("migrate", 0)
        assert done == ServiceStatus(
            name="migrate", state=DONE, port=FIRST_PORT, exit_code=0, reason="exited with code 0"
        )
        assert script.lines[-2:] == [
            "devstack | migrate: exited with code 0; done",
            "devstack | every service has ended; nothing left to run",
        ]
        await script.supervisor.started  # done counts as settled
        assert script.clock.pending == []

    script = play(history, service("migrate", restart=policy))
    assert len(script.starter.started) == 1


def test_exit_zero_under_restart_always_backs_off() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        backing_off = await script.crash("web", 0)
        assert (backing_off.state, backing_off.reason) == (BACKOFF, "exited with code 0")

    play(history, service("web", restart=RestartPolicy.ALWAYS))


def test_a_command_that_cannot_start_fails_the_start_with_its_message() -> None:
    reason = (
        "worker: command not found: nodee (command: nodee); check the spelling, the service's "
        "cwd and PATH"
    )

    async def history(script: Script) -> None:
        failed = await script.reaches("worker", FAILED)
        assert failed.reason == reason
        assert f"devstack | {reason}" in script.lines
        with pytest.raises(ServiceStartError, match=re.escape(reason)):
            await script.supervisor.started
        assert script.state("web") is STARTING  # the rest of the stack keeps going

    worker = service("worker", command="nodee")
    play(history, service("web"), worker, missing=("nodee",))


def test_a_stack_whose_only_service_cannot_start_ends_by_itself() -> None:
    async def history(script: Script) -> None:
        assert script.running is not None
        await until(script.running.done, "the supervisor to end by itself")
        assert script.state("worker") is FAILED
        assert script.lines == [
            "devstack | worker: command not found: nodee (command: nodee); check the spelling, "
            "the service's cwd and PATH",
            "devstack | every service has ended; nothing left to run",
        ]
        with pytest.raises(ServiceStartError, match="worker: command not found: nodee"):
            await script.supervisor.started

    play(history, service("worker", command="nodee"), missing=("nodee",))


def test_a_stop_during_the_start_stops_it_and_a_late_ready_changes_nothing() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        process = script.process("web")
        script.supervisor.post(StopRequested("web"))
        await script.reaches("web", STOPPING)
        assert process.stops == [False]
        process.exit(-signal.SIGTERM)
        stopped = await script.reaches("web", STOPPED)
        assert (stopped.pid, stopped.exit_code) == (None, -signal.SIGTERM)
        assert "devstack | web: stopped" in script.lines
        script.supervisor.post(ServiceBecameReady("web", process.pid, 0.1))
        await settle()
        assert script.state("web") is STOPPED
        assert not any("web: ready" in line for line in script.lines)

    # `db` keeps the stack running: with nothing left, the supervisor would end on its own.
    play(history, service("web"), service("db"), exits_on_stop=False)


def test_a_restart_during_the_backoff_starts_at_once_and_the_old_timer_is_ignored() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.crash("web")
        script.clock.advance(0.25)
        assert script.clock.pending == [0.25]
        script.supervisor.restart("web")
        restarted = await script.reaches("web", STARTING)
        assert restarted.pid == 102
        await script.crash("web")
        # The first backoff's timer is still pending; the new one starts over (a requested
        # restart forgets earlier failures).
        assert script.clock.pending == [0.25, 0.5]
        script.clock.advance(0.25)
        await settle()
        assert script.state("web") is BACKOFF, "the first backoff's timer started it early"
        assert len(script.starter.started) == 2
        script.clock.advance(0.25)
        again = await script.reaches("web", STARTING)
        assert again.pid == 103

    play(history, service("web"))


def test_a_restart_requested_during_the_shutdown_is_ignored() -> None:
    async def history(script: Script) -> None:
        for name in ("web", "cache"):
            await script.reaches(name, STARTING)
        script.supervisor.request_shutdown()
        await script.reaches("cache", STOPPING)
        script.process("web").exit(-signal.SIGTERM)
        await script.reaches("web", STOPPED)
        script.supervisor.restart("web")
        await settle()
        assert script.state("web") is STOPPED
        script.process("cache").exit(-signal.SIGTERM)
        assert script.running is not None
        await until(script.running.done, "the supervisor to finish its shutdown")
        assert len(script.starter.started) == 2

    play(history, service("web"), service("cache"), exits_on_stop=False)


def test_an_exit_of_a_replaced_process_is_ignored() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        old = script.process("web")
        script.supervisor.restart("web")
        await script.reaches("web", RESTARTING)
        assert old.stops == [False]
        await script.reaches("web", STARTING)
        await script.answer("web")
        printed = list(script.lines)
        script.supervisor.post(ProcessExited("web", old.pid, 1))
        await settle()
        assert script.status("web") == ServiceStatus(
            name="web", state=READY, port=FIRST_PORT, pid=102
        )
        assert script.lines == printed
        assert script.clock.pending == []

    play(history, service("web"))


def test_shutdown_stops_dependents_before_what_they_depend_on() -> None:
    async def history(script: Script) -> None:
        for name in ("db", "api", "web", "cache"):
            await script.reaches(name, STARTING)
            await script.answer(name)
        await script.supervisor.started
        assert [name for name, _ in script.starter.started] == ["db", "cache", "api", "web"]

        script.supervisor.request_shutdown()
        await script.reaches("web", STOPPING)
        await script.reaches("cache", STOPPING)
        await settle()
        assert (script.state("api"), script.state("db")) == (READY, READY)
        script.process("web").exit(-signal.SIGTERM)
        await script.reaches("web", STOPPED)
        await settle()
        assert script.state("api") is READY, "api was stopped before cache, of the same wave"
        script.process("cache").exit(-signal.SIGTERM)
        await script.reaches("api", STOPPING)
        assert script.state("db") is READY
        script.process("api").exit(-signal.SIGTERM)
        await script.reaches("db", STOPPING)
        script.process("db").exit(-signal.SIGTERM)
        await script.reaches("db", STOPPED)

    script = play(
        history,
        service("web", "api"),
        service("api", "db"),
        service("db"),
        service("cache"),
        exits_on_stop=False,
    )
    stopped = [line.split()[2].rstrip(":") for line in script.lines if line.endswith("stopped")]
    assert stopped == ["web", "cache", "api", "db"]
    assert all(process.stops == [False] for _, process in script.starter.started)


def test_a_forced_shutdown_kills_every_running_process() -> None:
    async def history(script: Script) -> None:
        for name in ("db", "web"):
            await script.reaches(name, STARTING)
            await script.answer(name)
        script.supervisor.request_shutdown()
        await script.reaches("web", STOPPING)
        script.supervisor.request_shutdown(force=True)
        await script.reaches("db", STOPPED)
        assert script.process("web").stops == [False, True]
        assert script.process("db").stops == [True]

    play(history, service("web", "db"), service("db"), exits_on_stop=False)


# --- reloads (reload: restart) ---------------------------------------------------------------


def test_a_reload_stops_the_old_process_and_requests_wait_for_the_new_one() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        old = script.process("web")
        script.supervisor.reload("web", ("/nowhere/server.py",))
        reloading = await script.reaches("web", RESTARTING)
        assert reloading.pid == old.pid, "the old process still answers its requests"
        assert reloading.state.is_coming
        assert old.stops == [False], "SIGTERM (escalating after the stop timeout), not a kill"
        waiting = asyncio.ensure_future(script.supervisor.wait_ready("web", 30))
        await settle()
        assert not waiting.done(), "a request during the reload must wait for the new process"
        old.exit(-signal.SIGTERM)
        new = await script.reaches("web", STARTING)
        assert new.pid == 102
        assert not waiting.done()
        script.clock.advance(0.312)
        await script.answer("web")
        assert (await waiting).pid == 102
        assert script.lines[-3:] == [
            "devstack | web: reloading (server.py changed)",
            "devstack | web: starting (pid 102): serve web",
            "devstack | web: reloaded in 312 ms",
        ]
        assert script.status("web").restarts == 0, "a reload is not a crash"

    play(history, service("web"), exits_on_stop=False)


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ((), "reload requested"),
        (("/nowhere/server.py",), "server.py changed"),
        (("/elsewhere/lib.py",), "/elsewhere/lib.py changed"),
        (("a.py", "/nowhere/pkg/b.py"), "2 files changed: a.py, pkg/b.py"),
        (("a.py", "b.py", "c.py", "d.py", "e.py"), "5 files changed: a.py, b.py, c.py, ..."),
    ],
)
def test_a_reload_line_names_the_changed_files(files: tuple[str, ...], said: str) -> None:
    assert describe_changes(service("web"), files) == said


def test_a_reload_skips_the_backoff_and_forgets_the_crashes_before() -> None:
    async def history(script: Script) -> None:
        for _ in range(3):
            await script.reaches("web", STARTING)
            await script.crash("web")
            script.clock.advance(script.clock.pending[0])
        await script.reaches("web", STARTING)
        await script.crash("web")
        assert script.clock.pending == [4.0]
        script.supervisor.reload("web", ("server.py",))
        again = await script.reaches("web", STARTING)
        assert again.pid == 105, "started at once, not after the backoff"
        await script.crash("web")
        assert script.lines[-1] == "devstack | web: exited with code 1; restarting in 0.5s"

    play(history, service("web"))


def test_a_reload_starts_a_service_that_failed_in_a_crash_loop() -> None:
    async def history(script: Script) -> None:
        for _ in range(4):
            await script.reaches("web", STARTING)
            script.process("web").say("ModuleNotFoundError: No module named 'flask'")
            await script.crash("web")
            script.clock.advance(script.clock.pending[0])
        await script.reaches("web", STARTING)
        await script.crash("web")
        assert script.state("web") is FAILED
        script.supervisor.reload("web", ("requirements.txt",))
        await script.reaches("web", STARTING)
        script.clock.advance(0.05)
        ready = await script.answer("web")
        assert (ready.pid, ready.reason) == (107, None)
        assert script.lines[-3:] == [
            "devstack | web: reloading (requirements.txt changed)",
            "devstack | web: starting (pid 107): serve web",
            "devstack | web: reloaded in 50 ms",
        ]

    # `db` keeps the stack running once web failed.
    play(history, service("web"), service("db"))


@pytest.mark.parametrize(
    ("policy", "returncode", "ended"),
    [(RestartPolicy.NEVER, 1, CRASHED), (RestartPolicy.ON_FAILURE, 0, DONE)],
)
def test_a_reload_starts_a_crashed_or_done_service_again(
    policy: RestartPolicy, returncode: int, ended: ServiceState
) -> None:
    async def history(script: Script) -> None:
        await script.reaches("job", STARTING)
        await script.crash("job", returncode)
        assert script.state("job") is ended
        script.supervisor.reload("job", ("job.py",))
        again = await script.reaches("job", STARTING)
        assert again.pid == script.process("job").pid
        assert len(script.starter.processes("job")) == 2

    play(history, service("job", restart=policy), service("db"))


def test_a_reload_does_not_revive_a_service_the_user_stopped() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        script.supervisor.post(StopRequested("web"))
        await script.reaches("web", STOPPED)
        printed = list(script.lines)
        script.supervisor.reload("web", ("server.py",))
        await settle()
        assert script.state("web") is STOPPED
        assert len(script.starter.started) == 2
        assert script.lines == printed

    play(history, service("web"), service("db"))


def test_reloads_while_the_old_process_stops_start_one_new_process() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        script.supervisor.reload("web", ("a.py",))
        await script.reaches("web", RESTARTING)
        script.supervisor.reload("web", ("b.py",))
        script.supervisor.reload("web", ("c.py",))
        await settle()
        assert script.process("web").stops == [False]
        script.process("web").exit(-signal.SIGTERM)
        await script.reaches("web", STARTING)
        await settle()
        assert len(script.starter.started) == 2, "one new process for the three reloads"

    play(history, service("web"), exits_on_stop=False)


def test_a_reload_while_the_new_process_starts_restarts_it_once_more() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        script.supervisor.reload("web", ("a.py",))
        await script.reaches("web", STARTING)
        assert script.process("web").pid == 102
        script.clock.advance(0.1)
        script.supervisor.reload("web", ("b.py",))
        await until(lambda: script.process("web").pid == 103, "a third process")
        await settle()
        assert len(script.starter.started) == 3
        assert script.starter.processes("web")[1].stops == [False]
        script.clock.advance(0.2)
        await script.answer("web")
        assert script.lines[-1] == "devstack | web: reloaded in 300 ms", "since the first edit"

    play(history, service("web"))


def test_a_reload_of_a_service_waiting_for_its_dependencies_does_nothing() -> None:
    async def history(script: Script) -> None:
        await script.reaches("db", STARTING)
        script.supervisor.reload("web", ("server.py",))
        await settle()
        assert script.state("web") is PENDING
        assert not any("web" in line for line in script.lines)
        await script.answer("db")
        assert (await script.reaches("web", STARTING)).pid == 102

    play(history, service("web", "db"), service("db"))


def test_dependents_are_not_restarted_by_a_reload() -> None:
    async def history(script: Script) -> None:
        await script.reaches("db", STARTING)
        await script.answer("db")
        await script.reaches("web", STARTING)
        web = await script.answer("web")
        script.supervisor.reload("db", ("schema.sql",))
        await script.reaches("db", RESTARTING)
        assert script.status("web") == web
        await script.reaches("db", STARTING)
        await script.answer("db")
        assert script.status("web") == web

    play(history, service("web", "db"), service("db"))


def test_a_stop_during_a_reload_wins_and_the_shutdown_finishes() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        script.supervisor.reload("web", ("server.py",))
        await script.reaches("web", RESTARTING)
        script.supervisor.request_shutdown()
        await script.reaches("web", STOPPING)
        waiting = asyncio.ensure_future(script.supervisor.wait_ready("web", 30))
        await settle()
        assert not waiting.done(), "a service stopping for good is waited for until it stopped"
        script.process("web").exit(-signal.SIGTERM)
        assert (await waiting).state is STOPPED
        assert script.running is not None
        await until(script.running.done, "the shutdown to finish")
        assert len(script.starter.started) == 1

    play(history, service("web"), exits_on_stop=False)


def test_a_reload_during_the_shutdown_is_ignored() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        script.supervisor.request_shutdown()
        await script.reaches("web", STOPPING)
        script.supervisor.reload("web", ("server.py",))
        await settle()
        assert script.state("web") is STOPPING
        script.process("web").exit(-signal.SIGTERM)
        await script.reaches("web", STOPPED)
        assert len(script.starter.started) == 1

    play(history, service("web"), exits_on_stop=False)


# --- reloads (reload: blue-green) ------------------------------------------------------------


TRACEBACK = (
    "Traceback (most recent call last):",
    '  File "server.py", line 3',
    "",
    "SyntaxError: invalid syntax",
)


def blue_green(name: str = "web", **options: object) -> ServiceSpec:
    return service(name, reload=ReloadMode.BLUE_GREEN, **options)  # type: ignore[arg-type]


async def ready_then_reload(script: Script, name: str = "web") -> tuple[FakeProcess, FakeProcess]:
    """``name`` ready, then reloaded: its old process and the new one (starting)."""
    await script.reaches(name, STARTING)
    await script.answer(name)
    old = script.process(name)
    script.supervisor.reload(name, ("server.py",))
    await until(lambda: script.process(name) is not old, f"a new process of {name}")
    return old, script.process(name)


def test_blue_green_serves_the_old_version_until_the_new_one_is_ready_then_drains_it() -> None:
    async def history(script: Script) -> None:
        old, new = await ready_then_reload(script)
        assert new.port == FIRST_PICKED_PORT
        assert script.avoided[-1] >= {FIRST_PORT, FIRST_PORT + 1}, "not a port of any service"
        serving = script.status("web")
        assert (serving.state, serving.port, serving.pid) == (READY, FIRST_PORT, old.pid)
        assert (await script.supervisor.wait_ready("web", 30)).pid == old.pid, "no waiting"
        assert old.stops == []
        script.clock.advance(0.2)
        switched = await script.answer("web")
        assert (switched.port, switched.pid, switched.reason) == (FIRST_PICKED_PORT, new.pid, None)
        assert old.stops == [False], "the old version is drained once the new one serves"
        assert script.lines[-3:] == [
            "devstack | web: reloading (server.py changed)",
            f"devstack | web: starting the new version on port {FIRST_PICKED_PORT} (pid 103): "
            "serve web",
            f"devstack | web: reloaded in 200 ms on port {FIRST_PICKED_PORT}",
        ]
        old.exit(-signal.SIGTERM)
        await settle()
        assert script.status("web") == switched, "the drained version's exit changes nothing"
        script.supervisor.reload("web", ("server.py",))
        await until(lambda: script.process("web").port == FIRST_PICKED_PORT + 1, "a fresh port")
        assert FIRST_PICKED_PORT in script.avoided[-1]

    play(history, blue_green(), service("db"), exits_on_stop=False)


def test_blue_green_keeps_the_old_version_when_the_new_one_exits() -> None:
    async def history(script: Script) -> None:
        old, new = await ready_then_reload(script)
        old.say("old version serving")
        new.say(*TRACEBACK)
        new.exit(1)
        reason = "reload failed: the new version exited with code 1"
        await until(lambda: script.status("web").reason is not None, "the failure in the status")
        failed = script.status("web")
        assert failed == ServiceStatus(
            name="web",
            state=READY,
            port=FIRST_PORT,
            pid=old.pid,
            reason=reason,
            last_lines=TRACEBACK,
        )
        assert failed.has_failed_reload
        assert script.lines[-1] == (
            f'devstack | web: {reason} (last output: Traceback (most recent call last): / File '
            f'"server.py", line 3 / SyntaxError: invalid syntax); the previous version keeps '
            f"serving on port {FIRST_PORT}"
        )
        assert old.stops == []
        old.say("still serving")
        assert script.status("web").last_lines[-1] == "SyntaxError: invalid syntax"
        # The next edit (the fix) switches to the new version and clears the failure.
        script.supervisor.reload("web", ("server.py",))
        await until(lambda: len(script.starter.processes("web")) == 3, "a third process")
        fixed = await script.answer("web")
        assert (fixed.reason, fixed.port, fixed.has_failed_reload) == (
            None, FIRST_PICKED_PORT + 1, False)  # fmt: skip

    play(history, blue_green(), exits_on_stop=False)


def test_blue_green_keeps_the_old_version_when_the_new_one_is_not_ready_in_time() -> None:
    async def history(script: Script) -> None:
        old, new = await ready_then_reload(script)
        script.clock.advance(10)
        await until(lambda: script.status("web").reason is not None, "the failure in the status")
        assert new.stops == [False]
        status = script.status("web")
        assert (status.state, status.pid, status.port) == (READY, old.pid, FIRST_PORT)
        assert status.reason == (
            f"reload failed: the new version not ready after 10s (nothing accepts connections "
            f"on port {FIRST_PICKED_PORT})"
        )
        new.exit(-signal.SIGTERM)
        await settle()
        assert script.status("web") == status

    play(history, blue_green(health=HealthSpec(timeout_seconds=10)), exits_on_stop=False)


def test_a_blue_green_reload_while_the_new_version_starts_starts_it_once_more() -> None:
    async def history(script: Script) -> None:
        _, first = await ready_then_reload(script)
        script.supervisor.reload("web", ("server.py",))
        await until(lambda: script.process("web") is not first, "a third process")
        second = script.process("web")
        assert (first.stops, second.port) == ([False], FIRST_PICKED_PORT + 1)
        first.exit(-signal.SIGTERM)
        await settle()
        assert script.status("web").reason is None, "a superseded new version is no failure"
        switched = await script.answer("web")
        assert (switched.pid, switched.port) == (second.pid, second.port)
        assert len(script.starter.started) == 3

    play(history, blue_green(), exits_on_stop=False)


def test_when_the_old_version_exits_during_a_blue_green_reload_requests_wait_for_the_new() -> None:
    async def history(script: Script) -> None:
        old, new = await ready_then_reload(script)
        old.exit(1)
        starting = await script.reaches("web", STARTING)
        assert (starting.pid, starting.port) == (new.pid, new.port)
        assert script.lines[-1] == (
            "devstack | web: the previous version exited with code 1 while the new one starts; "
            "waiting for the new one"
        )
        ready = await script.answer("web")
        assert ready.pid == new.pid

    play(history, blue_green())


def test_a_blue_green_service_that_is_not_serving_reloads_by_restarting() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        first = script.process("web")
        script.supervisor.reload("web", ("server.py",))
        await until(lambda: script.process("web") is not first, "a new process")
        assert first.stops == [False]
        assert script.process("web").port == FIRST_PORT
        assert script.avoided == []

    play(history, blue_green())


def test_the_shutdown_stops_both_versions_of_a_blue_green_reload() -> None:
    async def history(script: Script) -> None:
        old, new = await ready_then_reload(script)
        script.supervisor.request_shutdown()
        await script.reaches("web", STOPPING)
        assert (old.stops, new.stops) == ([False], [False])
        old.exit(-signal.SIGTERM)
        await script.reaches("web", STOPPED)
        assert script.running is not None
        await settle()
        assert not script.running.done(), "the shutdown waits for the new version to stop too"
        new.exit(-signal.SIGTERM)
        await until(script.running.done, "the shutdown to finish")

    play(history, blue_green(), exits_on_stop=False)


def test_a_service_the_user_stopped_stays_stopped_until_started_and_the_stack_stays_up() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        await script.answer("web")
        first = script.process("web")
        script.supervisor.stop("web")
        stopped = await script.reaches("web", STOPPED)
        assert first.stops == [False] and stopped.pid is None
        await settle()  # its only service stopped by the user: the stack waits for a start
        assert script.running is not None and not script.running.done()
        script.supervisor.start("web")
        await script.reaches("web", STARTING)
        assert script.process("web") is not first
        await script.answer("web")
        script.supervisor.start("web")  # already running: nothing happens
        await settle()
        assert len(script.starter.processes("web")) == 2

    play(history, service("web"))


def test_a_start_while_a_stop_is_under_way_starts_it_once_the_old_process_exited() -> None:
    async def history(script: Script) -> None:
        await script.reaches("web", STARTING)
        old = script.process("web")
        script.supervisor.stop("web")
        await script.reaches("web", STOPPING)
        script.supervisor.start("web")
        await settle()
        assert len(script.starter.processes("web")) == 1, "started before the old one exited"
        old.exit(-signal.SIGTERM)
        await script.reaches("web", STARTING)
        assert script.process("web") is not old

    play(history, service("web"), exits_on_stop=False)


def test_a_start_of_a_crashed_service_starts_it_at_once() -> None:
    async def history(script: Script) -> None:
        await script.reaches("job", STARTING)
        await script.crash("job")
        await script.reaches("job", CRASHED)
        script.supervisor.start("job")
        again = await script.reaches("job", STARTING)
        assert again.pid == 103

    play(history, service("job", restart=RestartPolicy.NEVER), service("db"))
