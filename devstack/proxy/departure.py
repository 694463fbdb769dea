"""When a service's process goes away, the long-lived answers it is giving through the proxy end
cleanly instead of hanging on it.

A websocket or an event stream never ends by itself, and many services wait for theirs before
they exit (aiohttp's ``run_app`` does, up to a minute; Node's ``server.close()`` for ever): a
reload would wait for the service's stop timeout and then cut them. :func:`follow` watches the
services through :meth:`devstack.status.ServiceDirectory.changed`, and as soon as a process that
was running on a port is on its way out (told to stop for a reload, a restart or for good;
replaced by a blue-green switch; or gone), it ends what the proxy holds open to that port: every
websocket (:meth:`devstack.proxy.websocket.OpenSockets.leave`: a close frame for the client,
``1012`` service restart, or ``1001`` going away when the service stops for good) and every
event stream (:meth:`devstack.proxy.upstream.pool.PooledUpstream.end_event_streams`: a complete
answer). Clients reconnect, and reach the new process once it is ready.

Acting on the port is exact: the new process of a restart takes the same port only after the
old one has exited, and the proxy sends nothing to it before it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from devstack.proxy.upstream.pool import PooledUpstream
from devstack.status import ServiceDirectory, ServiceState, ServiceStatus

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
"""The websocket close code for a service that stops for good."""
SERVICE_RESTART = 1012
"""The websocket close code for a process that a new one replaces."""


class Sockets(Protocol):
    """The proxy's open websockets (:class:`devstack.proxy.websocket.OpenSockets`)."""

    def leave(self, port: int, code: int) -> None: ...

_FOR_GOOD = frozenset({ServiceState.STOPPING, ServiceState.STOPPED})


async def follow(directory: ServiceDirectory, services: Iterable[str], upstream: PooledUpstream,
                 sockets: Callable[[], Sockets | None]) -> None:  # fmt: skip
    """End the long-lived answers of every process that leaves, until cancelled. ``sockets``:
    the open websockets, once the full proxy (which relays them) serves."""
    names = tuple(services)
    seen = {name: directory.status(name) for name in names}
    while True:
        await directory.changed()
        for name in names:
            now, before = directory.status(name), seen[name]
            seen[name] = now
            if is_leaving(before, now):
                code = GOING_AWAY if now.state in _FOR_GOOD else SERVICE_RESTART
                logger.debug("%s's process %s on port %d is leaving (%s)", name, before.pid,
                             before.port, now.state)  # fmt: skip
                if (open_sockets := sockets()) is not None:
                    open_sockets.leave(before.port, code)
                upstream.end_event_streams(before.port)


def is_leaving(before: ServiceStatus, now: ServiceStatus) -> bool:
    """The process that ran in ``before`` is on its way out in ``now``: asked to stop, replaced
    by another (a blue-green switch), or gone."""
    if not before.state.is_running or before.pid is None:
        return False
    return now.state.is_stopping or (now.pid, now.port) != (before.pid, before.port)
