"""What forwarding a request means, shared by both lanes of the proxy and the upstream pool:
the header rules, the failures, the client's body and the response that passes an answer on.

- Header rules: which request headers a service receives (:func:`upstream_headers`, and the
  byte-level sets the fast lane applies to raw heads); response headers are filtered by
  :func:`devstack.proxy.upstream.connection.answer_headers`.
- Failures are raised as :class:`ForwardError` subclasses;
  :func:`devstack.proxy.pages.status_for` is the one place that turns them into statuses.
- :class:`RequestBody` is read only when the service asks for it, so a request whose body has
  not started can still be retried.
- :func:`start_response` passes a service's status and headers on as they are
  (:class:`ProxiedResponse`).

The request itself travels on :class:`devstack.proxy.upstream.pool.PooledUpstream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

from devstack.status import ServiceStatus

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
""":data:`HOP_BY_HOP_HEADERS` as bytes, for the fast lane and the upstream connection, which work
on raw headers."""

FORWARDED_HEADERS = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"}
)
"""Set by the proxy alone: values a client sends are dropped, never trusted or appended to."""

_NOT_FORWARDED = HOP_BY_HOP_HEADERS | FORWARDED_HEADERS | {"expect"}
"""``Expect: 100-continue`` is answered by the proxy itself when it starts reading the body."""

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
    """An answer already read whole: status line, headers and body leave in one write."""

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
