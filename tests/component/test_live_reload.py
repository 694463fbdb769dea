"""The browser follows the stack: the live-reload script injected into HTML pages on both lanes,
``/_devstack/`` served by the proxy and refused to other sites, and the hub telling connected
pages to reload, swap stylesheets or show an error, all over real TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devstack.manifest.spec import RouteSpec, StackSpec
from devstack.proxy.live.script import SCRIPT_BYTES, SCRIPT_TAG
from devstack.proxy.server import Proxy
from devstack.status import ServiceState
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    upstream,
    use_lane,
    verified_client,
)
from tests.conditions import async_wait_until

PAGE = b"<!doctype html><title>page</title><p>hello</p>"
BIG_PAGE = b"<!doctype html><p>" + b"x" * 100_000 + b"</p>"


@pytest.fixture(autouse=True, params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


def pages_app(release: asyncio.Event) -> web.Application:
    """HTML and other answers, each of a kind the injection rules tell apart."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG_PAGE, content_type="text/html")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"<p>one</p>")
        if "wait" in request.query:  # the rest only once the client saw the first part
            await release.wait()
        await response.write(b"<p>two</p>")
        return response

    async def compressed(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(PAGE, mtime=0), content_type="text/html",
                            headers={"Content-Encoding": "gzip"})  # fmt: skip

    async def data(request: web.Request) -> web.Response:
        return web.json_response({"html": "<p>not a page</p>"})

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204, content_type="text/html")

    async def cached(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"v1"', "Content-Type": "text/html"})

    async def ranged(request: web.Request) -> web.Response:
        return web.Response(status=206, body=PAGE[:10], content_type="text/html",
                            headers={"Content-Range": f"bytes 0-9/{len(PAGE)}"})  # fmt: skip

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/quiet/page", page)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", compressed)
    app.router.add_get("/data", data)
    app.router.add_get("/empty", empty)
    app.router.add_get("/cached", cached)
    app.router.add_get("/ranged", ranged)
    return app


@dataclass
class Stack:
    proxy: Proxy
    directory: StandInDirectory
    root: Path
    release: asyncio.Event

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def socket_url(self) -> str:
        return self.url.replace("https://", "wss://") + "/_devstack/live"

    @property
    def origin(self) -> str:
        return self.url


