"""The proxy's own refusals: requests it answers itself instead of passing them on.

A request is refused by the rules of :mod:`devstack.proxy.target` (raised as
:class:`devstack.proxy.target.BadRequest`), or earlier by aiohttp's parser when its head breaks
the limits or the framing. Both end the same way: a page of :mod:`devstack.proxy.pages` (HTML or
JSON by ``Accept``, ``X-Devstack: proxy``) with ``Connection: close``, since the rest of the
connection cannot be trusted, and one debug line, never a traceback.

:class:`FrontDoorServer` is aiohttp's server with the head limits of
:mod:`devstack.proxy.target` and with parser errors answered here: aiohttp's own handling would
answer 400 whatever the error, and print a traceback for each.
"""

from __future__ import annotations

import asyncio
import html
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from yarl import URL

from devstack.proxy import pages
from devstack.proxy.target import (
    ALLOWED_METHODS,
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_REQUEST_LINE_BYTES,
    BadRequest,
    check_message_framing,
)

logger = logging.getLogger(__name__)

_PARSER_LIMITS: dict[str, Any] = {
    # aiohttp measures the request-target only; one byte more than the line's limit keeps its
    # error apart from a header's (``LineTooLong`` carries the limit it broke). A longer line
    # with a shorter target is refused by target.parse_target.
    "max_line_size": MAX_REQUEST_LINE_BYTES + 1,
    "max_field_size": MAX_FIELD_BYTES,
    "max_headers": MAX_FIELDS,
}


LINGER_SECONDS = 5.0
"""After answering a request whose body was not read (a refusal), how long the rest of that
body is read and dropped before the connection closes, so that the client reads the answer
instead of a reset (nginx's ``lingering_timeout``; aiohttp's default is 10 s)."""


def refusal_page(request: web.BaseRequest, refused: BadRequest) -> web.Response:
    """The answer to a refused request; the connection closes after it."""
    title = http.HTTPStatus(refused.status).phrase
    body = f"<p>{html.escape(refused.message)}.</p>"
    response = pages.page(request, refused.status, title, body, {"error": refused.message})
    if refused.allow is not None:
        response.headers["Allow"] = refused.allow
    response.headers["Connection"] = "close"  # said even to HTTP/1.0, where it is the default
    response.force_close()
    if request.method == "CONNECT":
        # aiohttp's pure-Python parser reads everything after a CONNECT's head as its tunnel,
        # a body that never ends: the server would wait for it (its lingering close) instead
        # of answering and closing. The tunnel is never opened, so it has ended.
        request.content.feed_eof()
    logger.debug("refused %s %.100s: %d %s", request.method, request.raw_path, refused.status,
                 refused.message)  # fmt: skip
    return response


def options_answer() -> web.Response:
    """``OPTIONS *``: what the proxy allows, answered by itself."""
    return web.Response(status=200, headers={"Allow": ALLOWED_METHODS, **pages.PAGE_HEADERS})


def parser_refusal(error: HttpProcessingError) -> BadRequest:
    """What aiohttp's parser refused, as the status the rules of target.py give it."""
    if isinstance(error, LineTooLong):
        if error.args[1] == MAX_FIELD_BYTES:
            return BadRequest(431, f"a header field is longer than {MAX_FIELD_BYTES} bytes")
        return BadRequest(414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES} bytes")
    if isinstance(error, BadHttpMessage) and "too many headers" in error.message.lower():
        return BadRequest(431, f"the request has more than {MAX_FIELDS} header fields")
    return BadRequest(400, f"malformed request: {error.message}")


class _FrontDoorHandler(web.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            return refusal_page(request, parser_refusal(exc))
        return super().handle_error(request, status, exc, message)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _framing_checked(handler: Handler) -> Handler:
    """``handler``, behind the framing rules of target.py: whatever aiohttp's parser (C or
    pure Python) let through is checked again before anything is routed or read."""

    async def checked(request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        try:
            check_message_framing(
                request.version,
                headers.getall(hdrs.TRANSFER_ENCODING, ()),
                headers.getall(hdrs.CONTENT_LENGTH, ()),
            )
        except BadRequest as refused:
            return refusal_page(request, refused)
        return await handler(request)

    return checked


class FrontDoorServer(web.Server):
    """aiohttp's low-level server with the head limits and framing rules of target.py, and
    parser errors answered by :func:`refusal_page`."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        kwargs.setdefault("lingering_time", LINGER_SECONDS)
        super().__init__(_framing_checked(handler), **_PARSER_LIMITS, **kwargs)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        try:
            return super()._make_request(message, payload, protocol, writer, task)
        except (ValueError, AttributeError):
            # A request aiohttp's parser let through but cannot make a request of fails here,
            # and aiohttp then leaves the connection open with no answer, for good: an
            # absolute-form target whose host yarl cannot decode (``https://xn--a.example/``,
            # bad punycode), a ``CONNECT`` with no target at all (llhttp reads ``CONNECT \r\n``
            # as HTTP/0.9, with no URL). The rules read the target from the raw request line
            # anyway (target.py refuses or routes it), so the request is built without the
            # parsed URL.
            plain = message._replace(url=URL.build(path="/"))
            return super()._make_request(plain, payload, protocol, writer, task)

    def __call__(self) -> web.RequestHandler:
        return _FrontDoorHandler(self, loop=self._loop, **self._kwargs)
