"""One keep-alive HTTP/1.1 connection to a service on loopback, its answers parsed with httptools
(llhttp, the parser uvicorn uses).

A :class:`Connection` carries one :class:`Exchange` at a time and reports the answer to it as it
arrives: status and headers, body chunks, the end, or a failure. What happens then is the
exchange's business: :mod:`devstack.proxy.upstream.pool` queues the answer for a task that
relays it, :mod:`devstack.proxy.relay` writes it straight to the client. The pool is
:class:`devstack.proxy.upstream.pool.PooledUpstream`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import cast

import httptools

from devstack.proxy.failures import ConnectionLost

MAX_ANSWER_HEAD_BYTES = 64 * 1024
"""The most bytes of an answer's head (status line and header fields) read before it is
complete: a service sending more is answered 502 (nginx's ``proxy_buffer_size`` is 4 or 8 KiB,
Node's largest head 16 KiB; this leaves room for big cookies). Without a bound, a service
writing one endless header line would grow the proxy's memory without end."""


class AnswerHeadTooLarge(Exception):
    def __init__(self) -> None:
        super().__init__(f"the answer's head is larger than {MAX_ANSWER_HEAD_BYTES} bytes")


class MalformedAnswer(Exception):
    """An answer httptools reads but that must not be passed on (a byte RFC 9112 forbids)."""


_FORBIDDEN_IN_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""A reason phrase is ``*( HTAB / SP / VCHAR / obs-text )`` (RFC 9112 section 4): any other
control byte (NUL, CR, LF, ...) makes the answer malformed (502), never passed on."""


class _HeadDone(Exception):
    """Raised from the parser callback: a HEAD answer has no body, whatever it announces."""


class Exchange:
    """One request's answer as a :class:`Connection` reports it: status and headers, then body
    chunks, then the end (or a failure). Subclasses decide what happens at each step."""

    __slots__ = ("error", "has_headers", "is_complete", "is_head", "raw_headers", "reason",
                 "status")  # fmt: skip

    def __init__(self, *, is_head: bool) -> None:
        self.is_head = is_head
        self.status = 0
        self.reason = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.has_headers = False
        self.is_complete = False
        self.error: BaseException | None = None

    def headers_arrived(self) -> None:
        """Status and headers are in (informational answers are skipped)."""

    def body_arrived(self, connection: Connection, chunk: bytes) -> None:
        """A piece of the body; ``connection.pause_reading()`` holds back the next ones."""

    def completed(self) -> None:
        """The whole answer arrived (``is_complete`` is set)."""

    def fail(self, error: BaseException) -> None:
        """The exchange failed: before the headers, or in the middle of the body."""
        self.error = error


class Connection(asyncio.Protocol):
    """One keep-alive connection to a service; carries one exchange at a time."""

    def __init__(self, port: int, on_lost: Callable[[Connection], None]) -> None:
        self._on_lost = on_lost
        self.port = port
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.is_lost = False
        self.is_reused = False
        self.idle_since = 0.0
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._head_bytes = 0
        """Bytes received while the answer's head is incomplete."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # nothing was asked: a confused service; do not reuse
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadDone):
                self._parser = httptools.HttpResponseParser(self)
                return
            self._broken(exc)
        except httptools.HttpParserError as exc:
            self._broken(exc)
            return
        exchange = self.exchange
        if exchange is not None and not exchange.has_headers:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_ANSWER_HEAD_BYTES:
                self._broken(AnswerHeadTooLarge())

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self._on_lost(self)
        if self.exchange is not None:
            self._end_without_length(exc)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)  # wake a sender; drain() sees is_lost

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable
        if self.is_lost:
            raise ConnectionLost()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.is_lost = True

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        if _FORBIDDEN_IN_REASON.search(status):
            raise MalformedAnswer("the answer's reason phrase holds a control character")
        if self.exchange is not None:
            self.exchange.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            self.exchange.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational (100 Continue, 103 Early Hints): not the answer
            exchange.raw_headers.clear()
            return
        exchange.status = status
        exchange.has_headers = True
        exchange.headers_arrived()
        if exchange.is_head:
            self._complete(keep_alive=self._parser.should_keep_alive())
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.body_arrived(self, body)

    def on_message_complete(self) -> None:
        if self.exchange is not None and self.exchange.has_headers:
            self._complete(keep_alive=self._parser.should_keep_alive())

    # internals

    def taken(self, exchange: Exchange) -> None:
        """Called as ``exchange`` starts on this connection."""
        self.exchange = exchange
        self._head_bytes = 0
        self.resume_reading()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.is_lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.is_lost:
                self.transport.resume_reading()

    def _complete(self, *, keep_alive: bool) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.is_complete = True
        if not keep_alive:
            self.close()
        exchange.completed()

    def _end_without_length(self, exc: Exception | None) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.is_complete:
            return
        if exchange.has_headers and exc is None and _reads_until_close(exchange):
            exchange.is_complete = True  # a body delimited by the end of the connection
            exchange.completed()
            return
        exchange.fail(ConnectionLost(exc))

    def _broken(self, error: Exception) -> None:
        if self.exchange is not None:
            self.exchange.fail(ConnectionLost(error))
        self.close()


def _reads_until_close(exchange: Exchange) -> bool:
    names = {name.lower() for name, _ in exchange.raw_headers}
    return b"content-length" not in names and b"transfer-encoding" not in names
