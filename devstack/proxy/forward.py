"""The upstream leg of the proxy: one request in, the same request out to a service on loopback,
its response streamed back. Nothing is buffered whole and nothing is decoded or re-encoded.

The leg sits behind the small :class:`Upstream` protocol so a leaner client can replace the
aiohttp ``ClientSession`` one (:class:`SessionUpstream`) without touching routing or pages.
Header rules live here and are shared by every leg: :func:`upstream_headers` and
:func:`downstream_headers`.

Failures are raised as :class:`ForwardError` subclasses;
:func:`devstack.proxy.pages.status_for` is the one place that turns them into statuses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from devstack.status import ServiceStatus

logger = logging.getLogger(__name__)

HOP_BY_HOP_HEADERS = frozenset(
    {
        # RFC 9110 section 7.6.1: Connection and the fields it is known to carry.
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        # Hop-by-hop since RFC 2616 section 13.5.1; still removed by Caddy, nginx and Go.
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
    }
)
"""Headers that describe one connection and never cross the proxy (RFC 9110 section 7.6.1),
in lower case; any header named in ``Connection`` is dropped as well."""

HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP_HEADERS)
""":data:`HOP_BY_HOP_HEADERS` as bytes, for the legs that work on raw headers."""

FORWARDED_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"}
)
"""Set by the proxy alone: values a client sends are dropped, never trusted or appended to."""

_NOT_FORWARDED = HOP_BY_HOP_HEADERS | FORWARDED_HEADERS | {"expect"}
"""``Expect: 100-continue`` is answered by the proxy itself when it starts reading the body."""

SMALL_BODY_BYTES = 64 * 1024
"""Responses up to this size (by Content-Length) are sent to the client in one write."""

_EXPECT = istr("Expect")
_CONNECTION = istr("Connection")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ForwardError(Exception):
    """A request could not be forwarded; ``service`` names where it was going."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service}: {detail}")
        self.service = service
        self.detail = detail


class ServiceUnavailable(ForwardError):
    """The service is not serving: not running (crashed, failed, stopped, done) or still not
    ready after ``proxy.wait_seconds``."""

    def __init__(self, status: ServiceStatus, detail: str) -> None:
        super().__init__(status.name, detail)
        self.status = status


class UpstreamRefused(ForwardError):
    """Nothing accepted the connection on the service's port."""


class UpstreamTimeout(ForwardError):
    """The service accepted the request but did not answer in time."""


class UpstreamBroken(ForwardError):
    """The service closed the connection or answered with something that is not HTTP."""


class ClientGone(ForwardError):
    """The client went away before the answer was delivered."""


