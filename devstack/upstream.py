"""The lean upstream leg: pooled keep-alive HTTP/1.1 connections to services on loopback, parsed
with httptools (llhttp, the parser uvicorn uses) instead of aiohttp's client.

Only what a reverse proxy to a local service needs: no redirects, cookies, proxies, TLS or
decompression. One pool per port, most recently used connection first; a connection is reused
only after its whole exchange went through. Bodies stream both ways with back-pressure: the
service's socket stops being read while the client is slower, and the client's body is read
only as fast as the service takes it.

Needs the ``fast`` extra (httptools); :func:`devstack.proxy.default_upstream` falls back to
:class:`devstack.forward.SessionUpstream` without it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import cast

import httptools
from aiohttp import web
from multidict import CIMultiDict, istr

from devstack.forward import (
    HOP_BY_HOP_HEADERS,
    ClientGone,
    RequestBody,
    UpstreamBroken,
    UpstreamRefused,
    UpstreamTimeout,
    named_in_connection,
    start_response,
)

logger = logging.getLogger(__name__)

IDLE_SECONDS = 30.0
"""Pooled connections unused for longer are closed instead of reused."""
MAX_IDLE_PER_PORT = 64
HIGH_WATER = 256 * 1024
"""Response bytes buffered from a service before its socket stops being read."""

_CONTENT_LENGTH = istr("Content-Length")


class _ConnectionLost(Exception):
    pass


class _HeadDone(Exception):
    """Raised from the parser callback: a HEAD answer has no body, whatever it announces."""


class _Exchange:
    """One request's answer as it arrives: status and headers, then body chunks."""

    __slots__ = (
        "buffered",
        "chunks",
        "error",
        "headers_ready",
        "is_complete",
        "is_head",
        "raw_headers",
        "reason",
        "status",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, *, is_head: bool) -> None:
        self.headers_ready: asyncio.Future[None] = loop.create_future()
        self.is_head = is_head
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.is_complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def headers(self) -> CIMultiDict[str]:
        """The answer's headers minus hop-by-hop ones, decoded, in order, repeats kept."""
        drop = HOP_BY_HOP_HEADERS
        raw = self.raw_headers
        listed = [value.decode("latin-1") for name, value in raw if name.lower() == b"connection"]
        if listed:
            drop = drop | named_in_connection(listed)
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
        return CIMultiDict([(name, value) for name, value in pairs if name.lower() not in drop])

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def body_sent(self, sending: asyncio.Task[None]) -> None:
        """Sending the request body ended; if it failed, so did the exchange."""
        if not sending.cancelled() and (error := sending.exception()) is not None:
            self.fail(_ConnectionLost(f"sending the request body failed: {error!r}"))

    def fail(self, error: BaseException) -> None:
        if self.is_complete:
            return
        self.error = error
        if not self.headers_ready.done():
            self.headers_ready.set_exception(error)
            self.headers_ready.exception()  # retrieved: whoever awaits sees it, nobody else warns
        self.wake()


