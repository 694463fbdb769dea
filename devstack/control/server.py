"""The stack's side of the control socket: one request per connection, answered from the
supervisor's statuses or passed on to it as a request.

The server knows the supervisor only through :class:`Controlled` (app.py wires the real one),
so it imports nothing of ``devstack.run``. It binds only while the run lock is held, so a
socket file already there is a crashed run's and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from devstack.control import protocol
from devstack.control.address import reachable
from devstack.control.protocol import ProtocolError, Request, StackInfo
from devstack.status import ServiceStatus

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o600
READ_TIMEOUT_SECONDS = 10.0
"""A client that connects and says nothing is dropped after this long."""


class Controlled(Protocol):
    """What the control socket asks of the supervisor."""

    def statuses(self) -> list[ServiceStatus]: ...

    def restart(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...

    def request_shutdown(self, *, force: bool = False) -> None: ...


class ControlServer:
    """Answers on ``path`` while :meth:`serve` runs."""

    def __init__(self, path: Path, controlled: Controlled, stack: StackInfo, logs_dir: Path):
        self.path = path
        self.stack = stack
        """What ``status`` says of the stack; app.py fills the proxy in once it listens."""
        self._controlled = controlled
        self._logs_dir = logs_dir

    async def serve(self, until: asyncio.Future[Any]) -> None:
        """Listen until ``until`` is done (the supervisor has finished), then remove the
        socket."""
        sock = self._bind()
        try:
            server = await asyncio.start_unix_server(self._answer, sock=sock)
        except BaseException:
            sock.close()
            self._remove()
            raise
        try:
            await asyncio.wait([until])
        finally:
            server.close()
            self._remove()

    def _bind(self) -> socket.socket:
        self._remove()  # a crashed run's: we hold the run lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with reachable(self.path) as name:
                sock.bind(name)
            os.chmod(self.path, SOCKET_MODE)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        then: Callable[[], None] | None = None
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_SECONDS)
            try:
                answer, then = self.respond(protocol.parse_request(line))
            except ProtocolError as exc:
                answer = protocol.failure(str(exc))
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, TimeoutError, ValueError) as exc:
            logger.debug("control: a client went away: %s", exc)
        finally:
            writer.close()
            if then is not None:
                then()  # after the answer: `down` stops the loop this connection runs on

    def respond(self, request: Request) -> tuple[bytes, Callable[[], None] | None]:
        """The answer to ``request``, and what to do once it is sent."""
        statuses = self._controlled.statuses()
        known = [status.name for status in statuses]
        if error := protocol.unknown_names(request.names, known):
            return protocol.failure(error), None
        match request.command:
            case "status":
                return protocol.ok(**protocol.status_document(self.stack, statuses)), None
            case "restart" | "stop" | "start":
                act = getattr(self._controlled, request.command)
                for name in request.names:
                    act(name)
                return protocol.ok(names=list(request.names)), None
            case "down":
                pids = [status.pid for status in statuses if status.pid is not None]
                answer = protocol.ok(pid=self.stack.pid, service_pids=pids)
                return answer, self._controlled.request_shutdown
            case "logs":
                names = request.names or tuple(known)
                files = {name: str(self._logs_dir / f"{name}.log") for name in names}
                return protocol.ok(pid=self.stack.pid, logs=files), None
        raise ProtocolError(f"unknown command {request.command!r}")  # parse_request checked
