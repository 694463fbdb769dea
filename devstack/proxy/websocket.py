"""WebSockets through the proxy: the upstream handshake first (so the subprotocol the service
picks is the one the browser gets), then every frame relayed as it is: text, binary, ping,
pong, and the close code and reason, in both directions.

A service that refuses the upgrade (any answer but ``101``) has its answer passed on as it is:
status, headers (minus hop-by-hop ones) and body. aiohttp's client would drop that answer for an
``Invalid response status``, so the session of :func:`client_session` reads it first (its
``raise_for_status`` hook) and raises it as :class:`UpgradeRefused`.

A socket never outlives the service process it reached, and never ends without a close frame
for the client:

- when the service's connection breaks without a close frame (it crashed, or was killed), the
  client gets ``1001`` (going away), never an abrupt end;
- when the process is about to go (:meth:`OpenSockets.leave`: it is reloading, restarting or
  stopping; :mod:`devstack.proxy.departure` says when), the proxy closes both legs itself:
  the client gets ``1012`` (service restart; ``1001`` when the service stops for good) and
  reconnects to the new process, the service gets ``1001`` and, when it does not answer at
  once (aiohttp stops reading once it shuts down), its connection is dropped. A service whose
  shutdown waits for its open sockets then stops at once instead of at its stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, istr
from yarl import URL

from devstack.proxy.departure import GOING_AWAY, SERVICE_RESTART
from devstack.proxy.failures import Stage, failure_for
from devstack.proxy.forward import start_response
from devstack.proxy.headers import response_headers

logger = logging.getLogger(__name__)

HANDSHAKE_HEADERS = frozenset(
    istr(name)
    for name in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
    )
)
"""Negotiated per connection: each leg makes its own (the subprotocol is carried over)."""

_NO_CODE = frozenset({1005, 1006, 1015})
"""Close codes that describe a missing close frame and must not be sent in one (RFC 6455 7.4.1)."""

"""RFC 6455 section 7.4.1 and the IANA registry of close codes."""
UPSTREAM_CLOSE_SECONDS = 0.2
"""How long a leaving process has to answer the proxy's close before its connection is dropped."""

_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
_Leaving = asyncio.Future[int]
"""Resolved with the close code for the client when the process behind a socket is leaving."""


class OpenSockets:
    """The sockets bridged to services, by the port they reached, until they close."""

    def __init__(self) -> None:
        self._by_port: dict[int, set[_Leaving]] = {}

    def leave(self, port: int, code: int) -> None:
        """The process serving on ``port`` is going away: close every socket bridged to it,
        the client's with ``code``."""
        for leaving in self._by_port.pop(port, ()):
            if not leaving.done():
                leaving.set_result(code)

    @contextlib.contextmanager
    def opened(self, port: int) -> Iterator[_Leaving]:
        """A socket bridged to ``port``, for as long as the block runs: the future that
        :meth:`leave` resolves."""
        leaving: _Leaving = asyncio.get_running_loop().create_future()
        sockets = self._by_port.setdefault(port, set())
        sockets.add(leaving)
        try:
            yield leaving
        finally:
            sockets.discard(leaving)
            if not sockets and self._by_port.get(port) is sockets:
                del self._by_port[port]


class UpgradeRefused(Exception):
    """The service answered the upgrade with something other than ``101``: its answer, read
    whole, headers already filtered for the client."""

    def __init__(self, status: int, reason: str | None, headers: CIMultiDict[str], body: bytes):
        super().__init__(f"upgrade refused with {status}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


def client_session() -> aiohttp.ClientSession:
    """The session :func:`bridge` connects to services with: no cookies, bodies untouched, and
    a refused upgrade raised as :class:`UpgradeRefused` with its answer."""
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        raise_for_status=_keep_refusal,
    )


async def _keep_refusal(response: aiohttp.ClientResponse) -> None:
    if response.status == 101:
        return
    body = await response.read()
    headers = CIMultiDict(response_headers(response.headers.items()))
    raise UpgradeRefused(response.status, response.reason, headers, body)


def is_upgrade(request: web.BaseRequest) -> bool:
    headers = request.headers
    return (
        headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("Connection", "").lower()
    )