class _Deadline:
    """Fails ``exchange`` with ``TimeoutError`` when no answer came ``limit`` seconds after the
    request (or after the last chunk of its body). One timer, re-armed lazily: cheaper on the
    hot path than ``asyncio.timeout``."""

    __slots__ = ("_exchange", "_handle", "_limit", "_loop", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float, exchange: _Exchange) -> None:
        self._loop = loop
        self._limit = limit
        self._exchange = exchange
        self._when = loop.time() + limit
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._when, self._fire)

    def extend(self) -> None:
        self._when = self._loop.time() + self._limit

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        if self._loop.time() < self._when:
            self._handle = self._loop.call_at(self._when, self._fire)
            return
        self._handle = None
        self._exchange.fail(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a service; carries one exchange at a time."""

    def __init__(self, pool: PooledUpstream, port: int) -> None:
        self._pool = pool
        self.port = port
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.is_lost = False
        self.is_reused = False
        self.idle_since = 0.0
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False

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
            self._broken(f"bad answer: {exc}")
        except httptools.HttpParserError as exc:
            self._broken(f"bad answer: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self._pool.forget(self)
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
            raise _ConnectionLost("connection closed while sending")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.is_lost = True

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        if self.exchange is not None:
            self.exchange.reason = status.decode("latin-1")

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
        exchange.headers_ready.set_result(None)
        if exchange.is_head:
            self._complete(keep_alive=self._parser.should_keep_alive())
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        if self.exchange is not None and self.exchange.headers_ready.done():
            self._complete(keep_alive=self._parser.should_keep_alive())

    # internals

    def taken(self, exchange: _Exchange) -> None:
        """Called as ``exchange`` starts on this connection."""
        self.exchange = exchange
        self._resume_reading()

    def consumed(self, exchange: _Exchange) -> None:
        """The relay took chunks: read from the service again below the high-water mark."""
        if self._reading_paused and exchange.buffered < HIGH_WATER // 2:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _complete(self, *, keep_alive: bool) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.is_complete = True
        exchange.wake()
        if not keep_alive:
            self.close()

    def _end_without_length(self, exc: Exception | None) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.is_complete:
            return
        if exchange.headers_ready.done() and exc is None and _reads_until_close(exchange):
            exchange.is_complete = True  # a body delimited by the end of the connection
            exchange.wake()
            return
        exchange.fail(_ConnectionLost(str(exc) if exc else "the service closed the connection"))

    def _broken(self, detail: str) -> None:
        if self.exchange is not None:
            self.exchange.fail(_ConnectionLost(detail))
        self.close()


def _reads_until_close(exchange: _Exchange) -> bool:
    names = {name.lower() for name, _ in exchange.raw_headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class PooledUpstream:
    """The :class:`devstack.forward.Upstream` leg on httptools with per-port connection pools."""

    def __init__(self, *, upstream_timeout: float, connect_timeout: float = 5.0) -> None:
        self._upstream_timeout = upstream_timeout
        self._connect_timeout = connect_timeout
        self._idle: dict[int, list[_Connection]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.port)
        if idle and connection in idle:
            idle.remove(connection)

    async def forward(
        self,
        request: web.BaseRequest,
        service: str,
        port: int,
        path_qs: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> web.StreamResponse:
        is_chunked = body is not None and _CONTENT_LENGTH not in headers
        if is_chunked:
            headers["Transfer-Encoding"] = "chunked"
        head = _request_head(request.method, path_qs, headers)
        for attempt in (1, 2):
            connection = await self._acquire(service, port)
            try:
                exchange, sending = await self._exchange(
                    connection, request.method, head, body, is_chunked
                )
            except _ConnectionLost as exc:
                connection.close()
                retry = connection.is_reused and attempt == 1
                if retry and (body is None or not body.is_started):
                    continue  # a pooled connection the service had closed: once more, fresh
                raise UpstreamBroken(service, str(exc)) from exc
            except TimeoutError as exc:
                connection.close()
                limit = self._upstream_timeout
                raise UpstreamTimeout(service, f"no answer within {limit:g} s") from exc
            except BaseException:
                connection.close()
                raise
            return await self._relay(request, service, connection, exchange, sending)
        raise AssertionError("unreachable")

    async def _acquire(self, service: str, port: int) -> _Connection:
        idle = self._idle.get(port)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.is_lost and now - connection.idle_since < IDLE_SECONDS:
                connection.is_reused = True
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, port), "127.0.0.1", port
                )
        except (ConnectionRefusedError, TimeoutError) as exc:
            raise UpstreamRefused(service, f"nothing accepts connections on port {port}") from exc
        except OSError as exc:
            raise UpstreamRefused(service, f"cannot connect to port {port}: {exc}") from exc
        return protocol

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        head: bytes,
        body: RequestBody | None,
        is_chunked: bool,
    ) -> tuple[_Exchange, asyncio.Task[None] | None]:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop, is_head=method == "HEAD")
        connection.taken(exchange)
        assert connection.transport is not None
        if connection.is_lost:
            raise _ConnectionLost("the service closed the pooled connection")
        connection.transport.write(head)
        deadline = _Deadline(loop, self._upstream_timeout, exchange)
        sending = None
        if body is not None:
            sending = loop.create_task(_send_body(connection, body, is_chunked, deadline.extend))
            sending.add_done_callback(exchange.body_sent)
        try:
            await exchange.headers_ready
        except BaseException:
            if sending is not None:
                sending.cancel()
            raise
        finally:
            deadline.cancel()
        return exchange, sending

    async def _relay(
        self,
        request: web.BaseRequest,
        service: str,
        connection: _Connection,
        exchange: _Exchange,
        sending: asyncio.Task[None] | None,
    ) -> web.StreamResponse:
        headers = exchange.headers()
        status, reason = exchange.status, exchange.reason or None
        try:
            if exchange.is_complete and exchange.error is None:
                body = b"".join(exchange.chunks)
                return await start_response(request, status, reason, headers, body)
            response = await start_response(request, status, reason, headers, None)
            await _stream(request, service, response, connection, exchange)
            return response
        except ConnectionResetError as exc:
            raise ClientGone(service, "client closed the connection") from exc
        finally:
            self._release(connection, exchange, sending)

    def _release(
        self, connection: _Connection, exchange: _Exchange, sending: asyncio.Task[None] | None
    ) -> None:
        connection.exchange = None
        is_sent = sending is None or (sending.done() and not sending.cancelled()
                                      and sending.exception() is None)  # fmt: skip
        if sending is not None and not sending.done():
            sending.cancel()
        if connection.is_lost or not exchange.is_complete or not is_sent:
            connection.close()
            return
        idle = self._idle.setdefault(connection.port, [])
        if len(idle) >= MAX_IDLE_PER_PORT:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)


async def _stream(
    request: web.BaseRequest,
    service: str,
    response: web.StreamResponse,
    connection: _Connection,
    exchange: _Exchange,
) -> None:
    try:
        while chunk := await _next_chunk(connection, exchange):
            await response.write(chunk)
    except _ConnectionLost as exc:
        # Too late for an error page: cut the client off so it sees the answer is incomplete.
        logger.info("%s broke off its answer to %s %s: %s", service, request.method,
                    request.path, exc)  # fmt: skip
        if request.transport is not None:
            request.transport.close()
        return
    await response.write_eof()


async def _next_chunk(connection: _Connection, exchange: _Exchange) -> bytes:
    while not exchange.chunks:
        if exchange.error is not None:
            raise exchange.error
        if exchange.is_complete:
            return b""
        exchange.waiter = asyncio.get_running_loop().create_future()
        try:
            await exchange.waiter
        finally:
            exchange.waiter = None
    chunk = exchange.chunks.popleft()
    exchange.buffered -= len(chunk)
    connection.consumed(exchange)
    return chunk


async def _send_body(
    connection: _Connection, body: RequestBody, is_chunked: bool, progress: Callable[[], None]
) -> None:
    transport = connection.transport
    assert transport is not None
    async for chunk in body.chunks(progress):
        if connection.is_lost:
            raise _ConnectionLost("the service closed the connection while the body was sent")
        if is_chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        await connection.drain()
    if is_chunked and not connection.is_lost:
        transport.write(b"0\r\n\r\n")


def _request_head(method: str, path_qs: str, headers: CIMultiDict[str]) -> bytes:
    lines = [f"{method} {path_qs} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
