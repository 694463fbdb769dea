"""The fast lane of the HTTPS front door: plain requests answered in protocol callbacks, with no
task, future or aiohttp object per request.

Every TLS connection starts on :class:`FastPath`. It takes a request when the request is plain:
HTTP/1.1 without a body, its whole head in hand, for an allowed host, routed to a service that
is ready or to a static folder.

- To a service: the head goes to a pooled connection of
  :class:`devstack.proxy.upstream.pool.PooledUpstream` in one write, rewritten as the rules of
  :mod:`devstack.proxy.headers` (as the full proxy); the answer comes back through
  :class:`devstack.proxy.relay.Relay`: up to ``SMALL_BODY_BYTES`` (by Content-Length) head and
  body in one write, anything else streamed as it arrives, with back-pressure.
- To a folder: a GET or HEAD for a file that is there is answered from
  :mod:`devstack.proxy.static` (its cache checked against the disk, the same rules as the full
  proxy): a small file's head and body in one write, a large one streamed with back-pressure
  (:class:`devstack.proxy.static.lane.FileStream`). ``Connection: close`` is honoured here.
  A request whose very head was answered before is answered again from memory while the files
  that answer rested on are unchanged (:meth:`devstack.proxy.static.cache.FileCache.recall`).

Everything else is *handed over*: the connection, with the bytes not answered yet, goes to
aiohttp's server (the full proxy of :mod:`devstack.proxy.server`) and stays there. That covers
bodies, WebSockets, forbidden hosts, unknown paths, services that are not ready, files that are
not there (404), other methods on files (405), heads that arrive in pieces (and their
deadline), HTTP/1.0, ``Connection: close`` to a service, a refused connection and a pooled
connection the service had closed. The client has received nothing of that request then, so
the full proxy answers as if it had come to it first.

Failures after the request went out are answered here: no answer in time is a 504 page, a
broken answer a 502 (:func:`devstack.proxy.pages.failure_answer`); an answer cut short after
its head cuts the client off.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import cast

import httptools

from devstack.proxy.failures import UpstreamRefused
from devstack.proxy.headers import named_in_connection, request_headers_bytes
from devstack.proxy.relay import Relay
from devstack.proxy.routing import Match, RouteTable
from devstack.proxy.static import lane as static_lane
from devstack.proxy.static.answer import answer_file
from devstack.proxy.static.cache import FILES, FileCache
from devstack.proxy.static.lane import FileStream
from devstack.proxy.static.locate import Found
from devstack.proxy.target import MAX_FIELD_BYTES, MAX_FIELDS, MAX_REQUEST_LINE_BYTES, BadRequest
from devstack.proxy.upstream.connection import Connection
from devstack.proxy.upstream.pool import PooledUpstream
from devstack.status import ServiceDirectory

logger = logging.getLogger(__name__)

_HANDED_OVER_HEADERS = frozenset({b"upgrade", b"expect", b"transfer-encoding"})
"""A request carrying one of these goes to the full proxy."""
_SHORT_HEAD = min(MAX_REQUEST_LINE_BYTES, MAX_FIELD_BYTES)
"""A head up to this size cannot break a line limit; a longer one goes to the full proxy, which
checks every limit (:mod:`devstack.proxy.refusal`)."""
_MAX_PENDING = 64 * 1024
"""Bytes of pipelined requests buffered while one is answered, before the client is paused."""


class FastLane:
    """What every fast-path connection shares: routes, statuses, the pool, the hand-over."""

    def __init__(
        self,
        table: RouteTable,
        directory: ServiceDirectory,
        pool: PooledUpstream,
        full_proxy: Callable[[], asyncio.Protocol],
        *,
        idle_seconds: float,
        full_ready: asyncio.Future[None] | None = None,
        full_wanted: asyncio.Event | None = None,
    ) -> None:
        """``full_proxy`` makes the protocol a connection is handed over to, once
        ``full_ready`` is done (the full proxy may still be loading when the fast lane serves;
        a connection handed over meanwhile waits, not read, and sets ``full_wanted``)."""
        self.table = table
        self.directory = directory
        self.pool = pool
        self.full_proxy = full_proxy
        self.full_ready = full_ready
        self.full_wanted = full_wanted
        self.idle_seconds = idle_seconds
        self.upstream_timeout = pool.upstream_timeout
        self.files: FileCache = FILES
        self.connections: set[FastPath] = set()
        self.handovers = 0
        """Connections handed over to the full proxy so far (for tests and diagnostics)."""
        self._all_closed: asyncio.Future[None] | None = None

    def protocol(self) -> FastPath:
        return FastPath(self)

    async def close(self, timeout: float) -> None:
        """Close every connection still on the fast lane (the proxy is stopping); those not
        closed after ``timeout`` seconds are aborted."""
        for connection in list(self.connections):
            connection.close()
        if not self.connections:
            return
        self._all_closed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._all_closed
        except TimeoutError:
            for connection in list(self.connections):
                connection.abort()

    def forget(self, connection: FastPath) -> None:
        self.connections.discard(connection)
        closed = self._all_closed
        if not self.connections and closed is not None and not closed.done():
            closed.set_result(None)


class FastPath(asyncio.Protocol):
    """One client connection while its requests are plain; the
    :class:`devstack.proxy.relay.Front` its relays write answers to."""

    def __init__(self, lane: FastLane) -> None:
        self.lane = lane
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer: bytes | None = None
        """The client's address, for ``X-Forwarded-For`` (asked for once, when needed)."""
        self._pending = b""
        """Bytes received and not parsed yet: the start of the next request."""
        self._head = b""
        """The head of the request being answered, for a hand-over."""
        self._relay: Relay | FileStream | None = None
        """The answer being written: a service's, or a file's body streamed."""
        self._is_waiting = False
        """Pending bytes are scheduled to be taken (after a pipelined answer)."""
        self._is_reading_paused = False
        self.is_writing_paused = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._is_whole = False
        self.accept = ""
        self._active_at = self._loop.time()
        self.deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.lane.connections.add(self)
        self.arm(self._active_at + self.lane.idle_seconds)

    def data_received(self, data: bytes) -> None:
        if self._relay is not None or self._is_waiting:
            self._pending += data
            if len(self._pending) > _MAX_PENDING and not self._is_reading_paused:
                self._is_reading_paused = True
                self.transport.pause_reading()
            return
        if self._pending:
            data, self._pending = self._pending + data, b""
        self._take(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.abandon()

    def pause_writing(self) -> None:
        self.is_writing_paused = True

    def resume_writing(self) -> None:
        self.is_writing_paused = False
        if self._relay is not None:
            self._relay.resume()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_message_complete(self) -> None:
        self._is_whole = True

    # requests

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def release(self, connection: Connection, relay: Relay, *, is_reusable: bool) -> None:
        self.lane.pool.put_back(connection, relay, is_reusable=is_reusable)

    @property
    def upstream_timeout(self) -> float:
        return self.lane.upstream_timeout

    def request_line(self) -> str:
        return self._head.partition(b"\r\n")[0].decode()

    def _take(self, data: bytes) -> None:
        """Answer the request at the start of ``data`` here, or hand the connection over."""
        end = data.find(b"\r\n\r\n")
        head = data[: end + 4]
        if end >= 0:
            recalled = self.lane.files.recall(self.lane.table, head)
            if recalled is not None:  # this very request was answered before: the same again
                self._head, self._pending = head, data[end + 4 :]
                static_lane.send_again(self, recalled)
                if not recalled.close:
                    self.answered()
                return
        if end < 0 or end > _SHORT_HEAD or not head.isascii():
            self._hand_over(data)
            return
        self._url, self._headers, self._is_whole = b"", [], False
        try:
            self._parser.feed_data(head)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):  # for the full proxy
            self._hand_over(data)
            return
        plain = self._plain_route() if self._is_whole else None
        if plain is None:
            self._hand_over(data)
            return
        match, routed_path, host, wants_close = plain
        self._head, self._pending = head, data[end + 4 :]
        if match.target.static is not None:
            if not self._send_file(match, wants_close):
                self.hand_over_request()
            return
        outgoing = None if wants_close else self._outgoing(match, routed_path, host)
        if outgoing is None:
            self.hand_over_request()
            return
        service, port, request_head, is_live = outgoing
        is_head = self._parser.get_method() == b"HEAD"
        relay = self._relay = Relay(self, service, is_head, is_live=is_live)
        now = self._loop.time()
        self.deadline = now + self.lane.upstream_timeout
        self.arm(self.deadline)
        connection = self.lane.pool.idle_connection(port)
        if connection is None:
            relay.connecting = self._loop.create_task(self._connect(relay, port, request_head))
        else:
            relay.send(connection, request_head)

    def _plain_route(self) -> tuple[Match, str, bytes, bool] | None:
        """``(match, the path to send on, Host, the client asked to close)`` when the parsed
        request is plain and routed to a service or a folder, else ``None``. The target and Host
        are checked and resolved as the full proxy does (:meth:`RouteTable.route`); whatever
        that refuses is the full proxy's to answer."""
        parser = self._parser
        if parser.get_http_version() != "1.1" or len(self._headers) > MAX_FIELDS:
            return None
        host, accept, wants_close = _plain_head(self._headers)
        if host is None:
            return None
        try:
            routed = self.lane.table.route(
                parser.get_method().decode(), self._url.decode(), host.decode()
            )
        except BadRequest:
            return None
        match = routed.match
        if match is None or match.target.is_reserved or routed.target.host is not None:
            return None
        self.accept = accept
        return match, routed.upstream_path, host, wants_close

    def _send_file(self, match: Match, wants_close: bool) -> bool:
        """Answer a GET or HEAD for a file that is there (:mod:`devstack.proxy.static`);
        ``False`` for anything else (other methods, missing files, folders without their slash):
        the full proxy answers those, with the same rules."""
        method = self._parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return False
        target = match.target
        assert target.static is not None
        is_head = method == b"HEAD"
        request = static_lane.file_request(self._headers, is_head=is_head)
        answer = answer_file(self.lane.files, target.static, match.path, request,
                             live_reload=target.live_reload)  # fmt: skip
        if isinstance(answer, Found):
            return False
        fd = None
        if answer.source is not None:
            fd = answer.source.open()
            if fd is None:  # changed since it was looked at: the full proxy looks again
                return False
        stream, recalled = static_lane.send(self, answer, fd, close=wants_close)
        if recalled is not None and answer.holder is not None and answer.basis is not None:
            self.lane.files.remember(self.lane.table, self._head, answer.holder, answer.basis,
                                     recalled)  # fmt: skip
        if stream is not None:
            self._relay = stream
        elif not wants_close:
            self.answered()
        return True

    def _outgoing(
        self, match: Match, path: str, host: bytes
    ) -> tuple[str, int, bytes, bool] | None:
        """``(service, port, head to send, the route's live_reload)`` when the service is ready,
        else ``None``."""
        assert match.target.service is not None
        status = self.lane.directory.status(match.target.service)
        if not status.is_ready:
            return None
        prefix = match.stripped_prefix
        forwarded = request_headers_bytes(self._headers, client=self._client(), host=host,
                                          prefix=prefix.encode() if prefix else None)  # fmt: skip
        lines = [b"%s %s HTTP/1.1" % (self._parser.get_method(), path.encode())]
        lines += [name + b": " + value for name, value in forwarded]
        lines.append(b"\r\n")
        return status.name, status.port, b"\r\n".join(lines), match.target.live_reload

    def _client(self) -> bytes:
        peer = self._peer
        if peer is None:
            address = self.transport.get_extra_info("peername")
            peer = self._peer = str(address[0]).encode() if address else b""
        return peer

    async def _connect(self, relay: Relay, port: int, request_head: bytes) -> None:
        try:
            connection = await self.lane.pool.connect(relay.service, port)
        except UpstreamRefused:
            if self._relay is relay:
                self.hand_over_request()
            return
        if self._relay is not relay:  # the client left meanwhile
            connection.close()
            return
        relay.connecting = None
        relay.send(connection, request_head)

    def answered(self) -> None:
        """The relay wrote the whole answer: take the next request."""
        self._relay = None
        self._active_at = self._loop.time()
        if self._is_reading_paused:
            self._is_reading_paused = False
            self.transport.resume_reading()
        if self._pending and not self._is_waiting:
            self._is_waiting = True
            self._loop.call_soon(self._take_pending)

    def _take_pending(self) -> None:
        self._is_waiting = False
        if self._relay is None and self._pending and not self.transport.is_closing():
            data, self._pending = self._pending, b""
            self._take(data)

    def hand_over_request(self) -> None:
        """Give the request being answered (nothing of it reached the client) to the full
        proxy, with the connection."""
        self._relay = None
        data, self._pending = self._head + self._pending, b""
        self._hand_over(data)

    def _hand_over(self, data: bytes) -> None:
        self._forget()
        self.lane.handovers += 1
        transport = self.transport
        if transport.is_closing():
            return
        ready = self.lane.full_ready
        if ready is not None and not ready.done():
            if not self._is_reading_paused:
                transport.pause_reading()
                self._is_reading_paused = True
            ready.add_done_callback(lambda _: self._switch(data))
            if self.lane.full_wanted is not None:
                self.lane.full_wanted.set()
            return
        self._switch(data)

    def _switch(self, data: bytes) -> None:
        """Give the connection, with ``data`` (what it sent and the fast lane did not answer),
        to the full proxy; closed instead when the proxy stopped before the full proxy served."""
        transport = self.transport
        if transport.is_closing():
            return
        ready = self.lane.full_ready
        if ready is not None and ready.cancelled():
            transport.close()
            return
        protocol = self.lane.full_proxy()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.is_writing_paused:
            protocol.pause_writing()
        if self._is_reading_paused:
            transport.resume_reading()
        if data:
            protocol.data_received(data)

    def _forget(self) -> None:
        self.lane.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = -math.inf  # never armed again

    # one timer per connection: the upstream deadline while a request waits, else idle

    def arm(self, when: float) -> None:
        """Make sure the timer fires by ``when`` (it is moved only ever earlier)."""
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        relay = self._relay
        if relay is not None and not relay.has_headers:
            if now >= self.deadline:
                relay.time_out()
            else:
                self.arm(self.deadline)
            return
        idle_until = (now if relay is not None else self._active_at) + self.lane.idle_seconds
        if now >= idle_until:
            logger.debug("closing a keep-alive connection idle for %g s", self.lane.idle_seconds)
            self.close()
        else:
            self.arm(idle_until)


def _plain_head(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str, bool]:
    """The Host header, Accept, and whether the client asks for the connection to close; Host
    is ``None`` when missing or repeated, or when the request is not plain (it upgrades, expects
    ``100 Continue`` or has a chunked body). The headers a service receives are
    :func:`devstack.proxy.headers.request_headers_bytes`."""
    host: bytes | None = None
    accept = b""
    wants_close = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            if host is not None:
                return None, "", False
            host = value
        elif lower == b"accept":
            accept = value
        elif lower in _HANDED_OVER_HEADERS:
            return None, "", False
        elif lower == b"connection":
            token = value.strip().lower()
            if token == b"close":  # the common values, without splitting a list
                wants_close = True
            elif token != b"keep-alive":
                named = named_in_connection((value,))
                if named & _HANDED_OVER_HEADERS:
                    return None, "", False
                wants_close = wants_close or b"close" in named
    return host, accept.decode(), wants_close
