"""A service's answer written straight to the client of the fast lane
(:mod:`devstack.proxy.fastlane`), as its :class:`devstack.proxy.upstream.connection.Connection`
reports it. The client side is the small :class:`Front` protocol, which the fast lane's
connections implement; this module does not import the fast lane.

Up to :data:`SMALL_BODY_BYTES` (by Content-Length) the head and the body leave in one write (one TLS
record); anything longer, or without a length, is streamed as it arrives (re-chunked when it has
no length), reading from the service only as fast as the client takes it. The answer's headers
pass as :func:`devstack.proxy.headers.response_headers_bytes` leaves them; ``Date`` and
``Server`` are added when missing, as aiohttp does on the full proxy.

An HTML page gets the live-reload tag after its body when the rules of
:mod:`devstack.proxy.live.injection` allow (decided in :meth:`Relay.headers_arrived` from headers
it reads anyway): its Content-Length grows by the tag's length, or the tag is one more chunk.

Failures before anything reached the client are answered with the proxy's pages (504 when no
answer came in time, 502 for a broken one: :func:`devstack.proxy.failures.failure_for` says
which), or handed to the full proxy when a pooled connection turns out closed; after that the
client is cut off so it sees the answer is incomplete.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Protocol

from devstack.proxy import pages
from devstack.proxy.failures import ConnectionLost, Stage, failure_for
from devstack.proxy.headers import response_headers_bytes
from devstack.proxy.live import injection
from devstack.proxy.live.script import SCRIPT_HTML
from devstack.proxy.stamps import SERVER_LINE, date_line
from devstack.proxy.upstream.connection import Connection, Exchange

logger = logging.getLogger(__name__)

SMALL_BODY_BYTES = 64 * 1024
"""Answers up to this size (by Content-Length) reach the client in one write."""

_NO_BODY_STATUSES = frozenset({204, 304})


class Front(Protocol):
    """The client's connection, as a :class:`Relay` writes an answer to it
    (:class:`devstack.proxy.fastlane.FastPath`)."""

    is_writing_paused: bool
    """The client's transport asked to stop writing: stop reading the service."""
    accept: str
    """The request's ``Accept`` header, to pick the kind of failure page."""

    @property
    def transport(self) -> asyncio.Transport: ...

    @property
    def upstream_timeout(self) -> float:
        """How long the service may stay silent, for the 504 page."""
        ...

    def request_line(self) -> str: ...

    def answered(self) -> None:
        """The whole answer (or a failure page) was written: take the next request."""

    def hand_over_request(self) -> None:
        """Give the request to the full proxy: nothing of its answer reached the client."""

    def release(self, connection: Connection, relay: Relay, *, is_reusable: bool) -> None:
        """The relay is done with the service's connection: pool it, or close it."""


