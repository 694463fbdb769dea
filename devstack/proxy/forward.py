"""The full proxy's side of forwarding, on aiohttp's objects: what goes to the service and
what comes back to the client.

- :func:`upstream_headers`: the headers a service receives, by the rules of
  :mod:`devstack.proxy.headers`.
- :class:`RequestBody` is read only when the service asks for it, so a request whose body has
  not started can still be retried.
- :func:`start_response` passes a service's status and headers on as they are
  (:class:`ProxiedResponse`).

The request itself travels on :class:`devstack.proxy.upstream.pool.PooledUpstream`; what can
fail on the way is :mod:`devstack.proxy.failures`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

from devstack.proxy.headers import request_headers

_EXPECT = istr("Expect")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
    """The request headers a service receives, as :func:`devstack.proxy.headers.request_headers`
    makes them from the client's, with ``X-Forwarded-*`` describing the real client."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return CIMultiDict(
        request_headers(
            request.headers.items(),
            client=str(peer[0]) if peer else "",
            host=request.headers.get(hdrs.HOST, ""),
            prefix=prefix,
        )
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
    await response.prepare(request)
    if body is not None:
        await response.write_eof(body)
    return response