class RequestBody:
    """The client's body as an async iterator that is read only when the upstream asks for it.

    Until then the request can still be retried elsewhere (``is_started`` is false); a client
    that sent ``Expect: 100-continue`` is told to go on only at that moment. ``progress`` is
    called per chunk so the upstream deadline measures silence, not upload time.
    """

    __slots__ = ("_request", "is_started")

    def __init__(self, request: web.BaseRequest) -> None:
        self._request = request
        self.is_started = False

    async def chunks(self, progress: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
        self.is_started = True
        request = self._request
        if request.headers.get(_EXPECT, "").lower() == "100-continue" and request.writer:
            await request.writer.write(_CONTINUE)
        async for chunk in request.content.iter_any():
            if progress is not None:
                progress()
            yield chunk


class Upstream(Protocol):
    """One way to talk to services on loopback; holds a connection pool shared by all requests."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def forward(
        self,
        request: web.BaseRequest,
        service: str,
        port: int,
        path_qs: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> web.StreamResponse:
        """Send the request to ``127.0.0.1:port``, stream the answer to the client and return
        the response object; raise a :class:`ForwardError` when that fails."""
        ...


def upstream_headers(request: web.BaseRequest, *, prefix: str | None) -> CIMultiDict[str]:
    """The request headers a service receives: the browser's own (Host included) minus
    hop-by-hop ones, plus ``X-Forwarded-*`` describing the real client."""
    incoming = request.headers
    drop = _NOT_FORWARDED
    if _CONNECTION in incoming:
        drop = drop | named_in_connection(incoming.getall(_CONNECTION))
    headers: CIMultiDict[str] = CIMultiDict(
        [(name, value) for name, value in incoming.items() if name.lower() not in drop]
    )
    host = incoming.get("Host", "")
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer:
        headers["X-Forwarded-For"] = peer[0]
    headers["X-Forwarded-Proto"] = "https"
    if host:
        headers["X-Forwarded-Host"] = host
    if prefix:
        headers["X-Forwarded-Prefix"] = prefix
    return headers


def downstream_headers(incoming: CIMultiDict[str] | CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """A service's response headers as the client receives them: every ``Set-Cookie`` kept
    separate, hop-by-hop ones removed, nothing added."""
    drop = HOP_BY_HOP_HEADERS
    if _CONNECTION in incoming:
        drop = drop | named_in_connection(incoming.getall(_CONNECTION))
    return CIMultiDict(
        [(name, value) for name, value in incoming.items() if name.lower() not in drop]
    )


def named_in_connection(values: Iterable[str]) -> frozenset[str]:
    """The header names a ``Connection`` header lists (lower case): hop-by-hop for this hop."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def named_in_connection_bytes(values: Iterable[bytes]) -> frozenset[bytes]:
    """:func:`named_in_connection` on raw header values."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


class SessionUpstream:
    """The upstream leg on one shared aiohttp ``ClientSession`` (pooled keep-alive connections,
    no cookie jar, no decompression, no headers of its own)."""

    def __init__(self, *, upstream_timeout: float, connect_timeout: float = 5.0) -> None:
        self._upstream_timeout = upstream_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("SessionUpstream.start() was not called")
        return self._session

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            read_bufsize=2**16,
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self,
        request: web.BaseRequest,
        service: str,
        port: int,
        path_qs: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> web.StreamResponse:
        url = URL(f"http://127.0.0.1:{port}{path_qs}", encoded=True)
        loop = asyncio.get_running_loop()
        limit = self._upstream_timeout
        try:
            async with asyncio.timeout_at(loop.time() + limit) as deadline:

                def progress() -> None:
                    deadline.reschedule(loop.time() + limit)

                data = body.chunks(progress) if body is not None else None
                upstream = await self.session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    compress=None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(service, f"no answer within {limit:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamRefused(service, f"nothing accepts connections on port {port}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamBroken(service, _describe(exc)) from exc
        try:
            return await relay(request, service, upstream)
        finally:
            upstream.release()


async def relay(
    request: web.BaseRequest, service: str, upstream: aiohttp.ClientResponse
) -> web.StreamResponse:
    """Send the upstream's answer to the client: small bodies in one write, the rest streamed
    chunk by chunk as it arrives (so server-sent events are not held back)."""
    headers = downstream_headers(upstream.headers)
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY_BYTES:
        try:
            body = await upstream.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamBroken(service, _describe(exc)) from exc
        return await start_response(request, upstream.status, upstream.reason, headers, body)
    response = await start_response(request, upstream.status, upstream.reason, headers, None)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        # Too late for an error page: cut the client off so it sees the answer is incomplete.
        logger.info("%s broke off its answer to %s %s: %s", service, request.method,
                    request.path, _describe(exc))  # fmt: skip
        if request.transport is not None:
            request.transport.close()
        return response
    except ConnectionResetError as exc:
        raise ClientGone(service, "client closed the connection") from exc
    await response.write_eof()
    return response


class ProxiedResponse(web.StreamResponse):
    """A service's answer passed on as it is; headers go out at once (an event stream's
    client sees them before the first event).

    aiohttp would add ``Content-Type: application/octet-stream`` to a body without one, which
    changes how browsers treat it (they sniff such bodies), so that default is taken back.
    This hooks aiohttp's private ``_prepare_headers``; a test guards it.
    """

    async def _prepare_headers(self) -> None:
        has_type = hdrs.CONTENT_TYPE in self.headers
        await super()._prepare_headers()
        if not has_type:
            self.headers.popall(hdrs.CONTENT_TYPE, None)


class WholeProxiedResponse(ProxiedResponse):
    """A small answer: status line, headers and body leave in one write."""

    _send_headers_immediately = False


async def start_response(
    request: web.BaseRequest,
    status: int,
    reason: str | None,
    headers: CIMultiDict[str],
    body: bytes | None,
) -> web.StreamResponse:
    """Send status and headers to the client, with the whole ``body`` when it is given (the
    caller streams the body otherwise)."""
    kind = ProxiedResponse if body is None else WholeProxiedResponse
    response = kind(status=status, reason=reason, headers=headers)
    try:
        await response.prepare(request)
        if body is not None:
            await response.write_eof(body)
    except ConnectionResetError as exc:
        raise ClientGone("client", "client closed the connection") from exc
    return response


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
