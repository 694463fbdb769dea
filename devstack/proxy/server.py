"""The front door: one HTTPS port on loopback that routes every request of the stack.

Roles (after Caddy's reverse proxy):

- :class:`Proxy` owns the listening sockets; its :class:`devstack.proxy.doorway.Doorway` accepts
  connections and hands each one over with its first byte: ``0x16`` starts a TLS handshake and
  the connection goes to the HTTPS server; any other byte is plain HTTP sent to the HTTPS port by
  mistake, and gets a 308 redirect to the same URL over https. A client that connects and says
  nothing is dropped after a deadline.
- :mod:`devstack.proxy.fastlane` takes every TLS connection first and answers plain requests in
  protocol callbacks; anything else, and every request while the access log is on, is answered
  here (the full proxy, on aiohttp's server).
- :mod:`devstack.proxy.routing` decides where a request goes (pure).
- :class:`devstack.proxy.upstream.pool.PooledUpstream` carries it to the service (both lanes share
  its connections; :mod:`devstack.proxy.forward` holds the header rules and failures);
  :mod:`devstack.proxy.websocket` relays WebSockets; :mod:`devstack.proxy.static` serves folders.
- :mod:`devstack.proxy.pages` answers when something fails, with the status :func:`pages.status_for`
  picks.
- :mod:`devstack.proxy.live` makes browsers follow the stack: ``/_devstack/`` is answered here
  (the script and its WebSocket), the :class:`devstack.proxy.live.hub.Hub` tells connected pages
  to reload, and HTML pages of both lanes get the script (:mod:`devstack.proxy.live.injection`).

Requests to a service that is starting (or restarting) are held before their body is read,
until the service is ready or ``proxy.wait_seconds`` passed; a refused connection while the
service restarts is retried once after it is ready again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from multidict import istr

from devstack.manifest.spec import StackSpec
from devstack.proxy import departure, pages, static, websocket
from devstack.proxy.bind import Listeners, bind_proxy, origin
from devstack.proxy.body import PacedBody
from devstack.proxy.doorway import Doorway
from devstack.proxy.failures import ForwardError, ServiceUnavailable, UpstreamRefused
from devstack.proxy.fastlane import FastLane
from devstack.proxy.forward import upstream_headers
from devstack.proxy.live import endpoint
from devstack.proxy.live.hub import Hub
from devstack.proxy.live.script import SCRIPT_HTML
from devstack.proxy.refusal import FrontDoorServer, options_answer, refusal_page
from devstack.proxy.routing import Routed, RouteTable
from devstack.proxy.target import BadRequest, BodyPace, check_framing
from devstack.proxy.upstream.pool import PooledUpstream
from devstack.status import ServiceDirectory, ServiceState, ServiceStatus

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("devstack.access")

TLS_RECORD_HANDSHAKE = 0x16
SERVICE_KEY = web.RequestKey("devstack_service", str)
"""Which service (or ``static``) answered a request, for the access log."""
REFUSAL_GRACE_SECONDS = 1.0
"""How long a refused connection waits for the supervisor to notice the service went away."""
REFUSAL_POLL_SECONDS = 0.02
_HOST = istr("Host")
_TRANSFER_ENCODING = istr("Transfer-Encoding")


@dataclass(frozen=True)
class ProxyTimeouts:
    """Deadlines that keep slow or silent clients from holding sockets forever."""

    first_byte_seconds: float = 10.0
    """From accept to the first byte, and for the TLS handshake."""
    idle_seconds: float = 75.0
    """An idle keep-alive connection (or one that never finishes its headers) is closed."""
    body_pace: BodyPace = field(default_factory=BodyPace)
    """How slowly a request body may arrive (408 beyond)."""
    shutdown_seconds: float = 2.0


class Proxy:
    """The HTTPS reverse proxy, as an async context manager (``start()`` / ``stop()``)."""

    def __init__(
        self,
        spec: StackSpec,
        directory: ServiceDirectory,
        ssl_context: ssl.SSLContext,
        *,
        port: int | None = None,
        timeouts: ProxyTimeouts = ProxyTimeouts(),
        listeners: Listeners | None = None,
    ) -> None:
        """``listeners``: sockets bound beforehand (see :mod:`devstack.proxy.bind`); without them,
        ``start()`` binds ``port`` (default ``proxy.port``)."""
        self._spec = spec
        self._prebound = listeners
        self._directory = directory
        self._ssl_context = ssl_context
        self._wanted_port = spec.proxy.port if port is None else port
        self._timeouts = timeouts
        self._table = RouteTable.from_spec(spec)
        self._upstream = PooledUpstream(upstream_timeout=spec.proxy.upstream_timeout_seconds)
        self._hub = Hub(directory, spec.services, self._table)
        self._ws_session: aiohttp.ClientSession | None = None
        self._sockets = websocket.OpenSockets()
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._doorway = Doorway(timeouts.first_byte_seconds, self._hand_over)
        """Accepted connections waiting for their first byte, with their deadlines."""
        self._http_servers: list[asyncio.Server] = []
        self._port: int | None = None
        self._fast_lane: FastLane | None = None
        self._https = self._https_server()
        self._redirector = FrontDoorServer(
            self._redirect, access_log=None, keepalive_timeout=timeouts.first_byte_seconds
        )

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

    @property
    def table(self) -> RouteTable:
        return self._table

    @property
    def fast_lane(self) -> FastLane | None:
        """The fast lane for plain requests (:mod:`devstack.proxy.fastlane`), while running
        without the access log."""
        return self._fast_lane

    @property
    def awaiting_first_byte(self) -> int:
        """How many accepted connections have sent nothing yet (each is dropped when it says
        nothing for ``first_byte_seconds``)."""
        return self._doorway.waiting

    @property
    def hub(self) -> Hub:
        """The pages listening for live-reload events."""
        return self._hub

    def static_changed(self, root: Path, files: tuple[Path, ...]) -> None:
        """Files under ``root``, a static route's folder, changed: pages swap stylesheets or
        reload (:meth:`devstack.proxy.live.hub.Hub.static_changed`)."""
        self._hub.static_changed(root, files)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        return origin(self.port)

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind every ``proxy.bind`` address (raising :class:`PortError` at once when the port
        is taken) and start accepting."""
        self._https = self._https_server()  # logging is configured by now
        self._fast_lane = self._make_fast_lane()
        listeners = self._prebound or bind_proxy(self._spec, self._wanted_port)
        self._prebound = None
        self._listeners = listeners.https
        self._port = listeners.port
        loop = asyncio.get_running_loop()
        try:
            for sock in listeners.http:
                server = await loop.create_server(self._redirector, sock=sock)
                self._http_servers.append(server)
            self._ws_session = websocket.client_session()
        except BaseException:
            await self.stop()
            raise
        for sock in self._listeners:
            self._spawn(self._doorway.serve(sock))
        self._spawn(self._hub.follow())
        self._spawn(departure.follow(self._directory, self._spec.services, self._upstream,
                                     self._sockets))  # fmt: skip
        logger.info("proxy listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, close every connection (open ones get ``shutdown_seconds`` to
        finish) and the upstream pool. Safe to call more than once."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._hub.close()
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        if self._fast_lane is not None:
            await self._fast_lane.close(self._timeouts.shutdown_seconds)
        for server in self._http_servers:
            server.close()
        await self._https.shutdown(self._timeouts.shutdown_seconds)
        await self._redirector.shutdown(self._timeouts.shutdown_seconds)
        for server in self._http_servers:
            await server.wait_closed()
        self._http_servers = []
        await self._upstream.stop()
        if self._ws_session is not None:
            await self._ws_session.close()
            self._ws_session = None

    def _make_fast_lane(self) -> FastLane | None:
        """The fast lane for plain requests, unless the access log is written (only the full
        proxy writes it)."""
        if access_logger.isEnabledFor(logging.DEBUG):
            return None
        return FastLane(self._table, self._directory, self._upstream, self._https,
                        idle_seconds=self._timeouts.idle_seconds)  # fmt: skip

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hand_over(self, conn: socket.socket, first: int) -> None:
        self._spawn(self._connect(asyncio.get_running_loop(), conn, first))

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, first: int
    ) -> None:
        """``0x16`` starts a TLS handshake: the connection goes to the fast lane (or the HTTPS
        server); any other first byte is plain HTTP, for the redirect server."""
        try:
            if first == TLS_RECORD_HANDSHAKE:
                lane = self._fast_lane
                await loop.connect_accepted_socket(
                    lane.protocol if lane is not None else self._https,
                    conn,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=self._timeouts.first_byte_seconds,
                )
            else:
                await loop.connect_accepted_socket(self._redirector, conn)
        except (OSError, TimeoutError) as exc:
            logger.debug("dropped a connection before its first request: %r", exc)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

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
            return await endpoint.answer(request, match.path, hub=self._hub, table=self._table,
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
                        sockets=self._sockets,
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

