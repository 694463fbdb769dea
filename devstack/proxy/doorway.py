"""The proxy's doorway: it accepts connections on the listening sockets and hands each one over
with its first byte (``0x16`` starts a TLS handshake; anything else is plain HTTP sent to the
HTTPS port by mistake), which :class:`devstack.proxy.server.Proxy` routes.

The listener stays registered with the loop, and each wakeup accepts every pending connection
(up to :data:`ACCEPT_BATCH`). A client's first bytes usually arrive with its connection, so the
first byte is peeked at once; a connection with nothing yet waits in a reader callback, and is
dropped when it says nothing for ``first_byte_seconds``. When descriptors run out, accepting
backs off and tries again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import NamedTuple

logger = logging.getLogger(__name__)

ACCEPT_BATCH = 64
"""Connections accepted per wakeup of the listener, at most (the rest wait for the next)."""
ACCEPT_BACK_OFF_SECONDS = 0.1
"""How long accepting pauses when the process is out of descriptors (or memory)."""


class Kind(NamedTuple):
    """A listener's address family, type and protocol, as plain integers: what each accepted
    socket is made with. (``socket.accept`` asks the listener for them on every connection, and
    turning them into enums costs more than the rest of accepting.)"""

    family: int
    type: int
    proto: int


class Doorway:
    """Accepts on listeners (:meth:`serve`, one task each) and calls ``hand_over(conn, first)``
    with each connection and its first byte, left in the socket."""

    def __init__(
        self, first_byte_seconds: float, hand_over: Callable[[socket.socket, int], None]
    ) -> None:
        self.first_byte_seconds = first_byte_seconds
        self._hand_over = hand_over
        self._unheard: dict[socket.socket, asyncio.TimerHandle] = {}

    @property
    def waiting(self) -> int:
        """How many accepted connections have sent nothing yet."""
        return len(self._unheard)

    async def serve(self, listener: socket.socket) -> None:
        """Accept on ``listener`` until cancelled (then the connections still waiting for their
        first byte are closed) or until it fails for good."""
        loop = asyncio.get_running_loop()
        fd = listener.fileno()
        kind = Kind(int(listener.family), int(listener.type), listener.proto)
        try:
            while True:
                paused: asyncio.Future[float | None] = loop.create_future()
                loop.add_reader(fd, self._take_pending, loop, listener, kind, paused)
                try:
                    back_off = await paused
                finally:
                    loop.remove_reader(fd)
                if back_off is None:
                    return
                await asyncio.sleep(back_off)  # until descriptors are free again
        except asyncio.CancelledError:
            self._drop_unheard(loop)  # the proxy stops
            raise

    def _take_pending(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        kind: Kind,
        paused: asyncio.Future[float | None],
    ) -> None:
        """The listener is readable: accept what is pending and pass each connection on."""
        if paused.done():
            return
        for _ in range(ACCEPT_BATCH):
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]  # socket.accept, no enums
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.warning("proxy cannot accept connections: %s", exc)
                    paused.set_result(ACCEPT_BACK_OFF_SECONDS)
                else:
                    logger.error("proxy stopped accepting on %s: %s", listener.getsockname(),
                                 exc)  # fmt: skip
                    paused.set_result(None)
                return
            conn = socket.socket(*kind, fileno=fd)
            conn.setblocking(False)
            first = _peek(conn)
            if first is None:
                self._await_first_byte(loop, conn)
            else:
                self._pass_on(conn, first)

    def _await_first_byte(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """Nothing arrived yet: wait for the first byte in a reader callback, and drop the
        connection if it has not come within ``first_byte_seconds``."""
        self._unheard[conn] = loop.call_later(self.first_byte_seconds, self._silent, loop, conn)
        loop.add_reader(conn.fileno(), self._heard, loop, conn)

    def _heard(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        first = _peek(conn)
        if first is None:
            return  # a spurious wakeup: keep waiting
        loop.remove_reader(conn.fileno())
        self._unheard.pop(conn).cancel()
        self._pass_on(conn, first)

    def _silent(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        logger.debug("dropped a connection that sent nothing for %g s", self.first_byte_seconds)
        loop.remove_reader(conn.fileno())
        del self._unheard[conn]
        conn.close()

    def _drop_unheard(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections still waiting for their first byte."""
        for conn, timer in self._unheard.items():
            timer.cancel()
            loop.remove_reader(conn.fileno())
            conn.close()
        self._unheard.clear()

    def _pass_on(self, conn: socket.socket, first: bytes) -> None:
        if first:
            self._hand_over(conn, first[0])
        else:  # closed (or reset) before saying anything
            conn.close()


def _peek(conn: socket.socket) -> bytes | None:
    """The connection's first byte, left in the socket; ``b""`` when the client closed (or
    reset) it; ``None`` when nothing arrived yet."""
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        logger.debug("dropped a connection before its first request: %r", exc)
        return b""
