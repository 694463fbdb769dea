"""The proxy's listening sockets, bound before anything else starts.

The proxy's port is the stack's URL, so it never moves: when it is taken, ``devstack up`` fails at
once naming the holder and ``--port``. Binding needs only the standard library, so it happens
before services start and before the proxy's heavier modules (aiohttp, cryptography) load;
connections that arrive in between wait in the listen backlog.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass, field

from devstack.errors import PortError
from devstack.manifest.spec import StackSpec
from devstack.netstat.holders import find_holder

logger = logging.getLogger(__name__)

BACKLOG = 1024


@dataclass
class Listeners:
    https: list[socket.socket]
    """The HTTPS port on every ``proxy.bind`` address (plain HTTP there gets a redirect)."""
    http: list[socket.socket] = field(default_factory=list)
    """``proxy.http_port``: plain HTTP that only redirects (production's 80 -> 443)."""

    @property
    def port(self) -> int:
        port: int = self.https[0].getsockname()[1]
        return port

    @property
    def origin(self) -> str:
        """The proxy's origin, as URLs and ``DEVSTACK_URL`` name it."""
        return origin(self.port)

    def close(self) -> None:
        for sock in (*self.https, *self.http):
            with contextlib.suppress(OSError):
                sock.close()


def bind_proxy(spec: StackSpec, port: int | None = None) -> Listeners:
    """Bind ``port`` (default ``proxy.port``; 0 picks one) and ``proxy.http_port``."""
    wanted = spec.proxy.port if port is None else port
    listeners = Listeners(https=bind_listeners(spec.proxy.bind, wanted, role="proxy"))
    if spec.proxy.http_port is not None:
        try:
            listeners.http = bind_listeners(
                spec.proxy.bind, spec.proxy.http_port, role="proxy.http_port"
            )
        except BaseException:
            listeners.close()
            raise
    return listeners


def bind_listeners(hosts: tuple[str, ...], port: int, *, role: str) -> list[socket.socket]:
    """Listening sockets on every host, all on one port (``0``: the first one's pick).
    An address family the machine lacks (no IPv6) is skipped with a debug line."""
    sockets: list[socket.socket] = []
    try:
        for host in hosts:
            sock = _bind_one(host, port, role=role)
            if sock is not None:
                sockets.append(sock)
                port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise PortError(f"{role} could not listen on any of {', '.join(hosts)}; check proxy.bind")
    return sockets


def _bind_one(host: str, port: int, *, role: str) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        logger.debug("%s: no %s on this machine (%s); skipping it", role, host, exc)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortError(port_taken_message(role, port)) from exc
        if family == socket.AF_INET6 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            logger.debug("%s: cannot listen on %s (%s); skipping it", role, host, exc)
            return None
        raise PortError(f"{role} cannot listen on {host} port {port}: {exc.strerror}") from exc
    return sock


def port_taken_message(role: str, port: int) -> str:
    holder = find_holder(port)
    who = f"held by {holder}" if holder is not None else "in use by another program"
    return f"{role} port {port} is {who}; stop it or use --port N"


def origin(port: int) -> str:
    """``https://localhost:PORT``: the one origin every page of the stack is served from."""
    return f"https://localhost:{port}"
