"""The upstream leg: pooled keep-alive HTTP/1.1 connections to services on loopback, parsed with
httptools (llhttp, the parser uvicorn uses) instead of aiohttp's client.

Only what a reverse proxy to a local service needs: no redirects, cookies, proxies, TLS or
decompression. One pool per port, most recently used connection first; a connection is reused
only after its whole exchange went through. Bodies stream both ways with back-pressure: the
service's socket stops being read while the client is slower, and the client's body is read
only as fast as the service takes it.

The full proxy forwards through :meth:`PooledUpstream.forward`; the fast lane
(:mod:`devstack.proxy.fastlane`) takes connections from the same pool
(:meth:`PooledUpstream.idle_connection`, :meth:`PooledUpstream.connect`) and gives them back
(:meth:`PooledUpstream.put_back`).

HTML pages forwarded with ``live_reload`` get the live-reload tag after their body, by the rules
of :mod:`devstack.proxy.live.injection` (Content-Length corrected, or one more chunk).

An event stream (``text/event-stream`` without a Content-Length) never ends by itself: when the
process answering it is about to go (:meth:`PooledUpstream.end_event_streams`, on either lane),
its connection is closed and the client's answer ends as a complete one (the last chunk), so
browsers reconnect (``EventSource``) to the new process. An answer that breaks off because the
service's connection did is cut off for the client instead: it sees it is incomplete.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from devstack.proxy.failures import ConnectionLost, Stage, failure_for
from devstack.proxy.headers import response_headers_bytes
from devstack.proxy.live import injection
from devstack.proxy.upstream.connection import Connection, Exchange

if TYPE_CHECKING:  # the full proxy's side; the fast lane loads this module without aiohttp
    from aiohttp import web
    from multidict import CIMultiDict

    from devstack.proxy.forward import RequestBody

logger = logging.getLogger(__name__)

IDLE_SECONDS = 30.0
"""Pooled connections unused for longer are closed instead of reused."""
MAX_IDLE_PER_PORT = 64
HIGH_WATER = 256 * 1024
"""Response bytes buffered from a service before its socket stops being read."""

_CONTENT_LENGTH = "Content-Length"  # CIMultiDict folds its case


class _Exchange(Exchange):
    """An answer awaited by a task: a future for the headers, a queue of body chunks."""

    __slots__ = ("buffered", "chunks", "headers_ready", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, is_head: bool) -> None:
        super().__init__(is_head=is_head)
        self.headers_ready: asyncio.Future[None] = loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None

    def headers(self) -> CIMultiDict[str]:
        """The answer's headers minus hop-by-hop ones, decoded, in order, repeats kept (for the
        full proxy, which has multidict loaded already)."""
        from multidict import CIMultiDict

        return CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response_headers_bytes(self.raw_headers)
        )

    def headers_arrived(self) -> None:
        self.headers_ready.set_result(None)

    def body_arrived(self, connection: Connection, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > HIGH_WATER:
            connection.pause_reading()
        self.wake()

    def completed(self) -> None:
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def body_sent(self, sending: asyncio.Task[None]) -> None:
        """Sending the request body ended; if it failed, so did the exchange."""
        if not sending.cancelled() and (error := sending.exception()) is not None:
            self.fail(ConnectionLost(error))

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


class PooledUpstream:
    """Connections to services on loopback, pooled per port, shared by both lanes; holds no
    connection before the first request."""

    def __init__(self, *, upstream_timeout: float, connect_timeout: float = 5.0) -> None:
        self._upstream_timeout = upstream_timeout
        self._connect_timeout = connect_timeout
        self._idle: dict[int, list[Connection]] = {}
        self._open: dict[int, set[Connection]] = {}
        """Every connection until it is lost, idle or carrying an exchange, by port."""

    @property
    def upstream_timeout(self) -> float:
        return self._upstream_timeout

    async def stop(self) -> None:
        """Close the pooled connections (the proxy closes both lanes first, so none is in use)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def forget(self, connection: Connection) -> None:
        """``connection`` is lost: out of the pool."""
        idle = self._idle.get(connection.port)
        if idle and connection in idle:
            idle.remove(connection)
        connections = self._open.get(connection.port)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._open[connection.port]

    def end_event_streams(self, port: int) -> int:
        """The process serving on ``port`` is going away: end every event stream it is sending,
        as complete answers for the clients, and close their connections. How many ended."""
        ended = 0
        for connection in list(self._open.get(port, ())):
            exchange = connection.exchange
            if exchange is not None and is_open_event_stream(exchange):
                connection.close()
                exchange.is_complete = True
                exchange.completed()
                ended += 1
        if ended:
            logger.debug("ended %d event stream(s) from port %d", ended, port)
        return ended

    async def forward(
        self,
        request: web.BaseRequest,
        service: str,
        port: int,
        path_qs: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
        *,
        live_reload: bool = False,
    ) -> web.StreamResponse:
        """Send the request to ``service`` on ``port`` and relay its answer; ``live_reload``:
        the route's (its HTML pages may get the live-reload script)."""
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
            except (ConnectionLost, TimeoutError) as exc:
                connection.close()
                retry = connection.is_reused and attempt == 1 and isinstance(exc, ConnectionLost)
                if retry and (body is None or not body.is_started):
                    continue  # a pooled connection the service had closed: once more, fresh
                raise failure_for(exc, service, Stage.ANSWERING,
                                  limit=self._upstream_timeout) from exc  # fmt: skip
            except BaseException:
                connection.close()
                raise
            tag = _live_tag(exchange, service) if live_reload else b""
            return await self._relay(request, service, connection, exchange, sending, tag)
        raise AssertionError("unreachable")

    async def _acquire(self, service: str, port: int) -> Connection:
        return self.idle_connection(port) or await self.connect(service, port)

    def idle_connection(self, port: int) -> Connection | None:
        """The most recently used open connection to ``port``, taken out of the pool."""
        idle = self._idle.get(port)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.is_lost and now - connection.idle_since < IDLE_SECONDS:
                connection.is_reused = True
                return connection
            connection.close()
        return None

    async def connect(self, service: str, port: int) -> Connection:
        """A new connection to ``127.0.0.1:port``; raises
        :class:`devstack.proxy.failures.UpstreamRefused` when nothing takes it within the
        connect timeout."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: Connection(port, self.forget), "127.0.0.1", port
                )
        except OSError as exc:  # refused, unreachable, or TimeoutError: nothing took it in time
            raise failure_for(exc, service, Stage.CONNECTING, port=port) from exc
        if not protocol.is_lost:
            self._open.setdefault(port, set()).add(protocol)
        return protocol

    async def _exchange(
        self,
        connection: Connection,
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
            raise ConnectionLost()
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
        connection: Connection,
        exchange: _Exchange,
        sending: asyncio.Task[None] | None,
        tag: bytes,
    ) -> web.StreamResponse:
        """Pass the answer on, with ``tag`` (the live-reload script, or nothing) after its body."""
        from devstack.proxy.forward import start_response

        headers = exchange.headers()
        status, reason = exchange.status, exchange.reason.decode("latin-1") or None
        if tag and (length := headers.get(_CONTENT_LENGTH, "")).isdigit():
            headers[_CONTENT_LENGTH] = str(int(length) + len(tag))
        try:
            if exchange.is_complete and exchange.error is None:
                body = b"".join(exchange.chunks) + tag
                return await start_response(request, status, reason, headers, body)
            response = await start_response(request, status, reason, headers, None)
            await _stream(request, service, response, connection, exchange, tag)
            return response
        except ConnectionResetError as exc:
            raise failure_for(exc, service, Stage.DELIVERING) from exc
        finally:
            self._release(connection, exchange, sending)

    def _release(
        self, connection: Connection, exchange: _Exchange, sending: asyncio.Task[None] | None
    ) -> None:
        is_sent = sending is None or (sending.done() and not sending.cancelled()
                                      and sending.exception() is None)  # fmt: skip
        if sending is not None and not sending.done():
            sending.cancel()
        self.put_back(connection, exchange, is_reusable=is_sent)

    def put_back(self, connection: Connection, exchange: Exchange, *, is_reusable: bool) -> None:
        """``exchange`` is over: pool the connection when its answer was read whole, else
        close it."""
        connection.exchange = None
        if connection.is_lost or not exchange.is_complete or not is_reusable:
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
    connection: Connection,
    exchange: _Exchange,
    tag: bytes,
) -> None:
    try:
        while chunk := await _next_chunk(connection, exchange):
            await response.write(chunk)
        if tag:
            await response.write(tag)
    except ConnectionLost as exc:
        # Too late for an error page: cut the client off so it sees the answer is incomplete.
        logger.info("%s broke off its answer to %s %s: %s", service, request.method,
                    request.path, exc)  # fmt: skip
        if request.transport is not None:
            request.transport.close()
        return
    await response.write_eof()


def is_open_event_stream(exchange: Exchange) -> bool:
    """An event stream under way, its length unknown: it can end as a complete answer."""
    if not exchange.has_headers or exchange.is_complete or exchange.error is not None:
        return False
    content_type = b""
    for name, value in exchange.raw_headers:
        lower = name.lower()
        if lower == b"content-length":
            return False
        if lower == b"content-type":
            content_type = value
    return content_type.split(b";")[0].strip().lower() == b"text/event-stream"


def _live_tag(exchange: _Exchange, service: str) -> bytes:
    """:func:`devstack.proxy.live.injection.tag_for` on the answer's raw headers."""
    content_type = encoding = b""
    for name, value in exchange.raw_headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower == b"content-encoding":
            encoding += value
    return injection.tag_for(exchange.status, content_type, encoding,
                             is_head=exchange.is_head, service=service)  # fmt: skip


async def _next_chunk(connection: Connection, exchange: _Exchange) -> bytes:
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
    if exchange.buffered < HIGH_WATER // 2:
        connection.resume_reading()  # the relay took chunks: read from the service again
    return chunk


async def _send_body(
    connection: Connection, body: RequestBody, is_chunked: bool, progress: Callable[[], None]
) -> None:
    transport = connection.transport
    assert transport is not None
    async for chunk in body.chunks(progress):
        if connection.is_lost:
            raise ConnectionLost()
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
