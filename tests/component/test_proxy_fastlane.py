"""The fast lane (devstack/proxy/fastlane.py): plain requests answered in protocol callbacks, and
the hand-over of a connection to the full proxy when a request is not plain.

Raw HTTP/1.1 over verified TLS, so each test controls what travels on one connection. Every
test runs on uvloop with the fast lane on; the other proxy tests (test_proxy.py) check the
same behaviour end to end in both lanes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from devstack.manifest.spec import RouteSpec
from devstack.proxy.fastlane import FastLane
from devstack.proxy.server import Proxy, ProxyTimeouts
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import (
    StandInDirectory,
    make_spec,
    running_proxy,
    upstream,
    use_lane,
)
from tests.conditions import async_wait_until

ROUTES = (
    RouteSpec(path="/api", service="api"),
    RouteSpec(path="/startup", service="api", strip_prefix=True),
)


@pytest.fixture(autouse=True)
def fast_lane() -> Iterator[None]:
    with use_lane("fast"):
        yield


class Service:
    """An aiohttp service that echoes what it got, or waits on ``release`` for ``/api/wait``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0
        self.peers: list[int] = []

    def app(self) -> web.Application:
        async def echo(request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.peers.append(peer[1] if peer else 0)
            if request.path == "/api/wait":
                self.waiting += 1
                await self.release.wait()
            body = await request.read()
            return web.json_response(
                {
                    "method": request.method,
                    "path": request.raw_path,
                    "headers": [[k.lower(), v] for k, v in request.headers.items()],
                    "body_bytes": len(body),
                }
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        return app


@asynccontextmanager
async def stack(
    tmp_path: Path, service: Service, timeouts: ProxyTimeouts | None = None, **proxy: object
) -> AsyncIterator[tuple[Proxy, FastLane]]:
    async with upstream(service.app()) as port:
        spec = make_spec(tmp_path, {"api": port}, ROUTES, **proxy)
        async with running_proxy(spec, StandInDirectory({"api": port}), timeouts) as running:
            assert running.fast_lane is not None, "the proxy runs with a fast lane"
            yield running, running.fast_lane


class Client:
    """One TLS connection that speaks raw HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, is_head: bool = False) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
            length = 0 if is_head else int(headers.get("content-length", "0"))
            body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), headers, body

    async def json(self) -> dict[str, object]:
        status, _, body = await self.response()
        assert status == 200, body
        answer: dict[str, object] = json.loads(body)
        return answer


@asynccontextmanager
async def client(proxy: Proxy) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.port, ssl=client_context(), server_hostname="localhost"
    )
    try:
        yield Client(reader, writer)
    finally:
        writer.transport.abort()


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *extra, "", ""]
    return "\r\n".join(lines).encode()


def test_pipelined_requests_are_answered_in_order_on_the_fast_lane(tmp_path: Path) -> None:
    async def main() -> None:
        service = Service()
        async with stack(tmp_path, service) as (proxy, lane), client(proxy) as c:
            await c.send(get("/api/1") + get("/api/2", method="HEAD") + get("/startup/3?x=1"))
            assert (await c.json())["path"] == "/api/1"
            status, headers, _ = await c.response(is_head=True)
            assert status == 200 and int(headers["content-length"]) > 0
            assert (await c.json())["path"] == "/3?x=1"
            assert lane.handovers == 0
            assert len(set(service.peers)) == 1, "one pooled connection to the service"

    asyncio.run(main())


def test_request_headers_are_rewritten_on_the_fast_lane(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path, Service()) as (proxy, lane), client(proxy) as c:
            await c.send(
                get(
                    "/startup/items",
                    "X-Forwarded-For: 6.6.6.6",
                    "x-forwarded-prefix: /evil",
                    "TE: trailers",
                    "X-Drop-Me: 1",
                    "X-Keep-Me: 2",
                    "Connection: keep-alive, X-Drop-Me",
                )
            )
            answer = await c.json()
            assert lane.handovers == 0
        got: dict[str, list[str]] = {}
        for name, value in answer["headers"]:  # type: ignore[attr-defined]
            got.setdefault(name, []).append(value)
        assert answer["path"] == "/items"
        assert got["host"] == ["localhost"]
        assert got["x-forwarded-for"] == ["127.0.0.1"]
        assert got["x-forwarded-proto"] == ["https"]
        assert got["x-forwarded-host"] == ["localhost"]
        assert got["x-forwarded-prefix"] == ["/startup"]
        assert got["x-keep-me"] == ["2"]
        for dropped in ("te", "x-drop-me", "connection"):
            assert dropped not in got, dropped

    asyncio.run(main())


def test_a_request_that_is_not_plain_hands_the_connection_over(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path, Service()) as (proxy, lane), client(proxy) as c:
            await c.send(get("/api/before"))
            assert (await c.json())["path"] == "/api/before"
            assert lane.handovers == 0
            await c.send(get("/api/upload", "Content-Length: 3", method="POST") + b"abc")
            assert (await c.json())["body_bytes"] == 3
            assert lane.handovers == 1
            await c.send(get("/api/after%20all"))  # the full proxy keeps the connection
            assert (await c.json())["path"] == "/api/after%20all"
            assert lane.handovers == 1

    asyncio.run(main())


def test_a_head_that_arrives_in_pieces_goes_to_the_full_proxy(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path, Service()) as (proxy, lane), client(proxy) as c:
            await c.send(b"GET /api/pieces HTTP/1.1\r\nHo")
            await async_wait_until(lambda: lane.handovers == 1, message="the hand-over")
            await c.send(b"st: localhost\r\n\r\n")
            assert (await c.json())["path"] == "/api/pieces"

    asyncio.run(main())


def test_the_upstream_deadline_holds_on_a_kept_alive_connection(tmp_path: Path) -> None:
    async def main() -> None:
        service = Service()
        async with stack(tmp_path, service, upstream_timeout_seconds=0.3) as (proxy, lane):
            try:
                async with client(proxy) as c:
                    await c.send(get("/api/fast"))
                    assert (await c.json())["path"] == "/api/fast"
                    await c.send(get("/api/wait", "Accept: application/json"))
                    status, headers, body = await c.response()
                    assert status == 504
                    assert headers["x-devstack"] == "proxy"
                    assert json.loads(body)["service"] == "api"
                    await c.send(get("/api/again"))  # the connection still serves
                    assert (await c.json())["path"] == "/api/again"
                    assert lane.handovers == 0
            finally:
                service.release.set()

    asyncio.run(main())


def test_a_client_that_leaves_before_the_answer_costs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        service = Service()
        async with stack(tmp_path, service) as (proxy, lane):
            async with client(proxy) as c:
                await c.send(get("/api/wait"))
                await async_wait_until(lambda: service.waiting == 1, message="the request")
            await async_wait_until(lambda: not lane.connections, message="the proxy to notice")
            service.release.set()
            async with client(proxy) as c:
                await c.send(get("/api/next"))
                assert (await c.json())["path"] == "/api/next"
            assert service.peers[0] != service.peers[-1], "the abandoned connection was reused"

    asyncio.run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_idle_connections_are_closed_and_stop_closes_the_rest(tmp_path: Path) -> None:
    async def main() -> None:
        timeouts = ProxyTimeouts(idle_seconds=0.3)
        async with stack(tmp_path, Service(), timeouts) as (proxy, lane):
            async with client(proxy) as c:
                await c.send(get("/api/once"))
                await c.json()
                async with asyncio.timeout(5):
                    assert await c.reader.read() == b""
            async with client(proxy) as kept:
                await kept.send(get("/api/twice"))
                await kept.json()
                await proxy.stop()
                async with asyncio.timeout(5):
                    assert await kept.reader.read() == b""
            assert lane.handovers == 0 and not lane.connections

    asyncio.run(main())
