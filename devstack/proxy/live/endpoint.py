"""The proxy's own paths under ``/_devstack/`` (:data:`devstack.proxy.routing.RESERVED_PREFIX`),
answered on every allowed host before any route:

- ``/_devstack/live.js``: the script (:mod:`.script`), with an ETag; browsers revalidate it
  (``Cache-Control: no-cache``) and get a 304 while it is unchanged.
- ``/_devstack/live``: the WebSocket that pages listen on (:class:`.hub.Hub`).

Both refuse cross-site use with a 403: the WebSocket only opens for a page of the proxy's own
origin (``Origin: https://<allowed host>:<proxy port>``; browsers always send Origin on a
WebSocket handshake, so a handshake without one is refused as well), and the script is refused
to a request whose Origin is another one, or that a browser marks ``Sec-Fetch-Site:
cross-site`` (a ``<script>`` tag sends no Origin). ``Cross-Origin-Resource-Policy:
same-origin`` asks browsers not to hand the script to other origins either. The Host header is
checked before this, as for every request (an allowed host only). The socket carries nothing
but the hub's events; what a page sends on it is ignored.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from devstack.proxy import pages
from devstack.proxy.live.hub import Hub
from devstack.proxy.live.script import SCRIPT_BYTES, SCRIPT_ETAG, SCRIPT_PATH, SOCKET_PATH
from devstack.proxy.routing import RouteTable, normalize_host

logger = logging.getLogger(__name__)

_SCRIPT_HEADERS = {
    hdrs.ETAG: SCRIPT_ETAG,
    hdrs.CACHE_CONTROL: "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Devstack": "proxy",
}


async def answer(
    request: web.BaseRequest, path: str, *, hub: Hub, table: RouteTable, port: int
) -> web.StreamResponse:
    """Answer a request for ``path`` (normalized) under the reserved prefix."""
    if path not in (SCRIPT_PATH, SOCKET_PATH):
        return pages.file_not_found_page(request)
    if request.method not in ("GET", "HEAD"):
        response = pages.page(request, 405, "Method not allowed",
                              "<p>Only GET and HEAD are served here.</p>",
                              {"error": f"{request.method} is not served at {path}"})  # fmt: skip
        response.headers[hdrs.ALLOW] = "GET, HEAD"
        return response
    origin = request.headers.get(hdrs.ORIGIN)
    if path == SOCKET_PATH:
        if origin is None or not is_own_origin(origin, table, port):
            return _cross_site(request, origin)
        return await hub.serve(request)
    is_cross_site = request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site"
    if is_cross_site or (origin is not None and not is_own_origin(origin, table, port)):
        return _cross_site(request, origin)
    return _script(request)


def is_own_origin(origin: str, table: RouteTable, port: int) -> bool:
    """``origin`` is ``https://<allowed host>:<port>`` (or without the port when it is 443)."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or 443
    except ValueError:
        return False
    if parts.scheme != "https" or not parts.hostname or origin_port != port:
        return False
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        return False
    return table.is_allowed(normalize_host(parts.hostname))


def _script(request: web.BaseRequest) -> web.Response:
    wanted = request.if_none_match
    if wanted is not None and any(tag.value in (SCRIPT_ETAG.strip('"'), "*") for tag in wanted):
        return web.Response(status=304, headers=_SCRIPT_HEADERS)
    return web.Response(body=SCRIPT_BYTES, content_type="text/javascript", charset="utf-8",
                        headers=_SCRIPT_HEADERS)  # fmt: skip


def _cross_site(request: web.BaseRequest, origin: str | None) -> web.Response:
    shown = origin or "(no Origin header)"
    logger.debug("refused %s %s from origin %s", request.method, request.path, shown)
    body = (
        "<p>devstack's live-reload script and socket serve only pages of this proxy's own "
        f"origin; this request came from <code>{html.escape(shown)}</code>.</p>"
    )
    return pages.page(request, 403, "Cross-site request refused", body,
                      {"error": f"cross-site request refused: {shown}"})  # fmt: skip
