"""The state machine of every service: ordered start, readiness, restarts with backoff, stop.

One queue of typed, past-tense events (process exited, became ready, backoff elapsed,
and the requests a user or a control socket makes) and one handler, :meth:`Supervisor._handle`,
the only place a service's state moves. Everything slow (watching a process, probing, stopping,
waiting out a backoff) runs in tasks that post events back. The world comes in through seams:
processes from a :class:`~devstack.run.starter.ProcessStarter`, readiness from a
:class:`~devstack.run.readiness.Readiness`, time from a :class:`~devstack.run.events.Clock`; tests
pass fakes of all three and feed scripted histories through the same queue.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from devstack.errors import ServiceStartError
from devstack.manifest.spec import RestartPolicy, ServiceSpec, StackSpec
from devstack.run.events import (
    BackoffElapsed,
    Clock,
    Event,
    MonotonicClock,
    ProcessExited,
    ReadinessOverdue,
    RestartRequested,
    ServiceBecameReady,
    ShutdownFinished,
    ShutdownRequested,
    StopRequested,
)
from devstack.run.output import Printer
from devstack.run.readiness import Prober, Readiness
from devstack.run.restart import Backoff
from devstack.run.starter import ProcessStarter, StartedProcess
from devstack.status import ServiceState, ServiceStatus

logger = logging.getLogger(__name__)

LAST_LINES = 20
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
SETTLED = (ServiceState.READY, ServiceState.DONE)
FINAL = (ServiceState.STOPPED, ServiceState.DONE, ServiceState.CRASHED, ServiceState.FAILED)


@dataclass
class _Service:
    """The supervisor's private, mutable record of one service."""

    spec: ServiceSpec
    port: int
    backoff: Backoff = field(default_factory=Backoff)
    state: ServiceState = ServiceState.PENDING
    process: StartedProcess | None = None
    exit_code: int | None = None
    reason: str | None = None
    restarts: int = 0
    attempt: int = 0
    started_at: float = 0.0
    """The clock's time at the latest start: how long a run lasted decides the backoff."""
    after_exit: ServiceState | None = None
    """What a requested stop leads to: STOPPED, or PENDING to start again (a restart)."""
    last_lines: collections.deque[bytes] = field(
        default_factory=lambda: collections.deque(maxlen=LAST_LINES)
    )
    snapshot: ServiceStatus | None = None
    """The last status handed out, until something about the service changes: the proxy asks
    for it on every request."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def stop_order(spec: StackSpec) -> list[list[str]]:
    """Waves of services to stop together: dependents before what they depend on."""
    remaining = dict(spec.services)
    waves: list[list[str]] = []
    while remaining:
        needed = {dep for s in remaining.values() for dep in s.depends_on}
        wave = [name for name in remaining if name not in needed] or list(remaining)
        waves.append(wave)
        for name in wave:
            del remaining[name]
    return waves


class Supervisor:
    """Runs every service of a stack; implements :class:`devstack.status.ServiceDirectory`."""

    def __init__(
        self,
        spec: StackSpec,
        ports: Mapping[str, int],
        printer: Printer,
        *,
        starter: ProcessStarter,
        readiness: Readiness | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``ports``: the port every service got. ``readiness`` defaults to the real probes,
        ``clock`` to the monotonic one."""
        self.spec = spec
        self._printer = printer
        self._starter = starter
        self._readiness = readiness or Prober()
        self._clock = clock or MonotonicClock()
        self._services = {
            name: _Service(spec=s, port=ports[name]) for name, s in spec.services.items()
        }
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutting_down = False
        self._finished = False
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolves once every service is ready (or done); fails with ServiceStartError when one
        cannot start during start-up."""

    # --- the directory the proxy and the CLI read --------------------------------------------

    def status(self, name: str) -> ServiceStatus:
        s = self._services[name]
        if s.snapshot is None:
            s.snapshot = self._snapshot(s)
        return s.snapshot

    def _snapshot(self, s: _Service) -> ServiceStatus:
        name = s.spec.name
        return ServiceStatus(
            name=name,
            state=s.state,
            port=s.port,
            wanted_port=s.spec.port,
            pid=s.pid if s.state.is_running or s.state is ServiceState.STOPPING else None,
            exit_code=s.exit_code,
            restarts=s.restarts,
            reason=s.reason,
            last_lines=tuple(line.decode("utf-8", "replace") for line in s.last_lines),
        )

    def statuses(self) -> list[ServiceStatus]:
        return [self.status(name) for name in self._services]

    async def wait_ready(self, name: str, timeout: float) -> ServiceStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.status(name)
            remaining = deadline - loop.time()
            if status.is_ready or not status.state.is_coming or remaining <= 0:
                return status
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return self.status(name)

    async def changed(self) -> None:
        await self._changed.wait()

    # --- requests ----------------------------------------------------------------------------

    def post(self, event: Event) -> None:
        self._events.put_nowait(event)

    def request_shutdown(self, *, force: bool = False) -> None:
        self.post(ShutdownRequested(force=force))

    def restart(self, name: str) -> None:
        self.post(RestartRequested(name))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the stack and handle events until a requested shutdown has stopped everything."""
        self._follow_up()
        self._publish()
        while not self._finished:
            event = await self._events.get()
            self._handle(event)
            self._publish()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._readiness.close()

    def _publish(self) -> None:
        """States may have moved: drop cached snapshots and wake whoever waits for a change."""
        for s in self._services.values():
            s.snapshot = None
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _handle(self, event: Event) -> None:
        match event:
            case ServiceBecameReady(name, pid, elapsed):
                self._on_ready(self._services[name], pid, elapsed)
            case ReadinessOverdue(name, pid):
                self._on_overdue(self._services[name], pid)
            case ProcessExited(name, pid, returncode):
                self._on_exited(self._services[name], pid, returncode)
            case BackoffElapsed(name, attempt):
                s = self._services[name]
                if s.state is ServiceState.BACKOFF and s.attempt == attempt:
                    self._launch(s)
            case RestartRequested(name):
                self._on_restart_requested(self._services[name])
            case StopRequested(name):
                self._stop(self._services[name], then=ServiceState.STOPPED)
            case ShutdownRequested(force):
                self._on_shutdown(force)
            case ShutdownFinished():
                self._finished = True
        self._follow_up()

    def _follow_up(self) -> None:
        """What follows from any change: start what may start now, stop when nothing is left to
        run, settle :attr:`started`."""
        if not self._shutting_down:
            self._start_eligible()
            if all(s.state in FINAL for s in self._services.values()):
                self._printer.system("every service has ended; nothing left to run")
                self._on_shutdown(force=False)
        self._check_started()

    # --- transitions -------------------------------------------------------------------------

    def _start_eligible(self) -> None:
        for s in self._services.values():
            if s.state is ServiceState.PENDING and all(
                self._services[dep].state in SETTLED for dep in s.spec.depends_on
            ):
                self._launch(s)

    def _launch(self, s: _Service) -> None:
        s.state = ServiceState.STARTING
        s.reason = None
        s.exit_code = None
        s.attempt += 1
        s.after_exit = None
        s.started_at = self._clock.now()
        name = s.spec.name
        try:
            s.process = self._starter.start(s.spec, functools.partial(self._on_output, s))
        except ServiceStartError as exc:
            s.process = None
            self._fail(s, str(exc))
            return
        # Said at once, before the loop turns: the service's first lines must come after it.
        self._printer.system(
            f"{name}: starting (pid {s.process.pid}): {s.spec.command}", service=name
        )
        self._spawn(self._watch(s, s.process))

    async def _watch(self, s: _Service, process: StartedProcess) -> None:
        """Probe the process's readiness while it runs; post its exit once its group is gone."""
        probing = self._spawn(self._probe(s, process))
        returncode = await process.wait()
        probing.cancel()
        await process.stop()  # whatever it left behind in its group goes too
        self.post(ProcessExited(s.spec.name, process.pid, returncode))

    async def _probe(self, s: _Service, process: StartedProcess) -> None:
        health = s.spec.health
        if health.enabled:  # else: ready once started
            overdue = self._spawn(self._warn_overdue(s, process.pid, health.timeout_seconds))
            try:
                await self._readiness.wait(health, s.port)
            finally:
                overdue.cancel()
        elapsed = self._clock.now() - process.started_at
        self.post(ServiceBecameReady(s.spec.name, process.pid, elapsed))

    async def _warn_overdue(self, s: _Service, pid: int, timeout: float) -> None:
        await self._clock.sleep(timeout)
        self.post(ReadinessOverdue(s.spec.name, pid))

    def _on_output(self, s: _Service, lines: list[bytes]) -> None:
        self._printer.lines(s.spec.name, lines)
        s.last_lines.extend(lines[-LAST_LINES:])
        s.snapshot = None

    def _on_ready(self, s: _Service, pid: int, elapsed: float) -> None:
        if s.pid != pid or s.state is not ServiceState.STARTING:
            return
        s.state = ServiceState.READY
        what = "ready" if s.spec.health.enabled else "started"
        self._printer.system(
            f"{s.spec.name}: {what} in {elapsed * 1000:.0f} ms on port {s.port}",
            service=s.spec.name,
        )

    def _on_overdue(self, s: _Service, pid: int) -> None:
        if s.pid != pid or s.state is not ServiceState.STARTING:
            return
        health = s.spec.health
        probe = (
            f"GET {health.path} did not answer 2xx/3xx"
            if health.path
            else (f"nothing accepts connections on port {s.port}")
        )
        self._printer.system(
            f"{s.spec.name}: not ready after {health.timeout_seconds:g}s ({probe}); still waiting. "
            "A service that does not listen can say `health: false`",
            error=True,
            service=s.spec.name,
        )

    def _on_exited(self, s: _Service, pid: int, returncode: int) -> None:
        if s.pid != pid:
            return
        s.exit_code = returncode
        name = s.spec.name
        if s.after_exit is not None:
            s.state = s.after_exit
            s.after_exit = None
            if s.state is ServiceState.STOPPED:
                self._printer.system(f"{name}: stopped", service=name)
            return
        if self._shutting_down:
            s.state = ServiceState.STOPPED
            return
        self._on_unexpected_exit(s, returncode)

    def _on_unexpected_exit(self, s: _Service, returncode: int) -> None:
        name, policy = s.spec.name, s.spec.restart
        how = describe_exit(returncode)
        if returncode == 0 and policy is not RestartPolicy.ALWAYS:
            s.state = ServiceState.DONE
            s.reason = how
            self._printer.system(f"{name}: {how}; done", service=name)
            return
        if returncode in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE):
            what = "command not found" if returncode == EXIT_NOT_FOUND else "command not executable"
            self._fail(s, f"{name}: {what} (exit {returncode}): {s.spec.command}")
            return
        if policy is RestartPolicy.NEVER:
            s.state = ServiceState.CRASHED
            s.reason = how
            self._printer.system(
                f"{name}: {how}; not restarting (restart: never)", error=True, service=name
            )
            return
        delay = s.backoff.next_delay(now=self._clock.now(), started_at=s.started_at)
        if delay is None:
            self._fail(s, f"{name}: {how}; crashed {s.backoff.failures} times in a row, giving up")
            return
        s.state = ServiceState.BACKOFF
        s.reason = how
        s.restarts += 1
        self._printer.system(f"{name}: {how}; restarting in {delay:g}s", error=True, service=name)
        self._spawn(self._wait_backoff(s, delay, s.attempt))

    async def _wait_backoff(self, s: _Service, delay: float, attempt: int) -> None:
        await self._clock.sleep(delay)
        self.post(BackoffElapsed(s.spec.name, attempt))

    def _fail(self, s: _Service, reason: str) -> None:
        s.state = ServiceState.FAILED
        s.reason = reason
        self._printer.system(f"{reason}", error=True, service=s.spec.name)

    def _on_restart_requested(self, s: _Service) -> None:
        if self._shutting_down:
            return
        if s.state.is_running:
            self._stop(s, then=ServiceState.PENDING)
        elif s.state in FINAL or s.state is ServiceState.BACKOFF:
            s.backoff.reset()
            s.state = ServiceState.PENDING

    def _stop(self, s: _Service, *, then: ServiceState) -> None:
        if s.state in (ServiceState.PENDING, ServiceState.BACKOFF):
            s.state = ServiceState.STOPPED
            return
        process = s.process
        if process is None or not (s.state.is_running or s.state is ServiceState.STOPPING):
            return
        if s.state is not ServiceState.STOPPING:
            s.state = ServiceState.STOPPING
            s.after_exit = then
        self._spawn(process.stop())  # its exit arrives as ProcessExited

    def _on_shutdown(self, force: bool) -> None:
        if force:
            for s in self._services.values():
                if s.process is not None and (
                    s.state.is_running or s.state is ServiceState.STOPPING
                ):
                    self._spawn(s.process.stop(force=True))
        if self._shutting_down:
            return
        self._shutting_down = True
        self._spawn(self._stop_all())

    async def _stop_all(self) -> None:
        for wave in stop_order(self.spec):
            for name in wave:
                self.post(StopRequested(name))  # states move only in _handle
            await asyncio.gather(*(self._settled(name) for name in wave))
        self.post(ShutdownFinished())

    async def _settled(self, name: str) -> None:
        while self._services[name].state not in FINAL:
            await self._changed.wait()

    def _check_started(self) -> None:
        if self.started.done():
            return
        states = [s.state for s in self._services.values()]
        if all(state in SETTLED for state in states):
            self.started.set_result(None)
            return
        for s in self._services.values():
            if s.state in (ServiceState.FAILED, ServiceState.CRASHED):
                self.started.set_exception(ServiceStartError(s.reason or f"{s.spec.name}: failed"))
                return
        if self._shutting_down:
            self.started.cancel()


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