class Relay(Exchange):
    """One answer, written to the client as the service's connection reports it."""

    __slots__ = ("_body", "_connection", "_front", "_head", "_is_chunked", "_is_live",
                 "_is_streamed", "_tag", "connecting", "service")  # fmt: skip

    def __init__(self, front: Front, service: str, is_head: bool, *, is_live: bool) -> None:
        """``is_live``: the route's ``live_reload`` (its HTML pages may get the script)."""
        super().__init__(is_head=is_head)
        self._front = front
        self.service = service
        self._is_live = is_live
        self._tag = b""
        """Written after the body: the live-reload tag, or nothing."""
        self._connection: Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self._head: list[bytes] = []
        self._body: list[bytes] = []
        self._is_streamed = False
        self._is_chunked = False

    def send(self, connection: Connection, request_head: bytes) -> None:
        self._connection = connection
        connection.taken(self)
        if connection.is_lost or connection.transport is None:
            self.fail(ConnectionLost())
            return
        connection.transport.write(request_head)

    # what the connection reports

    def headers_arrived(self) -> None:
        status = self.status
        head = self._head
        head.append(_status_line(status, self.reason))
        length: int | None = None
        length_at = 0
        content_type = encoding = b""
        has_date = has_server = False
        for name, value in response_headers_bytes(self.raw_headers):
            lower = name.lower()
            if lower == b"content-length":
                length = int(value) if value.isdigit() else None
                length_at = len(head) + 2  # where its value lands in ``head``
            elif lower == b"content-type":
                content_type = value
            elif lower == b"content-encoding":
                encoding += value
            elif lower == b"date":
                has_date = True
            elif lower == b"server":
                has_server = True
            head += (name, b": ", value, b"\r\n")
        if not has_date:
            head.append(date_line())
        if not has_server:
            head.append(SERVER_LINE)
        if self._is_live and content_type:
            self._add_tag(content_type, encoding, length, length_at)
        has_body = not self.is_head and status not in _NO_BODY_STATUSES
        if has_body and (length is None or length > SMALL_BODY_BYTES):
            self._is_streamed = True
            if length is None:
                self._is_chunked = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            head.append(b"\r\n")
            self._front.transport.write(b"".join(head))
        else:
            head.append(b"\r\n")

    def _add_tag(self, content_type: bytes, encoding: bytes, length: int | None,
                 length_at: int) -> None:  # fmt: skip
        """Decide whether the live-reload tag follows the body; if it does, the Content-Length
        (whose value is at ``length_at`` in the head) grows by its length."""
        tag = injection.tag_for(self.status, content_type, encoding, is_head=self.is_head,
                                service=self.service)  # fmt: skip
        self._tag = tag
        if tag and length is not None:
            self._head[length_at] = b"%d" % (length + len(tag))

    def body_arrived(self, connection: Connection, chunk: bytes) -> None:
        if not self._is_streamed:
            self._body.append(chunk)
            return
        transport = self._front.transport
        if self._is_chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        if self._front.is_writing_paused:
            connection.pause_reading()

    def completed(self) -> None:
        front = self._front
        tag = self._tag
        if self._is_streamed:
            if self._is_chunked:
                if tag:
                    front.transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tag), tag))
                else:
                    front.transport.write(b"0\r\n\r\n")
            elif tag:
                front.transport.write(tag)
        else:
            front.transport.write(b"".join(self._head + self._body) + tag)
        self._release(is_reusable=True)
        front.answered()

    def fail(self, error: BaseException) -> None:
        if self.is_complete or self.error is not None:
            return
        self.error = error
        if self.connecting is not None:
            self.connecting.cancel()
        connection = self._connection
        self._release(is_reusable=False)
        front = self._front
        if self._is_streamed or self.has_headers:
            # Too late for an error page: cut the client off so it sees the answer is incomplete.
            logger.info("%s broke off its answer to %s: %s", self.service,
                        front.request_line(), error)  # fmt: skip
            front.transport.close()
            return
        is_stale = connection is not None and connection.is_reused and not self.raw_headers
        if is_stale and not isinstance(error, TimeoutError):
            front.hand_over_request()  # a pooled connection the service had closed: go fresh
            return
        failure = failure_for(error, self.service, Stage.ANSWERING, limit=front.upstream_timeout)
        tail = SCRIPT_HTML if self._is_live else ""
        answer = pages.failure_answer(failure, front.accept, tail=tail)
        assert answer is not None
        front.transport.write(_page_bytes(*answer))
        front.answered()

    # what the client side reports

    def time_out(self) -> None:
        self.fail(TimeoutError())

    def resume(self) -> None:
        if self._connection is not None:
            self._connection.resume_reading()

    def abandon(self) -> None:
        """The client left: the service's connection cannot be reused unless its answer is
        all read already."""
        if self.connecting is not None:
            self.connecting.cancel()
        if not self.is_complete:
            self.error = ConnectionResetError("the client left")
            self._release(is_reusable=False)

    def _release(self, *, is_reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._front.release(connection, self, is_reusable=is_reusable)


def _page_bytes(status: int, content_type: str, body: bytes) -> bytes:
    lines = [_status_line(status, b"").rstrip()]
    lines.append(b"Content-Type: %s; charset=utf-8" % content_type.encode())
    lines.append(b"Content-Length: %d" % len(body))
    lines += [b"%s: %s" % (k.encode(), v.encode()) for k, v in pages.PAGE_HEADERS.items()]
    return b"\r\n".join(lines) + b"\r\n" + date_line() + SERVER_LINE + b"\r\n" + body


def _status_line(status: int, reason: bytes) -> bytes:
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)
