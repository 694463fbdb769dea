"""Reloads, the supervisor's part that follows edits: :class:`Reloads` is mixed into
:class:`devstack.run.supervisor.Supervisor`, whose event handler calls these methods (they move
state only from there).

``restart``: the old process stops (RESTARTING, so the proxy holds requests) and the new one
starts. ``blue-green``: the new version (the *candidate*) starts on a fresh port while the old
one serves; once ready it takes the service's port (:meth:`Reloads._switch`) and the old one is
retired; a candidate that exits or is not ready in time is retired and the old one keeps serving
(:meth:`Reloads._reload_failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from devstack.errors import ServiceStartError
from devstack.manifest.spec import ReloadMode, StackSpec
from devstack.run.events import Clock
from devstack.run.lookout import Lookout
from devstack.run.output import Printer
from devstack.run.record import NOT_RELOADED, Lines, ServiceRecord, new_lines
from devstack.run.starter import StartedProcess
from devstack.run.wording import describe_changes, describe_exit, describe_failed_reload
from devstack.status import ServiceState

logger = logging.getLogger(__name__)


class Reloads:
    """What :class:`~devstack.run.supervisor.Supervisor` provides to its reloads."""

    spec: StackSpec
    _services: dict[str, ServiceRecord]
    _printer: Printer
    _clock: Clock
    _lookout: Lookout
    _pick_port: Callable[[Collection[int]], int]
    _retiring: dict[StartedProcess, asyncio.Task[Any]]
    _shutting_down: bool
    _is_forced: bool

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    def _start(self, s: ServiceRecord, port: int, lines: Lines) -> StartedProcess:
        raise NotImplementedError

    def _stop(self, s: ServiceRecord, *, then: ServiceState) -> None:
        raise NotImplementedError

    def _on_reload_requested(self, s: ServiceRecord, files: tuple[str, ...]) -> None:
        name = s.spec.name
        if self._shutting_down or s.state in NOT_RELOADED:
            logger.debug("%s: %s; not reloading while %s", name, describe_changes(s.spec, files),
                         s.state)  # fmt: skip
            return
        self._printer.system(f"{name}: reloading ({describe_changes(s.spec, files)})", service=name)
        s.backoff.reset()  # an edit is not a crash
        if s.reload_started is None:
            s.reload_started = self._clock.now()
        if s.state is ServiceState.READY and s.spec.reload is ReloadMode.BLUE_GREEN:
            self._start_candidate(s)
        elif s.state.is_running:
            self._stop(s, then=ServiceState.PENDING)
        elif s.state is not ServiceState.RESTARTING:  # else its next process runs the new code
            s.state = ServiceState.PENDING  # backoff, failed, crashed, done: start it now

    def _start_candidate(self, s: ServiceRecord) -> None:
        """Blue-green: start the new version on a fresh port; the old one keeps serving."""
        self._retire_candidate(s)
        avoid = {other.port for other in self._services.values()}
        avoid.update(spec.port for spec in self.spec.services.values() if spec.port is not None)
        port = self._pick_port(avoid)
        lines = new_lines()
        name = s.spec.name
        try:
            process = self._start(s, port, lines)
        except ServiceStartError as exc:
            self._reload_failed(s, str(exc), lines)
            return
        s.candidate, s.candidate_port, s.candidate_lines = process, port, lines
        self._printer.system(
            f"{name}: starting the new version on port {port} (pid {process.pid}): "
            f"{s.spec.command}",
            service=name,
        )
        self._lookout.watch(s.spec, process, port)

    def _switch(self, s: ServiceRecord) -> None:
        """Blue-green: the new version is ready; it takes the service's port, the old one is
        drained."""
        assert s.candidate is not None
        old = s.process
        s.process, s.port, s.last_lines = s.candidate, s.candidate_port, s.candidate_lines
        s.candidate = None
        s.started_at = s.process.started_at
        s.reason, s.failed_lines = None, ()
        name = s.spec.name
        took = self._clock.now() - (s.reload_started or s.started_at)
        s.reload_started = None
        self._printer.system(
            f"{name}: reloaded in {took * 1000:.0f} ms on port {s.port}", service=name
        )
        if old is not None:
            self._retire(old)

    def _reload_failed(self, s: ServiceRecord, how: str, lines: Lines | None = None) -> None:
        """Blue-green: the new version did not start; stop it, keep the old one serving, and
        say so loudly, with its last lines."""
        lines = s.candidate_lines if lines is None else lines
        self._retire_candidate(s)
        s.reload_started = None
        s.failed_lines = tuple(lines)
        s.reason = f"reload failed: the new version {how.removeprefix(s.spec.name + ': ')}"
        self._printer.system(
            describe_failed_reload(s.spec.name, s.reason, lines, s.port),
            error=True,
            service=s.spec.name,
        )

    def _promote(self, s: ServiceRecord, returncode: int) -> None:
        """Blue-green: the old version exited while the new one starts; requests wait for the
        new one."""
        assert s.candidate is not None
        s.process, s.port, s.last_lines = s.candidate, s.candidate_port, s.candidate_lines
        s.candidate = None
        s.started_at = s.process.started_at
        s.state = ServiceState.STARTING
        self._printer.system(
            f"{s.spec.name}: the previous version {describe_exit(returncode)} while the new one "
            "starts; waiting for the new one",
            error=True,
            service=s.spec.name,
        )

    def _retire_candidate(self, s: ServiceRecord) -> None:
        if s.candidate is not None:
            self._retire(s.candidate)
            s.candidate = None

    def _retire(self, process: StartedProcess) -> None:
        """Stop a process that no longer is the service's (its exit is ignored): SIGTERM, so the
        requests it still answers finish, and SIGKILL after the stop timeout."""
        task = self._spawn(process.stop(force=self._is_forced))
        self._retiring[process] = task
        task.add_done_callback(lambda _: self._retiring.pop(process, None))
