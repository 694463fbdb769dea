"""WebSockets through the proxy, against a real aiohttp WebSocket service."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from devstack.manifest.spec import RouteSpec
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    raw_upstream,
    running_proxy,
    upstream,
    use_lane,
    verified_client,
)


def ws_app(seen_headers: list[dict[str, str]]) -> web.Application:
    async def socket(request: web.Request) -> web.WebSocketResponse:
        seen_headers.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("chat.v2",), autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    _, code, reason = msg.data.split(":", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    break
                await ws.send_str(f"echo {msg.data}")
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
            elif msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
                await ws.ping(b"server-ping")
        return ws

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no sockets here")

    app = web.Application()
    app.router.add_get("/api/ws", socket)
    app.router.add_get("/api/no", refuse)
    return app


def test_frames_both_ways_subprotocol_and_close_code(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[dict[str, str]] = []
        async with upstream(ws_app(seen)) as api:
            spec = make_spec(tmp_path, {"api": api}, (RouteSpec(path="/api", service="api"),))
            async with running_proxy(spec, StandInDirectory({"api": api})) as proxy, \
                    verified_client() as client:  # fmt: skip
                async with client.ws_connect(
                    f"{proxy.url}/api/ws?room=1",
                    protocols=("chat.v1", "chat.v2"),
                    autoping=False,
                    headers={"Cookie": "session=abc"},
                ) as ws:
                    assert ws.protocol == "chat.v2"  # the service's choice
                    await ws.send_str("hello")
                    assert (await ws.receive()).data == "echo hello"
                    await ws.send_bytes(b"\x00\x01\x02")
                    assert (await ws.receive()).data == b"\x02\x01\x00"
                    await ws.ping(b"client-ping")
                    pong = await ws.receive()
                    assert (pong.type, pong.data) == (WSMsgType.PONG, b"client-ping")
                    ping = await ws.receive()
                    assert (ping.type, ping.data) == (WSMsgType.PING, b"server-ping")
                    await ws.send_str("close:4001:bye now")
                    closing = await ws.receive()
                    assert closing.type is WSMsgType.CLOSE
                    assert (closing.data, closing.extra) == (4001, "bye now")
                headers = seen[0]
                assert headers["Cookie"] == "session=abc"
                assert headers["X-Forwarded-Proto"] == "https"
                assert headers["Host"] == f"localhost:{proxy.port}"

    asyncio.run(main())


def test_client_close_reaches_the_service_and_refusals_pass_through(tmp_path: Path) -> None:
    async def main() -> None:
        closed = asyncio.Event()
        codes: list[int | None] = []

        async def socket(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                pass
            codes.append(ws.close_code)
            closed.set()
            return ws

        app = ws_app([])
        app.router.add_get("/api/quiet", socket)
        async with upstream(app) as api:
            spec = make_spec(tmp_path, {"api": api}, (RouteSpec(path="/api", service="api"),))
            async with running_proxy(spec, StandInDirectory({"api": api})) as proxy, \
                    verified_client() as client:  # fmt: skip
                ws = await client.ws_connect(f"{proxy.url}/api/quiet")
                await ws.close(code=4002, message=b"leaving")
                async with asyncio.timeout(5):
                    await closed.wait()
                assert codes == [4002]
                try:
                    await client.ws_connect(f"{proxy.url}/api/no")
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403
                else:
                    raise AssertionError("the refused upgrade was accepted")

    asyncio.run(main())


REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 26\r\n"
    b"X-Refusal: not-on-fridays\r\n"
    b"Set-Cookie: a=1\r\n"
    b"Set-Cookie: b=2\r\n"
    b"Connection: close, X-Upstream-Secret\r\n"
    b"X-Upstream-Secret: hop\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"\r\n"
    b"no websockets for you :-(\n"
)


@pytest.mark.parametrize("lane", LANES)
def test_a_refused_upgrade_reaches_the_client_as_the_service_sent_it(
    tmp_path: Path, lane: str
) -> None:
    async def main() -> None:
        async with raw_upstream(REFUSAL, close_after=True) as api:
            spec = make_spec(tmp_path, {"api": api}, (RouteSpec(path="/api", service="api"),))
            async with running_proxy(spec, StandInDirectory({"api": api})) as proxy, \
                    verified_client() as client:  # fmt: skip
                upgrade = {
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": base64.b64encode(b"sixteen bytes!!!").decode(),
                }
                async with client.get(f"{proxy.url}/api/ws", headers=upgrade) as resp:
                    body = await resp.read()
                    assert (resp.status, body) == (403, b"no websockets for you :-(\n")
                    assert resp.headers["X-Refusal"] == "not-on-fridays"
                    assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
                    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
                    for hop in ("X-Upstream-Secret", "Keep-Alive"):
                        assert hop not in resp.headers, hop

    with use_lane(lane):
        asyncio.run(main())
