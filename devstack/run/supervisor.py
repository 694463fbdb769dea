"""The state machine of every service: ordered start, readiness, restarts with backoff, stop.

One queue of typed, past-tense events (process exited, became ready, backoff elapsed,
and the requests a user, the file watcher or a control socket makes) and one handler,
:meth:`Supervisor._handle`, the only place a service's state moves. Everything slow (watching a
process, probing, stopping, waiting out a backoff) runs in tasks that post events back. The
world comes in through seams: processes from a :class:`~devstack.run.starter.ProcessStarter`,
readiness from a :class:`~devstack.run.readiness.Readiness`, time from a
:class:`~devstack.run.events.Clock`; tests pass fakes of all three and feed scripted histories
through the same queue.

Reloads (:meth:`Supervisor.reload`, called by the file watcher) follow the service's
``reload`` mode. ``restart``: the old process stops (SIGTERM, its in-flight requests finish,
SIGKILL after ``stop_timeout_seconds``) while the service shows RESTARTING, so the proxy holds
new requests until the new process is ready. ``blue-green``: the new process starts on a fresh
port while the old one stays READY and serves; once the new one is ready the service's port
moves to it and the old one is drained; a new process that exits or is not ready within
``health.timeout_seconds`` is stopped, and the old one keeps serving with the failure in
``reason`` (see :attr:`devstack.status.ServiceStatus.reason`). An edit is not a crash: it
skips the backoff and forgets earlier failures; it starts a failed, crashed or done service
again (the edit is usually the fix) but never one the user stopped. Dependents are not
restarted: they keep talking to the service through its port (or the proxy).
The reload transitions live in :mod:`devstack.run.reloads` (mixed in).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from devstack.errors import ServiceStartError
from devstack.manifest.spec import RestartPolicy, StackSpec
from devstack.run.events import (
    BackoffElapsed,
    Clock,
    Event,
    MonotonicClock,
    ProcessExited,
    ReadinessOverdue,
    ReloadRequested,
    RestartRequested,
    ServiceBecameReady,
    ShutdownFinished,
    ShutdownRequested,
    StartRequested,
    StopRequested,
)
from devstack.run.lookout import Lookout
from devstack.run.output import Printer
from devstack.run.ports import pick_free_port
from devstack.run.readiness import Prober, Readiness
from devstack.run.record import (
    FINAL,
    LAST_LINES,
    SETTLED,
    Lines,
    ServiceRecord,
    stop_order,
)
from devstack.run.reloads import Reloads
from devstack.run.starter import ProcessStarter, StartedProcess
from devstack.run.wording import describe_exit
from devstack.status import ServiceState, ServiceStatus

logger = logging.getLogger(__name__)

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class Supervisor(Reloads):
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
        pick_port: Callable[[Collection[int]], int] = pick_free_port,
    ) -> None:
        """``ports``: the port every service got. ``readiness`` defaults to the real probes,
        ``clock`` to the monotonic one; ``pick_port`` gives a blue-green reload's new process a
        free port that is none of those it is given."""
        self.spec = spec
        self._printer = printer
        self._starter = starter
        self._readiness = readiness or Prober()
        self._clock = clock or MonotonicClock()
        self._pick_port = pick_port
        self._lookout = Lookout(self.post, self._spawn, self._readiness, self._clock)
        self._services = {
            name: ServiceRecord(spec=s, port=ports[name]) for name, s in spec.services.items()
        }
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retiring: dict[StartedProcess, asyncio.Task[Any]] = {}
        """Processes replaced while they ran (a blue-green switch, a superseded new version),
        being stopped; the shutdown waits for them."""
        self._shutting_down = False
        self._is_forced = False
        """A second Ctrl-C: everything still running is killed."""
        self._finished = False
        self._held: set[str] = set()
        """Services the user stopped: the stack stays up for them to be started again."""
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolves once every service is ready (or done); fails with ServiceStartError when one
        cannot start during start-up."""

    # --- the directory the proxy and the CLI read --------------------------------------------

    def status(self, name: str) -> ServiceStatus:
        return self._services[name].status()

    def statuses(self) -> list[ServiceStatus]:
        return [self.status(name) for name in self._services]

    async def wait_ready(self, name: str, timeout: float) -> ServiceStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.status(name)
            remaining = deadline - loop.time()
            if status.is_ready or status.state in FINAL or remaining <= 0:
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

    def stop(self, name: str) -> None:
        """The user stops ``name``: it stays stopped (no restart, no reload) until started."""
        self.post(StopRequested(name))

    def start(self, name: str) -> None:
        """Start ``name`` again if it is stopped or has ended; a running one is left alone."""
        self.post(StartRequested(name))

    def reload(self, name: str, files: tuple[str, ...]) -> None:
        """Files service ``name`` watches changed (``files``, for the message): reload it as
        its ``reload`` mode says. Safe to call at any time; reloads in quick succession
        coalesce."""
        self.post(ReloadRequested(name, files))

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
            case StartRequested(name):
                self._on_start_requested(self._services[name])
            case ReloadRequested(name, files):
                self._on_reload_requested(self._services[name], files)
            case StopRequested(name):
                self._on_stop_requested(self._services[name])
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
            if not self._held and all(s.state in FINAL for s in self._services.values()):
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

    def _launch(self, s: ServiceRecord) -> None:
        s.state = ServiceState.STARTING
        s.reason = None
        s.failed_lines = ()
        s.exit_code = None
        s.attempt += 1
        s.after_exit = None
        s.started_at = self._clock.now()
        name = s.spec.name
        try:
            s.process = self._start(s, s.port, s.last_lines)
        except ServiceStartError as exc:
            s.process = None
            self._fail(s, str(exc))
            return
        # Said at once, before the loop turns: the service's first lines must come after it.
        self._printer.system(
            f"{name}: starting (pid {s.process.pid}): {s.spec.command}", service=name
        )
        self._lookout.watch(s.spec, s.process, s.port)

    def _start(self, s: ServiceRecord, port: int, lines: Lines) -> StartedProcess:
        return self._starter.start(s.spec, port, functools.partial(self._on_output, s, lines))

    def _on_output(self, s: ServiceRecord, last_lines: Lines, lines: list[bytes]) -> None:
        self._printer.lines(s.spec.name, lines)
        last_lines.extend(lines[-LAST_LINES:])
        s.snapshot = None

    def _on_ready(self, s: ServiceRecord, pid: int, elapsed: float) -> None:
        if s.candidate is not None and s.candidate.pid == pid:
            self._switch(s)
            return
        if s.pid != pid or s.state is not ServiceState.STARTING:
            return
        s.state = ServiceState.READY
        name = s.spec.name
        if s.reload_started is not None:
            took = self._clock.now() - s.reload_started
            s.reload_started = None
            self._printer.system(f"{name}: reloaded in {took * 1000:.0f} ms", service=name)
            return
        what = "ready" if s.spec.health.enabled else "started"
        self._printer.system(
            f"{name}: {what} in {elapsed * 1000:.0f} ms on port {s.port}", service=name
        )

    def _on_overdue(self, s: ServiceRecord, pid: int) -> None:
        health = s.spec.health
        probe = (
            f"GET {health.path} did not answer 2xx/3xx"
            if health.path
            else (f"nothing accepts connections on port {s.port}")
        )
        if s.candidate is not None and s.candidate.pid == pid:
            probe = probe.replace(f"port {s.port}", f"port {s.candidate_port}")
            self._reload_failed(s, f"not ready after {health.timeout_seconds:g}s ({probe})")
            return
        if s.pid != pid or s.state is not ServiceState.STARTING:
            return
        self._printer.system(
            f"{s.spec.name}: not ready after {health.timeout_seconds:g}s ({probe}); still waiting. "
            "A service that does not listen can say `health: false`",
            error=True,
            service=s.spec.name,
        )

    def _on_exited(self, s: ServiceRecord, pid: int, returncode: int) -> None:
        if s.candidate is not None and s.candidate.pid == pid:
            self._reload_failed(s, describe_exit(returncode))
            return
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
        if s.candidate is not None:
            self._promote(s, returncode)
            return
        self._on_unexpected_exit(s, returncode)
        if s.state in FINAL:
            s.reload_started = None

    def _on_unexpected_exit(self, s: ServiceRecord, returncode: int) -> None:
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
        self._lookout.wait_backoff(name, delay, s.attempt)

    def _fail(self, s: ServiceRecord, reason: str) -> None:
        s.state = ServiceState.FAILED
        s.reason = reason
        self._printer.system(f"{reason}", error=True, service=s.spec.name)

    def _on_stop_requested(self, s: ServiceRecord) -> None:
        if not self._shutting_down:
            self._held.add(s.spec.name)  # the user's stop: keep the stack up
        self._stop(s, then=ServiceState.STOPPED)

    def _on_restart_requested(self, s: ServiceRecord) -> None:
        if self._shutting_down:
            return
        self._held.discard(s.spec.name)
        if s.state.is_running:
            self._stop(s, then=ServiceState.PENDING)
        elif s.state in FINAL or s.state is ServiceState.BACKOFF:
            s.backoff.reset()
            s.state = ServiceState.PENDING

    def _on_start_requested(self, s: ServiceRecord) -> None:
        if self._shutting_down:
            return
        self._held.discard(s.spec.name)
        if s.state is ServiceState.STOPPING:
            s.after_exit = ServiceState.PENDING  # once the old process is gone
        elif s.state in FINAL or s.state is ServiceState.BACKOFF:
            s.backoff.reset()
            s.state = ServiceState.PENDING

    # --- stopping ----------------------------------------------------------------------------

    def _stop(self, s: ServiceRecord, *, then: ServiceState) -> None:
        """Stop the service's process; once it exited the service is ``then`` (STOPPED, or
        PENDING to start again). A stop for good overrides a restart under way."""
        self._retire_candidate(s)
        if s.state in (ServiceState.PENDING, ServiceState.BACKOFF):
            s.state = ServiceState.STOPPED
            return
        process = s.process
        if process is None or not (s.state.is_running or s.state.is_stopping):
            return
        was_running = s.state.is_running
        if then is ServiceState.STOPPED:
            s.state, s.after_exit = ServiceState.STOPPING, then
        elif was_running:
            s.state, s.after_exit = ServiceState.RESTARTING, then
        if was_running:
            self._spawn(process.stop())  # its exit arrives as ProcessExited

    def _on_shutdown(self, force: bool) -> None:
        if force:
            self._is_forced = True
            for s in self._services.values():
                if s.process is not None and (s.state.is_running or s.state.is_stopping):
                    self._spawn(s.process.stop(force=True))
            for process in list(self._retiring):
                self._spawn(process.stop(force=True))
        if self._shutting_down:
            return
        self._shutting_down = True
        self._spawn(self._stop_all())

    async def _stop_all(self) -> None:
        for wave in stop_order(self.spec):
            for name in wave:
                self.post(StopRequested(name))  # states move only in _handle
            await asyncio.gather(*(self._settled(name) for name in wave))
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
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