async def bridge(
    request: web.BaseRequest,
    session: aiohttp.ClientSession,
    *,
    service: str,
    port: int,
    path_qs: str,
    headers: CIMultiDict[str],
    handshake_seconds: float,
    sockets: OpenSockets,
) -> web.StreamResponse:
    """Connect to the service's WebSocket, accept the client's with the same subprotocol, and
    relay frames until either side closes, or the process leaves (``sockets``); pass a refusal
    on as the service sent it. Raises a ``ForwardError`` before the handshake. ``session`` comes
    from :func:`client_session`."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    for name in HANDSHAKE_HEADERS:
        headers.popall(name, None)
    url = URL(f"http://127.0.0.1:{port}{path_qs}", encoded=True)
    try:
        async with asyncio.timeout(handshake_seconds):
            upstream = await session.ws_connect(
                url,
                protocols=protocols,
                headers=headers,
                autoping=False,
                autoclose=False,
                max_msg_size=0,
                compress=0,
            )
    except UpgradeRefused as refusal:
        try:
            return await start_response(
                request, refusal.status, refusal.reason, refusal.headers, refusal.body
            )
        except ConnectionResetError as exc:
            raise failure_for(exc, service, Stage.DELIVERING) from exc
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        raise failure_for(exc, service, Stage.ANSWERING, port=port,
                          limit=handshake_seconds) from exc  # fmt: skip
    try:
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=False,
            autoclose=False,
            max_msg_size=0,
            compress=False,
        )
        await client.prepare(request)
        with sockets.opened(port) as leaving:
            await _relay(client, upstream, leaving)
        return client
    finally:
        await upstream.close()


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse,
                 leaving: _Leaving) -> None:  # fmt: skip
    """Relay frames both ways until both legs are closed, or until the process leaves: then
    close them both."""
    pumping = asyncio.get_running_loop().create_task(_pump_both(client, upstream))
    try:
        await asyncio.wait((pumping, leaving), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not pumping.done():
            pumping.cancel()
            await asyncio.wait((pumping,))
    if not pumping.cancelled():
        pumping.result()
        return
    code = leaving.result()
    reason = b"service restart" if code == SERVICE_RESTART else b"going away"
    logger.debug("closing a websocket to a leaving process (%d)", code)
    await asyncio.gather(client.close(code=code, message=reason), _drop(upstream))


async def _pump_both(client: web.WebSocketResponse,
                     upstream: aiohttp.ClientWebSocketResponse) -> None:  # fmt: skip
    await asyncio.gather(_pump(client, upstream), _pump(upstream, client))


async def _drop(upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Close the service's leg; a service that does not answer in time is cut off (aiohttp
    drops the connection of a close that is cancelled)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(UPSTREAM_CLOSE_SECONDS):
            await upstream.close(code=GOING_AWAY, message=b"going away")


async def _pump(source: _Socket, sink: _Socket) -> None:
    """Copy frames from ``source`` to ``sink`` until a close; then close ``sink`` the same way."""
    while True:
        msg = await source.receive()
        kind = msg.type
        try:
            if kind is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif kind is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif kind is WSMsgType.PING:
                await sink.ping(msg.data)
            elif kind is WSMsgType.PONG:
                await sink.pong(msg.data)
            else:
                await _close_both(source, sink, msg)
                return
        except ConnectionResetError:
            logger.debug("websocket peer went away while a frame was relayed to it")
            await source.close(code=GOING_AWAY, message=b"peer went away")
            return


async def _close_both(source: _Socket, sink: _Socket, msg: aiohttp.WSMessage) -> None:
    """``source`` ended with ``msg``: its close frame, passed on, or the end of its connection
    without one (``1001`` for the client when the service went away, ``1000`` for the service
    when the client did)."""
    is_close = msg.type is WSMsgType.CLOSE
    code = msg.data if is_close and isinstance(msg.data, int) else 1000
    if code in _NO_CODE:
        code = 1000
    reason = (msg.extra or "").encode() if is_close else b""
    is_broken = msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)  # CLOSING: closed by the proxy
    if is_broken and isinstance(source, aiohttp.ClientWebSocketResponse):
        logger.debug("a service's websocket ended without a close frame (%s)", msg.type.name)
        code, reason = GOING_AWAY, b"service went away"
    await sink.close(code=code, message=reason)
    if is_close:
        await source.close(code=code, message=reason)
