"""The supervisor's private, mutable record of one service, and the groups of states its rules
name. Only :class:`devstack.run.supervisor.Supervisor` reads or writes a record; everyone else
sees :class:`devstack.status.ServiceStatus` snapshots.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from devstack.manifest.spec import ServiceSpec, StackSpec
from devstack.run.restart import Backoff
from devstack.run.starter import StartedProcess
from devstack.status import ServiceState, ServiceStatus

LAST_LINES = 20
"""Lines of output kept per process, for the status (error pages, the browser overlay)."""
SETTLED = (ServiceState.READY, ServiceState.DONE)
"""What a dependent waits for."""
FINAL = (ServiceState.STOPPED, ServiceState.DONE, ServiceState.CRASHED, ServiceState.FAILED)
"""States a service does not leave by itself."""
NOT_RELOADED = (ServiceState.PENDING, ServiceState.STOPPING, ServiceState.STOPPED)
"""States an edit leaves alone: not started yet (it will start with the new code), or stopped
(or stopping) by the user or the shutdown."""

Lines = collections.deque[bytes]


def new_lines() -> Lines:
    return collections.deque(maxlen=LAST_LINES)


@dataclass
class ServiceRecord:
    """What the supervisor knows of one service, beyond its spec."""

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
    last_lines: Lines = field(default_factory=new_lines)
    """The latest lines of the serving process (and of the ones before it, in restart mode)."""
    reload_started: float | None = None
    """The clock's time of the reload whose new process is not ready yet: its line says how
    long the reload took."""
    candidate: StartedProcess | None = None
    """Blue-green: the new process starting on :attr:`candidate_port` while the old one serves."""
    candidate_port: int = 0
    candidate_lines: Lines = field(default_factory=new_lines)
    failed_lines: tuple[bytes, ...] = ()
    """Blue-green: the last lines of the new version that failed, shown while the old one serves
    (with :attr:`reason` saying why)."""
    snapshot: ServiceStatus | None = None
    """The last status handed out, until something about the service changes: the proxy asks
    for it on every request."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def status(self) -> ServiceStatus:
        """The published snapshot of this record, made once until the service changes."""
        if self.snapshot is None:
            state = self.state
            lines = self.failed_lines if state is ServiceState.READY and self.failed_lines \
                else self.last_lines  # fmt: skip
            self.snapshot = ServiceStatus(
                name=self.spec.name,
                state=state,
                port=self.port,
                wanted_port=self.spec.port,
                pid=self.pid if state.is_running or state.is_stopping else None,
                exit_code=self.exit_code,
                restarts=self.restarts,
                reason=self.reason,
                last_lines=tuple(line.decode("utf-8", "replace") for line in lines),
            )
        return self.snapshot


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
