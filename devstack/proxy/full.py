"""The full proxy: every request the fast lane does not answer itself, on aiohttp's server.

:class:`devstack.proxy.server.Proxy` serves with its fast lane first and loads this module
(aiohttp, about 150 ms of imports) behind it: the fast lane hands a connection over here, and
the doorway sends plain HTTP here, once it has loaded (they wait until then). What it answers:
requests the fast lane refuses to parse itself, WebSockets (:mod:`devstack.proxy.websocket`),
request bodies paced by :class:`devstack.proxy.body.PacedBody`, the failure pages
(:mod:`devstack.proxy.pages`), ``/_devstack/`` (:mod:`devstack.proxy.live`), the access log,
and the redirect of plain HTTP to https.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import istr

from devstack.manifest.spec import StackSpec
from devstack.proxy import pages, websocket
from devstack.proxy.body import PacedBody
from devstack.proxy.failures import ForwardError, ServiceUnavailable, UpstreamRefused
from devstack.proxy.forward import upstream_headers
from devstack.proxy.live import endpoint
from devstack.proxy.live.hub import Hub
from devstack.proxy.live.script import SCRIPT_HTML
from devstack.proxy.refusal import FrontDoorServer, options_answer, refusal_page
from devstack.proxy.routing import Routed, RouteTable
from devstack.proxy.static import full as static
from devstack.proxy.target import BadRequest, check_framing
from devstack.proxy.upstream.pool import PooledUpstream
from devstack.status import ServiceDirectory, ServiceState, ServiceStatus

if TYPE_CHECKING:
    from devstack.proxy.timeouts import ProxyTimeouts

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("devstack.access")

SERVICE_KEY = web.RequestKey("devstack_service", str)
"""Which service (or ``static``) answered a request, for the access log."""
REFUSAL_GRACE_SECONDS = 1.0
"""How long a refused connection waits for the supervisor to notice the service went away."""
REFUSAL_POLL_SECONDS = 0.02
_HOST = istr("Host")
_TRANSFER_ENCODING = istr("Transfer-Encoding")


class FullProxy:
    """aiohttp's servers for HTTPS (what the fast lane hands over) and for plain HTTP (the
    redirect), with their handlers, the WebSocket client and the live-reload hub."""

    def __init__(
        self,
        spec: StackSpec,
        table: RouteTable,
        directory: ServiceDirectory,
        upstream: PooledUpstream,
        timeouts: ProxyTimeouts,
        port: Callable[[], int],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """``port``: the proxy's port (known once it listens); ``spawn``: runs a task the proxy
        cancels when it stops."""
        self._spec = spec
        self._table = table
        self._directory = directory
        self._upstream = upstream
        self._timeouts = timeouts
        self._port = port
        self._spawn = spawn
        self.hub = Hub(directory, spec.services, table)
        self.sockets = websocket.OpenSockets()
        self._ws_session: aiohttp.ClientSession | None = None
        self._http_servers: list[asyncio.Server] = []
        self.https = self._https_server()
        self.redirector = FrontDoorServer(
            self._redirect, access_log=None, keepalive_timeout=timeouts.first_byte_seconds
        )

    @property
    def port(self) -> int:
        return self._port()

    async def start(self, http_listeners: list[socket.socket]) -> None:
        """Serve the plain-HTTP listeners (redirects), and start telling pages what happens."""
        loop = asyncio.get_running_loop()
        self._ws_session = websocket.client_session()
        for sock in http_listeners:
            self._http_servers.append(await loop.create_server(self.redirector, sock=sock))
        self._spawn(self.hub.follow())

    async def close_hub(self) -> None:
        await self.hub.close()

    async def stop(self) -> None:
        """Close every connection (open ones get ``shutdown_seconds`` to finish)."""
        for server in self._http_servers:
            server.close()
        await self.https.shutdown(self._timeouts.shutdown_seconds)
        await self.redirector.shutdown(self._timeouts.shutdown_seconds)
        for server in self._http_servers:
            await server.wait_closed()
        self._http_servers = []

    async def close_client(self) -> None:
        if self._ws_session is not None:
            await self._ws_session.close()
            self._ws_session = None

    def _https_server(self) -> web.Server:
        # Whether to write the access log is decided here, once: nothing per request when off.
        logged = access_logger.isEnabledFor(logging.DEBUG)
        return FrontDoorServer(
            self._handle_logged if logged else self._handle,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self._timeouts.idle_seconds,
        )

    async def _redirect(self, request: web.BaseRequest) -> web.StreamResponse:
        """Plain HTTP: send the client to the same URL over https on the proxy's port, and
        close the connection."""
        routed = self._admit(request)
        if isinstance(routed, web.StreamResponse):
            return routed
        netloc = routed.host if self.port == 443 else f"{routed.host}:{self.port}"
        path_qs = "/" if routed.target.is_asterisk else routed.target.path_qs
        location = f"https://{netloc}{path_qs}"
        response = web.Response(
            status=308, text=f"Use HTTPS: {location}\n", headers={"Location": location}
        )
        response.force_close()
        return response

    async def _handle_logged(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await self._handle(request)
        except asyncio.CancelledError:
            access_logger.debug("%s %s client gone", request.method, request.path)
            raise
        access_logger.debug(
            "%s %s %d %s %.1fms",
            request.method,
            request.path,
            response.status,
            request.get(SERVICE_KEY, "-"),
            (loop.time() - started) * 1000,
        )
        return response

    def _admit(self, request: web.BaseRequest) -> Routed | web.StreamResponse:
        """The request's target and Host checked and resolved (:meth:`RouteTable.route`, the
        rules the fast lane follows too), or the page refusing it."""
        hosts = request.headers.getall(_HOST, ())
        host = hosts[0] if len(hosts) == 1 else None
        try:
            check_framing(
                request.version, has_transfer_encoding=_TRANSFER_ENCODING in request.headers
            )
            routed = self._table.route(request.method, request.raw_path, host)
        except BadRequest as refused:
            return refusal_page(request, refused)
        if not routed.is_allowed:
            return pages.forbidden_host_page(request, routed.host)
        return routed

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        routed = self._admit(request)
        if isinstance(routed, web.StreamResponse):
            return routed
        if routed.target.is_asterisk:
            return options_answer()
        match = routed.match
        if match is None:
            return pages.not_found_page(request, self._table)
        target = match.route.target
        if target.is_reserved:
            request[SERVICE_KEY] = "devstack"
            return await endpoint.answer(request, match.path, hub=self.hub, table=self._table,
                                         port=self.port)  # fmt: skip
        if target.static is not None:
            request[SERVICE_KEY] = "static"
            return await static.serve(request, target.static, match.path, routed.target,
                                      live_reload=target.live_reload)  # fmt: skip
        service = target.service or ""
        request[SERVICE_KEY] = service
        try:
            return await self._forward(request, service, routed)
        except asyncio.CancelledError:
            logger.debug("client left before %s answered %s %s", service, request.method,
                         request.path)  # fmt: skip
            raise
        except BadRequest as refused:
            return refusal_page(request, refused)
        except ForwardError as failure:
            tail = SCRIPT_HTML if target.live_reload else ""
            response = pages.failure_page(request, failure, tail=tail)
            if response is None:
                logger.debug("%s %s: %s", request.method, request.path, failure)
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=499)
            return response

    async def _forward(
        self, request: web.BaseRequest, service: str, routed: Routed
    ) -> web.StreamResponse:
        assert routed.match is not None
        status = await self._serving(service)
        path_qs = routed.upstream_path
        headers = upstream_headers(request, prefix=routed.match.stripped_prefix)
        if routed.target.host is not None:
            # The absolute form: its authority is the host (RFC 9112 section 3.2.2).
            authority = request.raw_path.split("/", 3)[2]
            headers[_HOST] = headers["X-Forwarded-Host"] = authority
        is_ws = websocket.is_upgrade(request)
        has_body = request.body_exists and not is_ws
        body = PacedBody(request, self._timeouts.body_pace) if has_body else None
        for attempt in (1, 2):
            try:
                if is_ws:
                    assert self._ws_session is not None
                    return await websocket.bridge(
                        request,
                        self._ws_session,
                        service=service,
                        port=status.port,
                        path_qs=path_qs,
                        headers=headers.copy(),
                        handshake_seconds=self._spec.proxy.upstream_timeout_seconds,
                        sockets=self.sockets,
                    )
                return await self._upstream.forward(
                    request, service, status.port, path_qs, headers, body,
                    live_reload=routed.match.target.live_reload,
                )  # fmt: skip
            except UpstreamRefused:
                if attempt == 2 or (body is not None and body.is_started):
                    raise
                logger.debug("%s refused a connection; waiting for it to be ready", service)
                status = await self._after_refusal(service, status)
            except ForwardError as failure:
                if body is not None and body.too_slow is not None:
                    raise body.too_slow from failure  # the client's fault, not the service's
                raise
        raise AssertionError("unreachable")

    async def _serving(self, service: str) -> ServiceStatus:
        """The service's status once it can take a request; waits while it is coming."""
        status = self._directory.status(service)
        if status.is_ready:
            return status
        return await self._wait_ready(service, status)

    async def _wait_ready(self, service: str, status: ServiceStatus) -> ServiceStatus:
        if status.state.is_coming or status.state is ServiceState.STOPPING:
            wait = self._spec.proxy.wait_seconds
            status = await self._directory.wait_ready(service, wait)
            if status.is_ready:
                return status
            if status.state.is_coming or status.state is ServiceState.STOPPING:
                raise ServiceUnavailable(status, f"still {status.state} after {wait:g} s")
        raise ServiceUnavailable(status, _why(status))

    async def _after_refusal(self, service: str, refused: ServiceStatus) -> ServiceStatus:
        """The service refused a connection while marked ready: it is probably restarting and
        the supervisor has not noticed yet. Give it a moment to update the status, then wait
        as for any starting service (or go to its new port)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REFUSAL_GRACE_SECONDS
        status = self._directory.status(service)
        while status == refused and loop.time() < deadline:
            # The directory offers no change notification; poll it for this short window.
            await asyncio.sleep(REFUSAL_POLL_SECONDS)
            status = self._directory.status(service)
        if status.is_ready:
            return status
        return await self._wait_ready(service, status)



def _why(status: ServiceStatus) -> str:
    text = f"{status.name} is {status.state}"
    if status.reason:
        text += f": {status.reason}"
    elif status.exit_code is not None:
        text += f" (exit code {status.exit_code})"
    return text

