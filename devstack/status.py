"""The running state of services as other parts see it (proxy, CLI, control socket).

The supervisor is the only writer; everyone else reads :class:`ServiceStatus` snapshots through
the :class:`ServiceDirectory` protocol, so the proxy can be tested against a stand-in directory.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class ServiceState(enum.StrEnum):
    PENDING = "pending"
    """Not started yet: waiting for its dependencies."""
    STARTING = "starting"
    """Process running, not ready yet."""
    READY = "ready"
    BACKOFF = "backoff"
    """Exited; will be started again after a delay."""
    RESTARTING = "restarting"
    """The old process is stopping to make way for a new one (a restart, or a reload in
    ``reload: restart`` mode): requests wait for the new one instead of failing."""
    STOPPING = "stopping"
    """Stopping for good (a stop, or the shutdown)."""
    STOPPED = "stopped"
    """Stopped by devstack or the user."""
    DONE = "done"
    """Exited 0 and is not to be restarted (a migration, a build step)."""
    CRASHED = "crashed"
    """Exited non-zero and its restart policy says not to restart it."""
    FAILED = "failed"
    """Could not start, or crashed too often in a row; the rest of the stack keeps running."""

    @property
    def is_running(self) -> bool:
        return self in (ServiceState.STARTING, ServiceState.READY)

    @property
    def is_coming(self) -> bool:
        """Not serving now, but expected to be soon: a request may wait for it."""
        return self in (
            ServiceState.PENDING,
            ServiceState.STARTING,
            ServiceState.BACKOFF,
            ServiceState.RESTARTING,
        )

    @property
    def is_stopping(self) -> bool:
        """Its process was asked to stop and has not exited yet."""
        return self in (ServiceState.STOPPING, ServiceState.RESTARTING)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: ServiceState
    port: int
    """The port the service actually got (its wanted one, or the one picked instead)."""
    wanted_port: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    reason: str | None = None
    """Why it is in this state, in words (``exited with code 1``, ``command not found: x``).

    On a READY service (otherwise never set there): the latest reload's new version failed to
    start (``reload: blue-green``) and the previous version still serves; ``last_lines`` are
    then the failed attempt's. A reader shows the failure whenever ``reason`` is set, whatever
    the state, and clears it once the service is ready with no reason."""
    last_lines: tuple[str, ...] = ()

    @property
    def is_ready(self) -> bool:
        return self.state is ServiceState.READY

    @property
    def has_failed_reload(self) -> bool:
        """Serving the previous version because the new one failed to start (blue-green)."""
        return self.state is ServiceState.READY and self.reason is not None


class ServiceDirectory(Protocol):
    """What the proxy needs from the supervisor."""

    def status(self, name: str) -> ServiceStatus:
        """The current snapshot of service ``name`` (which exists in the spec)."""
        ...

    async def wait_ready(self, name: str, timeout: float) -> ServiceStatus:
        """Return as soon as ``name`` is ready, or is in a state it will not leave by itself
        (failed, crashed, done, stopped), or ``timeout`` seconds passed: the latest snapshot.
        A service restarting or reloading is waited for (it is coming back); one stopping for
        good is waited for until it has stopped."""
        ...

    async def changed(self) -> None:
        """Return at the next change of any service's status. Changes in quick succession may
        wake a waiter once: read the snapshots with :meth:`status` afterwards."""
        ...
