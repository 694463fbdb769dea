"""The state machine of every service: ordered start, readiness, restarts with backoff, stop.

One queue of typed, past-tense events (process exited, became ready, backoff elapsed,
and the requests a user or a control socket makes) and one handler, :meth:`Supervisor._handle`,
the only place a service's state moves. Everything slow (spawning, probing, stopping, waiting out
a backoff) runs in tasks that post events back. Tests feed scripted histories through the same
queue and drive time through the :class:`Clock` seam.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from devstack.errors import ServiceStartError
from devstack.manifest.env import service_environment
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
    StartFailed,
    StartRequested,
    StopRequested,
)
from devstack.run.guardian import Guardian
from devstack.run.output import Printer
from devstack.run.process import ServiceProcess
from devstack.run.readiness import ListenWatcher, wait_until_ready
from devstack.run.restart import Backoff
from devstack.run.spawn import Spawned
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
    backoff: Backoff
    state: ServiceState = ServiceState.PENDING
    process: ServiceProcess | None = None
    exit_code: int | None = None
    reason: str | None = None
    restarts: int = 0
    attempt: int = 0
    started_at: float = 0.0
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
        guardian: Guardian | None = None,
        clock: Clock | None = None,
        base_env: Mapping[str, str] | None = None,
        backoff_factory: Callable[[], Backoff] = Backoff,
        spawned: dict[str, Spawned | ServiceStartError] | None = None,
    ) -> None:
        """``spawned``: processes started before the loop ran (see :mod:`devstack.launch`),
        adopted on their service's first start and removed from the dict then."""
        self.spec = spec
        self._ports = dict(ports)
        self._printer = printer
        self._guardian = guardian
        self._clock = clock or MonotonicClock()
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._services = {
            name: _Service(spec=s, port=self._ports[name], backoff=backoff_factory())
            for name, s in spec.services.items()
        }
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutting_down = False
        self._finished = False
        self._listen_watcher = ListenWatcher()
        self._spawned = spawned if spawned is not None else {}
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
        self._start_eligible()
        self._publish()
        while not self._finished:
            event = await self._events.get()
            self._handle(event)
            self._publish()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._listen_watcher.close()

    def _publish(self) -> None:
        """States may have moved: drop cached snapshots and wake whoever waits for a change."""
        for s in self._services.values():
            s.snapshot = None
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle(self, event: Event) -> None:  # noqa: C901 - one branch per event type, by design
        match event:
            case ServiceBecameReady(name, pid, elapsed):
                self._on_ready(self._services[name], pid, elapsed)
            case ReadinessOverdue(name, pid):
                self._on_overdue(self._services[name], pid)
            case ProcessExited(name, pid, returncode):
                self._on_exited(self._services[name], pid, returncode)
            case StartFailed(name, reason):
                self._on_start_failed(self._services[name], reason)
            case BackoffElapsed(name, attempt):
                s = self._services[name]
                if s.state is ServiceState.BACKOFF and s.attempt == attempt:
                    self._launch(s)
            case StartRequested(name) | RestartRequested(name):
                self._on_start_requested(
                    self._services[name], restart=isinstance(event, RestartRequested)
                )
            case StopRequested(name):
                self._stop(self._services[name], then=ServiceState.STOPPED)
            case ShutdownRequested(force):
                self._on_shutdown(force)
            case ShutdownFinished():
                self._finished = True
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
        early = self._spawned.pop(s.spec.name, None)
        # A process launched early already has its environment; build one only to spawn here.
        env = {} if early is not None else service_environment(s.spec, self._ports, self._base_env)
        s.process = ServiceProcess(
            s.spec.name,
            s.spec.command,
            cwd=s.spec.cwd,
            env=env,
            on_output=functools.partial(self._on_output, s),
            guardian=self._guardian,
            stop_timeout_seconds=s.spec.stop_timeout_seconds,
        )
        self._spawn(self._run_process(s, s.process, early))

    async def _run_process(
        self, s: _Service, process: ServiceProcess, early: Spawned | ServiceStartError | None
    ) -> None:
        name = s.spec.name
        try:
            if isinstance(early, ServiceStartError):
                raise early
            await process.start(early)
        except ServiceStartError as exc:
            self.post(StartFailed(name, str(exc)))
            return
        pid = process.pid
        assert pid is not None
        # Said at once, before the loop turns: the service's first lines must come after it.
        self._printer.system(f"{name}: starting (pid {pid}): {s.spec.command}", service=name)
        self._spawn(self._probe(s, process, pid))
        returncode = await process.wait()
        await process.stop()  # whatever it left behind in its group goes too
        self.post(ProcessExited(name, pid, returncode))

    async def _probe(self, s: _Service, process: ServiceProcess, pid: int) -> None:
        started = process.spawned_at
        probe = asyncio.ensure_future(
            wait_until_ready(
                s.spec.health,
                s.port,
                is_alive=lambda: process.returncode is None,
                watcher=self._listen_watcher,
            )
        )
        try:
            done, _ = await asyncio.wait({probe}, timeout=s.spec.health.timeout_seconds)
            if not done:
                self.post(ReadinessOverdue(s.spec.name, pid))
            if await probe:
                self.post(ServiceBecameReady(s.spec.name, pid, time.monotonic() - started))
        finally:
            probe.cancel()

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

    def _on_start_failed(self, s: _Service, reason: str) -> None:
        if s.after_exit is not None or self._shutting_down:  # stopped before it got going
            s.state = s.after_exit or ServiceState.STOPPED
            s.after_exit = None
            return
        self._fail(s, reason)

    def _fail(self, s: _Service, reason: str) -> None:
        s.state = ServiceState.FAILED
        s.reason = reason
        self._printer.system(f"{reason}", error=True, service=s.spec.name)

    def _on_start_requested(self, s: _Service, *, restart: bool) -> None:
        if s.state.is_running and restart:
            self._stop(s, then=ServiceState.PENDING)
        elif s.state in FINAL or s.state is ServiceState.BACKOFF:
            s.backoff.reset()
            s.state = ServiceState.PENDING

    def _stop(self, s: _Service, *, then: ServiceState, force: bool = False) -> None:
        if s.state in (ServiceState.PENDING, ServiceState.BACKOFF):
            s.state = ServiceState.STOPPED
            return
        process = s.process
        if process is None or not (s.state.is_running or s.state is ServiceState.STOPPING):
            return
        if s.state is not ServiceState.STOPPING:
            s.state = ServiceState.STOPPING
            s.after_exit = then
        self._spawn(process.stop(force=force))  # its exit arrives as ProcessExited

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