@asynccontextmanager
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """``web`` at ``/``, ``/quiet`` with ``live_reload: false``, the service ``plain`` (with
    ``live_reload: false``) at ``/plain``, files at ``/site`` and ``/assets`` (the same folder)
    and at ``/raw`` (``live_reload: false``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(PAGE)
    (site / "style.css").write_text("body { color: red }")
    release = asyncio.Event()
    async with upstream(pages_app(release)) as port:
        routes = (
            RouteSpec(path="/", service="web"),
            RouteSpec(path="/quiet", service="web", live_reload=False),
            RouteSpec(path="/plain", service="plain", strip_prefix=True),
            RouteSpec(path="/site", static=Path("site")),
            RouteSpec(path="/assets", static=site),
            RouteSpec(path="/raw", static=site, live_reload=False),
        )
        spec = make_spec(tmp_path, {"web": port, "plain": port}, routes)
        plain = dataclasses.replace(spec.services["plain"], live_reload=False)
        spec = StackSpec(manifest_path=spec.manifest_path, proxy=spec.proxy, routes=routes,
                         services={**spec.services, "plain": plain})  # fmt: skip
        directory = StandInDirectory({"web": port, "plain": port})
        async with running_proxy(spec, directory) as proxy:
            yield Stack(proxy, directory, site, release)


def run(tmp_path: Path, scenario: Callable[[Stack], Awaitable[None]]) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            await scenario(s)

    asyncio.run(main())


# injection


def test_html_pages_get_the_script_after_their_body(tmp_path: Path, lane: str) -> None:
    async def scenario(s: Stack) -> None:
        async with verified_client() as client:
            for path, body in (("/page", PAGE), ("/big", BIG_PAGE)):
                async with client.get(s.url + path) as resp:
                    assert resp.status == 200
                    assert await resp.read() == body + SCRIPT_TAG, path
                    assert resp.headers["Content-Length"] == str(len(body) + len(SCRIPT_TAG))
            async with client.get(s.url + "/chunked") as resp:
                assert "Content-Length" not in resp.headers
                assert resp.headers["Transfer-Encoding"] == "chunked"
                assert await resp.read() == b"<p>one</p><p>two</p>" + SCRIPT_TAG
        lane_took = s.proxy.fast_lane
        if lane == "fast":
            assert lane_took is not None and lane_took.handovers == 0, "the fast lane answered"

    run(tmp_path, scenario)


def test_a_streamed_page_is_passed_on_as_it_comes(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        async with verified_client() as client, client.get(s.url + "/chunked?wait") as resp:
            # The service holds the rest until the client has the first part.
            assert await resp.content.readuntil(b"</p>") == b"<p>one</p>"
            s.release.set()
            assert await resp.read() == b"<p>two</p>" + SCRIPT_TAG

    run(tmp_path, scenario)


def test_everything_else_is_left_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(s: Stack) -> None:
        async with verified_client() as client:
            async with client.get(s.url + "/gzip") as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                assert await resp.read() == gzip.compress(PAGE, mtime=0)
            async with client.get(s.url + "/data") as resp:
                assert await resp.json() == {"html": "<p>not a page</p>"}
            async with client.head(s.url + "/page") as resp:
                assert resp.headers["Content-Length"] == str(len(PAGE))
            for path, status in (("/empty", 204), ("/cached", 304), ("/ranged", 206)):
                async with client.get(s.url + path) as resp:
                    assert resp.status == status, path
                    assert SCRIPT_TAG not in await resp.read(), path
            for path in ("/quiet/page", "/plain/page", "/raw/index.html"):
                async with client.get(s.url + path) as resp:
                    assert resp.status == 200, path
                    assert await resp.read() == PAGE, f"{path} has live_reload: false"

    caplog.set_level("DEBUG", logger="devstack.proxy.live.injection")
    run(tmp_path, scenario)
    assert "web sent a page in gzip encoding: left without the live-reload script" in caplog.text


def test_static_pages_are_a_variant_with_their_own_etag(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        async with verified_client() as client:
            async with client.get(s.url + "/site/") as resp:
                assert await resp.read() == PAGE + SCRIPT_TAG
                assert resp.headers["Content-Type"] == "text/html"
                etag = resp.headers["ETag"]
                assert etag.endswith('-live"')
                modified = resp.headers["Last-Modified"]
            async with client.head(s.url + "/site/index.html") as resp:
                assert resp.headers["Content-Length"] == str(len(PAGE) + len(SCRIPT_TAG))
                assert resp.headers["ETag"] == etag
            for condition in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
                async with client.get(s.url + "/site/", headers=condition) as resp:
                    assert resp.status == 304, condition
                    assert resp.headers["ETag"] == etag
            async with client.get(s.url + "/raw/index.html") as resp:
                raw_etag = resp.headers["ETag"]
                assert raw_etag != etag, "the file and the page with the script differ"
            async with client.get(s.url + "/site/", headers={"If-None-Match": raw_etag}) as resp:
                assert resp.status == 200
            async with client.get(s.url + "/site/", headers={"Range": "bytes=0-9"}) as resp:
                assert resp.status == 206
                assert await resp.read() == PAGE[:10]
                assert resp.headers["ETag"] == raw_etag
            async with client.get(s.url + "/assets/style.css") as resp:
                assert await resp.read() == b"body { color: red }"

    run(tmp_path, scenario)


def test_a_failure_page_reloads_by_itself(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        s.directory.set("web", ServiceState.FAILED, reason="crashed 5 times in a row")
        s.directory.set("plain", ServiceState.FAILED, reason="crashed 5 times in a row")
        async with verified_client() as client:
            async with client.get(s.url + "/page", headers={"Accept": "text/html"}) as resp:
                assert resp.status == 502
                assert SCRIPT_TAG in await resp.read()
            async with client.get(s.url + "/plain/page", headers={"Accept": "text/html"}) as resp:
                assert resp.status == 502
                assert SCRIPT_TAG not in await resp.read()

    run(tmp_path, scenario)


# /_devstack/


def test_the_script_is_served_on_every_allowed_host_with_an_etag(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        port = s.proxy.port
        async with verified_client() as client:
            for host in ("localhost", "web.localhost"):
                # ``/`` routes to a service, yet the proxy answers its own path first.
                async with client.get(s.url + "/_devstack/live.js",
                                      headers={"Host": f"{host}:{port}"}) as resp:  # fmt: skip
                    assert resp.status == 200, host
                    assert resp.content_type == "text/javascript"
                    assert resp.headers["Cache-Control"] == "no-cache"
                    assert await resp.read() == SCRIPT_BYTES
                    etag = resp.headers["ETag"]
            async with client.get(s.url + "/_devstack/live.js",
                                  headers={"If-None-Match": etag}) as resp:  # fmt: skip
                assert resp.status == 304
            async with client.get(s.url + "/_devstack/live.js",
                                  headers={"Origin": s.origin}) as resp:  # fmt: skip
                assert resp.status == 200
            async with client.get(s.url + "/_devstack/nothing") as resp:
                assert resp.status == 404
            async with client.post(s.url + "/_devstack/live.js") as resp:
                assert resp.status == 405

    run(tmp_path, scenario)


CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
]


def test_other_sites_are_refused_the_script_and_the_socket(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        port = s.proxy.port
        async with verified_client() as client:
            for headers in CROSS_SITE:
                async with client.get(s.url + "/_devstack/live.js", headers=headers) as resp:
                    assert resp.status == 403, headers
            for origin in (
                "https://evil.example",
                f"https://evil.example:{port}",
                f"http://localhost:{port}",  # not this origin: another scheme
                f"https://localhost:{port + 1}",
                "null",
                None,  # browsers always send Origin on a WebSocket handshake
            ):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.ws_connect(s.socket_url, origin=origin)
                assert refused.value.status == 403, origin
            for origin in (s.origin, f"https://web.localhost:{port}", f"https://[::1]:{port}"):
                async with client.ws_connect(s.socket_url, origin=origin) as socket:
                    assert not socket.closed, origin

    run(tmp_path, scenario)


# the hub


@asynccontextmanager
async def listening_page(
    s: Stack,
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]]:
    """A client and its socket, once the hub counts it among the pages."""
    async with (
        verified_client() as client,
        client.ws_connect(s.socket_url, origin=s.origin) as socket,
    ):
        await async_wait_until(lambda: s.proxy.hub.page_count == 1,
                               message="the page to be connected")  # fmt: skip
        yield client, socket


async def next_message(socket: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    async with asyncio.timeout(5):
        message = await socket.receive()
    assert message.type is aiohttp.WSMsgType.TEXT, message
    data: dict[str, object] = json.loads(message.data)
    return data


def test_pages_are_told_when_services_reload_and_fail(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        directory = s.directory
        async with listening_page(s) as (client, socket):
            directory.set("web", ServiceState.STARTING, pid=2)
            directory.set("web", ServiceState.READY)
            assert await next_message(socket) == {"type": "reload"}

            lines = ("Traceback (most recent call last):", "\x1b[31mSyntaxError\x1b[0m: <b>")
            directory.set("web", ServiceState.BACKOFF, reason="exited with code 1",
                          last_lines=lines)  # fmt: skip
            assert await next_message(socket) == {
                "type": "error",
                "service": "web",
                "reason": "exited with code 1",
                "lines": ["Traceback (most recent call last):", "SyntaxError: <b>"],
            }
            directory.set("web", ServiceState.STARTING, reason=None, pid=3)
            directory.set("web", ServiceState.READY)
            assert await next_message(socket) == {"type": "reload"}

            directory.set("web", ServiceState.READY, pid=4, port=directory.status("web").port)
            assert await next_message(socket) == {"type": "reload"}, "a blue-green switch"

            directory.set("web", ServiceState.READY, reason="the new version failed to start",
                          last_lines=("ImportError: x",))  # fmt: skip
            message = await next_message(socket)
            assert message["type"] == "error" and message["lines"] == ["ImportError: x"]

            # A page that connects meanwhile is told at once.
            async with client.ws_connect(s.socket_url, origin=s.origin) as late:
                assert (await next_message(late))["type"] == "error"
                directory.set("web", ServiceState.READY, reason=None, pid=5)
                assert await next_message(late) == {"type": "reload"}
            assert await next_message(socket) == {"type": "reload"}

    run(tmp_path, scenario)


def test_pages_swap_stylesheets_and_reload_for_other_static_changes(tmp_path: Path) -> None:
    async def scenario(s: Stack) -> None:
        async with listening_page(s) as (_, socket):
            s.proxy.static_changed(s.root, (s.root / "style.css",))
            message = await next_message(socket)
            assert message["type"] == "css"
            paths = message["paths"]
            assert isinstance(paths, list)
            assert sorted(paths) == ["/assets/style.css", "/raw/style.css", "/site/style.css"]

            s.proxy.static_changed(s.root, (s.root / "style.css", s.root / "index.html"))
            assert await next_message(socket) == {"type": "reload"}

            s.proxy.static_changed(tmp_path / "elsewhere", (tmp_path / "elsewhere/a.js",))
            s.proxy.static_changed(s.root, (Path("app.js"),))  # relative to the root
            assert await next_message(socket) == {"type": "reload"}

    run(tmp_path, scenario)
