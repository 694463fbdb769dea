"""The front door: one HTTPS port on loopback that routes every request of the stack.

Roles (after Caddy's reverse proxy):

- :class:`Proxy` owns the listening sockets; its :class:`devstack.proxy.doorway.Doorway` accepts
  connections and hands each one over with its first byte: ``0x16`` starts a TLS handshake and
  the connection goes to the HTTPS server; any other byte is plain HTTP sent to the HTTPS port by
  mistake, and gets a 308 redirect to the same URL over https. A client that connects and says
  nothing is dropped after a deadline.
- :mod:`devstack.proxy.fastlane` takes every TLS connection first and answers plain requests in
  protocol callbacks; anything else, and every request while the access log is on, is answered
  by the full proxy (:mod:`devstack.proxy.full`, on aiohttp's server). The proxy can serve
  before the full proxy has loaded (``start(full=False)``, then :meth:`Proxy.start_full`): what
  is meant for it waits until then.
- :mod:`devstack.proxy.routing` decides where a request goes (pure).
- :class:`devstack.proxy.upstream.pool.PooledUpstream` carries it to the service (both lanes share
  its connections; :mod:`devstack.proxy.forward` holds the header rules and failures);
  :mod:`devstack.proxy.websocket` relays WebSockets; :mod:`devstack.proxy.static` serves folders.
- :mod:`devstack.proxy.pages` answers when something fails, with the status :func:`pages.status_for`
  picks.
- :mod:`devstack.proxy.live` makes browsers follow the stack: ``/_devstack/`` is answered by the
  full proxy (the script and its WebSocket), the :class:`devstack.proxy.live.hub.Hub` tells
  connected pages to reload, and HTML pages of both lanes get the script
  (:mod:`devstack.proxy.live.injection`).

Requests to a service that is starting (or restarting) are held before their body is read,
until the service is ready or ``proxy.wait_seconds`` passed; a refused connection while the
service restarts is retried once after it is ready again.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import ssl
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from devstack.manifest.spec import StackSpec
from devstack.proxy import departure
from devstack.proxy.bind import Listeners, bind_proxy, origin
from devstack.proxy.doorway import Doorway
from devstack.proxy.fastlane import FastLane
from devstack.proxy.routing import RouteTable
from devstack.proxy.timeouts import DEFAULT_TIMEOUTS, ProxyTimeouts
from devstack.proxy.upstream.pool import PooledUpstream
from devstack.status import ServiceDirectory

if TYPE_CHECKING:
    from devstack.proxy.full import FullProxy
    from devstack.proxy.live.hub import Hub

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("devstack.access")

TLS_RECORD_HANDSHAKE = 0x16
FULL_MODULE = "devstack.proxy.full"

__all__ = ["FULL_MODULE", "Proxy", "ProxyTimeouts"]


class Proxy:
    """The HTTPS reverse proxy, as an async context manager (``start()`` / ``stop()``)."""

    def __init__(
        self,
        spec: StackSpec,
        directory: ServiceDirectory,
        ssl_context: ssl.SSLContext,
        *,
        port: int | None = None,
        timeouts: ProxyTimeouts = DEFAULT_TIMEOUTS,
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
        self._listeners: list[socket.socket] = []
        self._http_listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._doorway = Doorway(timeouts.first_byte_seconds, self._hand_over)
        """Accepted connections waiting for their first byte, with their deadlines."""
        self._port: int | None = None
        self._fast_lane: FastLane | None = None
        self._full: FullProxy | None = None
        self._full_ready: asyncio.Future[None] | None = None
        """Done once the full proxy serves: what is meant for it waits on this until then."""
        self.full_wanted = asyncio.Event()
        """Set when something waits for the full proxy (``start(full=False)``): whoever calls
        :meth:`start_full` should not wait any longer."""

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
    def has_full(self) -> bool:
        """Whether the full proxy serves (it always does once ``start()`` returned, unless
        started with ``full=False`` and :meth:`start_full` not done yet)."""
        return self._full is not None

    @property
    def hub(self) -> Hub:
        """The pages listening for live-reload events (the full proxy's)."""
        if self._full is None:
            raise RuntimeError("the live-reload hub comes with the full proxy")
        return self._full.hub

    def static_changed(self, root: Path, files: tuple[Path, ...]) -> None:
        """Files under ``root``, a static route's folder, changed: pages swap stylesheets or
        reload (:meth:`devstack.proxy.live.hub.Hub.static_changed`). No page is connected before
        the full proxy serves: nothing to tell then."""
        if self._full is not None:
            self._full.hub.static_changed(root, files)

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

    async def start(self, *, full: bool = True) -> None:
        """Bind every ``proxy.bind`` address (raising :class:`PortError` at once when the port
        is taken) and start accepting. ``full=False``: the fast lane serves at once and the full
        proxy is left to :meth:`start_full` (whose module the caller may import beforehand,
        elsewhere than on the event loop: it is aiohttp's import)."""
        loop = asyncio.get_running_loop()
        self._full_ready = loop.create_future()
        self._fast_lane = self._make_fast_lane()
        listeners = self._prebound or bind_proxy(self._spec, self._wanted_port)
        self._prebound = None
        self._listeners = listeners.https
        self._http_listeners = listeners.http
        self._port = listeners.port
        if full:
            try:
                await self.start_full()
            except BaseException:
                await self.stop()
                raise
        else:  # a client knocking at the http port needs the full proxy (it only redirects)
            for sock in self._http_listeners:
                loop.add_reader(sock.fileno(), self._knocked)
        for sock in self._listeners:
            self._spawn(self._doorway.serve(sock))
        self._spawn(departure.follow(self._directory, self._spec.services, self._upstream,
                                     self._open_sockets))  # fmt: skip
        logger.info("proxy listening on %s", self.url)

    async def start_full(self) -> None:
        """Start the full proxy (importing :data:`FULL_MODULE` if nobody did yet); what waited
        for it goes on."""
        if self._full is not None:
            return
        self._stop_listening_for_knocks()
        module = importlib.import_module(FULL_MODULE)
        full: FullProxy = module.FullProxy(
            self._spec, self._table, self._directory, self._upstream, self._timeouts,
            lambda: self.port, self._spawn,
        )  # fmt: skip
        await full.start(self._http_listeners)
        self._full = full
        if self._full_ready is not None and not self._full_ready.done():
            self._full_ready.set_result(None)

    async def stop(self) -> None:
        """Stop accepting, close every connection (open ones get ``shutdown_seconds`` to
        finish) and the upstream pool. Safe to call more than once."""
        if self._full_ready is not None and not self._full_ready.done():
            self._full_ready.cancel()  # what waits for the full proxy is closed
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        full = self._full
        if full is not None:
            await full.close_hub()
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        if self._fast_lane is not None:
            await self._fast_lane.close(self._timeouts.shutdown_seconds)
        if full is not None:
            await full.stop()
        else:
            self._stop_listening_for_knocks()
            for sock in self._http_listeners:
                sock.close()
        self._http_listeners = []
        await self._upstream.stop()
        if full is not None:
            await full.close_client()

    def _knocked(self) -> None:
        self._stop_listening_for_knocks()
        self.full_wanted.set()

    def _stop_listening_for_knocks(self) -> None:
        if self._full is None and self._full_ready is not None:
            loop = self._full_ready.get_loop()
            for sock in self._http_listeners:
                if sock.fileno() >= 0:
                    loop.remove_reader(sock.fileno())

    def _make_fast_lane(self) -> FastLane | None:
        """The fast lane for plain requests, unless the access log is written (only the full
        proxy writes it)."""
        if access_logger.isEnabledFor(logging.DEBUG):
            return None
        return FastLane(self._table, self._directory, self._upstream, self._full_protocol,
                        idle_seconds=self._timeouts.idle_seconds,
                        full_ready=self._full_ready, full_wanted=self.full_wanted)  # fmt: skip

    def _open_sockets(self) -> departure.Sockets | None:
        return self._full.sockets if self._full is not None else None

    def _full_protocol(self) -> asyncio.Protocol:
        assert self._full is not None, "handed over before the full proxy serves"
        protocol: asyncio.Protocol = self._full.https()
        return protocol

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
        server); any other first byte is plain HTTP, for the redirect server. What goes to the
        full proxy waits for it to serve."""
        try:
            if first == TLS_RECORD_HANDSHAKE:
                lane = self._fast_lane
                if lane is None:
                    await self._wait_full()
                await loop.connect_accepted_socket(
                    lane.protocol if lane is not None else self._full_protocol,
                    conn,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=self._timeouts.first_byte_seconds,
                )
            else:
                await self._wait_full()
                assert self._full is not None
                await loop.connect_accepted_socket(self._full.redirector, conn)
        except (OSError, TimeoutError) as exc:
            logger.debug("dropped a connection before its first request: %r", exc)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    async def _wait_full(self) -> None:
        if self._full is None:
            assert self._full_ready is not None
            self.full_wanted.set()
            await asyncio.shield(self._full_ready)
