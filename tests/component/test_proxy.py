"""The proxy in front of real aiohttp services on loopback, through verified TLS.

Every test runs in both lanes (:data:`tests.component.test_proxy_harness.LANES`): with the fast
lane on, as ``devstack up`` runs, and with every request on the full proxy, as with ``-v``. The
same assertions hold in both: a request answers the same whichever lane took it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devstack.errors import PortError
from devstack.manifest.spec import RouteSpec
from devstack.proxy.server import Proxy, ProxyTimeouts
from devstack.status import ServiceState
from devstack.tls.ca import ca_cert_path, client_context
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
from tests.conditions import async_wait_until


@pytest.fixture(autouse=True, params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


ROUTES = (
    RouteSpec(path="/api", service="api"),
    RouteSpec(path="/startup", service="startup", strip_prefix=True),
    RouteSpec(host="startup.localhost", service="startup"),
)


def echo_app(name: str, seen: list[web.Request] | None = None) -> web.Application:
    """Answers with what it received: its name, method, path, headers, body size."""

    async def echo(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
        body = await request.read()
        answer = {
            "service": name,
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": len(body),
            "peer": request.transport.get_extra_info("peername")[1] if request.transport else 0,
        }
        return web.json_response(answer)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def headers_of(answer: dict[str, object]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in answer["headers"]:  # type: ignore[attr-defined]
        result.setdefault(key.lower(), []).append(value)
    return result


Scenario = Callable[[int, StandInDirectory], Awaitable[None]]


def run_with_services(
    tmp_path: Path,
    scenario: Scenario,
    *,
    timeouts: ProxyTimeouts | None = None,
    **proxy: object,
) -> None:
    """Start echo services ``api`` and ``startup`` and a proxy in front; run ``scenario``."""

    async def main() -> None:
        async with upstream(echo_app("api")) as api, upstream(echo_app("startup")) as startup:
            ports = {"api": api, "startup": startup}
            directory = StandInDirectory(ports)
            spec = make_spec(tmp_path, ports, ROUTES, **proxy)
            async with running_proxy(spec, directory, timeouts) as running:
                await scenario(running.port, directory)

    asyncio.run(main())


async def raw_exchange(port: int, request: bytes, *, host: str = "127.0.0.1") -> bytes:
    """Send bytes over verified TLS and read the whole answer (the request says close)."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=client_context(), server_hostname="localhost"
    )
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def split_response(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:])]
    return lines[0], headers, body


# --- routing and request headers --------------------------------------------------------------


def test_request_headers_reach_the_service_rewritten_as_a_proxy_should(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        request = (
            b"GET /api/items?q=1 HTTP/1.1\r\n"
            + f"Host: localhost:{port}\r\n".encode()
            + b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: http\r\n"
            b"keep-alive: timeout=5\r\nTE: trailers\r\nPROXY-AUTHORIZATION: Basic x\r\n"
            b"X-DROP-ME: 1\r\nX-Keep-Me: 2\r\nCookie: a=1\r\nconnection: close, x-drop-me\r\n\r\n"
        )
        status, _headers, body = split_response(await raw_exchange(port, request))
        assert status == "HTTP/1.1 200 OK"
        answer = json.loads(body)
        got = headers_of(answer)
        assert answer["service"] == "api"
        assert answer["path"] == "/api/items?q=1"
        assert got["host"] == [f"localhost:{port}"]
        assert got["x-forwarded-for"] == ["127.0.0.1"]
        assert got["x-forwarded-proto"] == ["https"]
        assert got["x-forwarded-host"] == [f"localhost:{port}"]
        assert got["x-keep-me"] == ["2"]
        assert got["cookie"] == ["a=1"]
        for dropped in (
            "keep-alive",
            "te",
            "proxy-authorization",
            "x-drop-me",
            "x-forwarded-prefix",
        ):
            assert dropped not in got, dropped
        assert "connection" not in got

    run_with_services(tmp_path, scenario)


def test_strip_prefix_and_host_routes_choose_the_service(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        async with verified_client() as client:
            base = f"https://localhost:{port}"
            async with client.get(f"{base}/startup/api/ideas?x=1") as resp:
                answer = await resp.json()
            assert (answer["service"], answer["path"]) == ("startup", "/api/ideas?x=1")
            assert headers_of(answer)["x-forwarded-prefix"] == ["/startup"]
            async with client.get(f"{base}/startup") as resp:
                assert (await resp.json())["path"] == "/"
            async with client.get(f"{base}/startupx") as resp:
                assert resp.status == 404  # /startup never matches /startupx
            # Host routes beat path routes; the host matches without case and port.
            headers = {"Host": f"StartUp.LocalHost:{port}"}
            async with client.get(f"{base}/api/x", headers=headers) as resp:
                answer = await resp.json()
            assert (answer["service"], answer["path"]) == ("startup", "/api/x")
            async with client.get(f"{base}/", headers={"Host": f"api.localhost:{port}"}) as resp:
                assert (await resp.json())["service"] == "api"  # the implicit <name>.localhost

    run_with_services(tmp_path, scenario)


def test_requests_go_to_the_current_port_and_reuse_pooled_connections(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[web.Request] = []
        async with upstream(echo_app("old")) as old, upstream(echo_app("new", seen)) as new:
            directory = StandInDirectory({"api": old})
            spec = make_spec(tmp_path, {"api": old}, ROUTES[:1])
            async with running_proxy(spec, directory) as proxy, verified_client() as client:
                async with client.get(f"{proxy.url}/api") as resp:
                    assert (await resp.json())["service"] == "old"
                directory.set("api", ServiceState.READY, port=new)
                for _ in range(20):
                    async with client.get(f"{proxy.url}/api") as resp:
                        assert (await resp.json())["service"] == "new"
                peers = {r.transport.get_extra_info("peername") for r in seen if r.transport}
                assert len(peers) < 5, f"20 requests used {len(peers)} upstream connections"

    asyncio.run(main())


# --- responses ----------------------------------------------------------------------------------


BIG = web.AppKey("big", bytes)


def response_app() -> web.Application:
    big = os.urandom(300_000)

    async def cookies(request: web.Request) -> web.Response:
        resp = web.Response(text="ok", headers={"Connection": "X-Up-Drop", "X-Up-Drop": "1"})
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
        resp.headers["Keep-Alive"] = "timeout=99"
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        size = int(request.query.get("size", "1000"))
        return web.Response(
            body=gzip.compress(big[:size]),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )

    async def upload(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"bytes": len(body), "encoding": request.headers.get("Content-Encoding")}
        )

    app = web.Application()
    app.router.add_get("/api/cookies", cookies)
    app.router.add_get("/api/gzip", gzipped)
    app.router.add_post("/api/upload", upload)
    app[BIG] = big
    return app


def test_response_headers_and_encoded_bodies_pass_through_untouched(tmp_path: Path) -> None:
    async def main() -> None:
        app = response_app()
        async with upstream(app) as api:
            directory = StandInDirectory({"api": api})
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with running_proxy(spec, directory) as proxy, verified_client() as client:
                async with client.get(f"{proxy.url}/api/cookies") as resp:
                    assert resp.headers.getall("Set-Cookie") == [
                        "a=1; Path=/",
                        "b=2; Path=/; HttpOnly",
                    ]
                    for name in ("X-Up-Drop", "Keep-Alive", "Access-Control-Allow-Origin"):
                        assert name not in resp.headers, name
                for size in (1000, 300_000):  # one write, and streamed
                    url = f"{proxy.url}/api/gzip?size={size}"
                    async with client.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                        raw = await resp.read()
                        assert resp.headers["Content-Encoding"] == "gzip"
                    assert gzip.decompress(raw) == app[BIG][:size]
                payload = gzip.compress(b"x" * 100_000)
                async with client.post(
                    f"{proxy.url}/api/upload",
                    data=payload,
                    headers={"Content-Encoding": "gzip"},
                ) as resp:
                    assert await resp.json() == {"bytes": len(payload), "encoding": "gzip"}
                async with client.head(f"{proxy.url}/api/gzip?size=5000") as resp:
                    assert resp.status == 200
                    assert int(resp.headers["Content-Length"]) > 0
                    assert await resp.read() == b""

    asyncio.run(main())


def test_server_sent_events_arrive_chunk_by_chunk(tmp_path: Path) -> None:
    async def main() -> None:
        go_on = asyncio.Event()

        async def events(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: one\n\n")
            await go_on.wait()  # the second event only after the client saw the first
            await resp.write(b"data: two\n\n")
            return resp

        app = web.Application()
        app.router.add_get("/api/events", events)
        async with upstream(app) as api:
            directory = StandInDirectory({"api": api})
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with (
                running_proxy(spec, directory) as proxy,
                verified_client() as client,
                client.get(f"{proxy.url}/api/events") as resp,
            ):
                assert resp.headers["Content-Type"] == "text/event-stream"
                assert await resp.content.readuntil(b"\n\n") == b"data: one\n\n"
                go_on.set()
                assert await resp.content.readuntil(b"\n\n") == b"data: two\n\n"

    asyncio.run(main())


RAW_CASES = [
    # (what the service sends, status the client gets, body the client gets)
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 200, b"until the end"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        201,
        b"ok",
    ),
    (b"this is not HTTP at all\r\n\r\n", 502, None),
]


@pytest.mark.parametrize(("answer", "status", "body"), RAW_CASES)
def test_answers_pass_as_sent_and_garbage_is_a_502(
    tmp_path: Path, answer: bytes, status: int, body: bytes | None
) -> None:
    async def main() -> None:
        async with raw_upstream(answer, close_after=True) as api:
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with (
                running_proxy(spec, StandInDirectory({"api": api})) as proxy,
                verified_client() as client,
                client.get(f"{proxy.url}/api") as resp,
            ):
                assert resp.status == status
                if body is not None:
                    assert await resp.read() == body
                    assert "Content-Type" not in resp.headers  # none sent, none added

    asyncio.run(main())


def test_hop_by_hop_answer_headers_are_dropped_whatever_their_case(tmp_path: Path) -> None:
    async def main() -> None:
        answer = (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, X-Secret\r\n"
            b"x-secret: 1\r\nkeep-alive: timeout=5\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"
            b"x-kept: yes\r\n\r\nok"
        )
        async with raw_upstream(answer, close_after=False) as api:
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with (
                running_proxy(spec, StandInDirectory({"api": api})) as proxy,
                verified_client() as client,
                client.get(f"{proxy.url}/api") as resp,
            ):
                assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
                assert resp.headers["X-Kept"] == "yes"
                assert "X-Secret" not in resp.headers and "Keep-Alive" not in resp.headers

    asyncio.run(main())


def test_an_answer_cut_short_by_the_service_is_cut_short_for_the_client(tmp_path: Path) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
        async with raw_upstream(answer, close_after=True) as api:
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with (
                running_proxy(spec, StandInDirectory({"api": api})) as proxy,
                verified_client() as client,
                client.get(f"{proxy.url}/api") as resp,
            ):
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()

    asyncio.run(main())


def test_pooled_connections_the_service_closed_are_not_a_failure(tmp_path: Path) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        async with raw_upstream(answer, close_after=True) as api:
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with running_proxy(spec, StandInDirectory({"api": api})) as proxy, \
                    verified_client() as client:  # fmt: skip
                for _ in range(10):
                    async with client.get(f"{proxy.url}/api") as resp:
                        assert (resp.status, await resp.read()) == (200, b"ok")

    asyncio.run(main())


# --- the host check, unknown paths -----------------------------------------------------------


def test_foreign_hosts_get_a_403_page_and_never_reach_a_service(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[web.Request] = []
        async with upstream(echo_app("api", seen)) as api:
            directory = StandInDirectory({"api": api})
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1], hosts=("myapp.test",))
            async with running_proxy(spec, directory) as proxy, verified_client() as client:
                for host in ("evil.example", "localhost.evil.example", "127.0.0.2"):
                    headers = {"Host": f"{host}:{proxy.port}"}
                    async with client.get(f"{proxy.url}/api", headers=headers) as resp:
                        assert resp.status == 403
                        page = await resp.text()
                    assert "proxy: {hosts: [" in page and host in page
                accept = {"Host": "evil.example", "Accept": "application/json"}
                async with client.get(f"{proxy.url}/api", headers=accept) as resp:
                    assert resp.status == 403
                    assert "evil.example" in (await resp.json())["error"]
                assert seen == []
                for host in ("myapp.test", "[::1]", "127.0.0.1", "anything.localhost"):
                    headers = {"Host": f"{host}:{proxy.port}"}
                    async with client.get(f"{proxy.url}/api", headers=headers) as resp:
                        assert resp.status == 200, host
                assert len(seen) == 4

    asyncio.run(main())


def test_unknown_paths_get_a_404_listing_the_routes(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        async with verified_client() as client:
            async with client.get(f"https://localhost:{port}/nope") as resp:
                assert resp.status == 404
                assert resp.content_type == "text/html"
                page = await resp.text()
            assert "/startup" in page and "service api" in page and "startup.localhost" in page
            headers = {"Accept": "application/json"}
            async with client.get(f"https://localhost:{port}/nope", headers=headers) as resp:
                assert resp.status == 404
                routes = (await resp.json())["routes"]
            assert {"host": None, "path": "/api", "target": "service api"}.items() <= routes[
                [r["path"] for r in routes].index("/api")
            ].items()

    run_with_services(tmp_path, scenario)


# --- services that are not there ----------------------------------------------------------------


def test_a_request_is_held_while_its_service_starts_then_goes_through(tmp_path: Path) -> None:
    async def scenario(port: int, directory: StandInDirectory) -> None:
        directory.set("api", ServiceState.STARTING)
        async with verified_client() as client:
            pending = asyncio.ensure_future(client.get(f"https://localhost:{port}/api/held"))
            await async_wait_until(lambda: directory.waiting == 1, message="the request to wait")
            assert not pending.done()
            directory.set("api", ServiceState.READY)
            async with await pending as resp:
                assert resp.status == 200
                assert (await resp.json())["path"] == "/api/held"

    run_with_services(tmp_path, scenario)


def test_a_service_still_starting_after_the_wait_gets_a_503(tmp_path: Path) -> None:
    async def scenario(port: int, directory: StandInDirectory) -> None:
        directory.set("api", ServiceState.STARTING)
        async with verified_client() as client, client.get(f"https://localhost:{port}/api") as r:
            assert r.status == 503
            assert "still starting" in await r.text()

    run_with_services(tmp_path, scenario, wait_seconds=0.2)


def test_a_crashed_service_gets_a_502_page_with_its_last_lines(tmp_path: Path) -> None:
    async def scenario(port: int, directory: StandInDirectory) -> None:
        directory.set(
            "api",
            ServiceState.CRASHED,
            exit_code=3,
            reason="exited with code 3",
            last_lines=("Traceback (most recent call last):", "ValueError: <script>x</script>"),
        )
        async with verified_client() as client:
            url = f"https://localhost:{port}/api"
            async with client.get(url, headers={"Accept": "text/html"}) as resp:
                assert resp.status == 502
                page = await resp.text()
            assert "api" in page and "crashed" in page and "exited with code 3" in page
            assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
            async with client.get(url, headers={"Accept": "application/json"}) as resp:
                assert resp.status == 502
                answer = await resp.json()
            assert answer["service"] == "api"
            assert answer["state"] == "crashed"
            assert answer["exit_code"] == 3
            assert answer["last_lines"][-1] == "ValueError: <script>x</script>"

    run_with_services(tmp_path, scenario)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_refused_connection_during_a_restart_waits_and_is_retried_once(tmp_path: Path) -> None:
    async def main() -> None:
        directory = StandInDirectory({"api": closed_port()})
        spec = make_spec(tmp_path, {"api": 1}, ROUTES[:1])
        async with running_proxy(spec, directory) as proxy, verified_client() as client:
            calls = 0
            original = directory.status

            def counting(name: str) -> object:
                nonlocal calls
                calls += 1
                return original(name)

            directory.status = counting  # type: ignore[method-assign,assignment]
            pending = asyncio.ensure_future(client.post(f"{proxy.url}/api/x", data=b"body"))
            await async_wait_until(lambda: calls >= 2, message="the proxy to see the refusal")
            directory.set("api", ServiceState.STARTING)
            await async_wait_until(lambda: directory.waiting == 1, message="a wait for ready")
            async with upstream(echo_app("api")) as api:
                directory.set("api", ServiceState.READY, port=api)
                async with await pending as resp:
                    assert resp.status == 200
                    assert (await resp.json())["body_bytes"] == 4

    asyncio.run(main())


def test_a_service_that_stays_refused_gets_a_502(tmp_path: Path) -> None:
    async def main() -> None:
        directory = StandInDirectory({"api": closed_port()})
        spec = make_spec(tmp_path, {"api": 1}, ROUTES[:1])
        async with running_proxy(spec, directory) as proxy, verified_client() as client:
            headers = {"Accept": "application/json"}
            async with client.get(f"{proxy.url}/api", headers=headers) as resp:
                assert resp.status == 502
                assert "nothing accepts connections" in (await resp.json())["error"]

    asyncio.run(main())


def test_a_service_that_never_answers_gets_a_504(tmp_path: Path) -> None:
    async def main() -> None:
        never = asyncio.Event()

        async def silent(request: web.Request) -> web.Response:
            await never.wait()
            return web.Response()

        app = web.Application()
        app.router.add_get("/api/slow", silent)
        async with upstream(app) as api:
            directory = StandInDirectory({"api": api})
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1], upstream_timeout_seconds=0.3)
            async with running_proxy(spec, directory) as proxy, verified_client() as client:
                try:
                    async with client.get(f"{proxy.url}/api/slow") as resp:
                        assert resp.status == 504
                        assert "api" in await resp.text()
                finally:
                    never.set()

    asyncio.run(main())


# --- the listening side ------------------------------------------------------------------------


def test_plain_http_on_the_https_port_is_redirected(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        result = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
             f"http://localhost:{port}/api/x?y=1"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert result.stdout == f"308 https://localhost:{port}/api/x?y=1"

    run_with_services(tmp_path, scenario)


def test_the_optional_http_port_only_redirects(tmp_path: Path, free_port: int) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        async with aiohttp.ClientSession() as plain:
            url = f"http://localhost:{free_port}/api/x?y=1"
            async with plain.get(url, allow_redirects=False) as resp:
                assert resp.status == 308
                assert resp.headers["Location"] == f"https://localhost:{port}/api/x?y=1"
            evil = {"Host": "evil.example"}
            async with plain.get(url, headers=evil, allow_redirects=False) as resp:
                assert resp.status == 403

    run_with_services(tmp_path, scenario, http_port=free_port)


def test_expect_100_continue_is_answered_before_the_body_is_sent(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        payload = tmp_path / "payload.bin"
        payload.write_bytes(b"z" * 3_000_000)
        result = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "--cacert", str(ca_cert_path()), "--expect100-timeout", "60",
             "-H", "Expect: 100-continue", "--data-binary", f"@{payload}",
             f"https://localhost:{port}/api/upload"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        answer = json.loads(result.stdout)
        assert answer["body_bytes"] == 3_000_000
        assert "expect" not in headers_of(answer)

    run_with_services(tmp_path, scenario)


def test_a_client_that_never_finishes_its_headers_is_dropped(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        writer.write(b"GET /api HTTP/1.1\r\nHost: local")  # and nothing more
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()

    run_with_services(tmp_path, scenario, timeouts=ProxyTimeouts(idle_seconds=0.3))


def test_curl_and_openssl_verify_the_certificate_against_the_ca(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        ca = str(ca_cert_path())
        for url in (f"https://localhost:{port}/api/c", f"https://api.localhost:{port}/c"):
            result = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "--cacert", ca,
                 "--resolve", f"api.localhost:{port}:127.0.0.1", url],
                capture_output=True, text=True, timeout=10, check=True,
            )  # fmt: skip
            assert json.loads(result.stdout)["service"] == "api"
        result = await asyncio.to_thread(
            subprocess.run,
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-verify_return_error", "-CAfile", ca, "-verify_hostname", "localhost"],
            input="", capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Verify return code: 0 (ok)" in result.stdout

    run_with_services(tmp_path, scenario)


def test_ipv6_loopback_is_served_when_the_machine_has_it(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    async def scenario(port: int, _: StandInDirectory) -> None:
        try:
            raw = await raw_exchange(
                port,
                b"GET /api/six HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n",
                host="::1",
            )
        except OSError as exc:
            pytest.skip(f"::1 not usable here: {exc}")
        assert split_response(raw)[0] == "HTTP/1.1 200 OK"

    run_with_services(tmp_path, scenario)


def test_a_silent_client_is_dropped_after_the_deadline(tmp_path: Path) -> None:
    async def scenario(port: int, _: StandInDirectory) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the proxy, not by us
        writer.close()

    run_with_services(tmp_path, scenario, timeouts=ProxyTimeouts(first_byte_seconds=0.2))


def test_a_taken_port_fails_at_once_naming_its_holder(tmp_path: Path) -> None:
    async def main() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            spec = make_spec(tmp_path, {"api": 1})
            proxy = Proxy(spec, StandInDirectory({"api": 1}), ssl.create_default_context(),
                          port=taken)  # fmt: skip
            with pytest.raises(PortError) as caught:
                await proxy.start()
        assert str(caught.value).startswith(f"proxy port {taken} is held by pid {os.getpid()}")
        assert str(caught.value).endswith("; stop it or use --port N")

    asyncio.run(main())


def test_the_access_log_has_one_debug_line_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devstack.access")

    async def scenario(port: int, _: StandInDirectory) -> None:
        async with verified_client() as client, client.get(f"https://localhost:{port}/api/l"):
            pass

    run_with_services(tmp_path, scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "devstack.access"]
    assert len(lines) == 1
    method, path, status, service, ms = lines[0].split()
    assert (method, path, status, service) == ("GET", "/api/l", "200", "api")
    assert ms.endswith("ms")


def test_a_client_that_leaves_while_held_costs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(port: int, directory: StandInDirectory) -> None:
        directory.set("api", ServiceState.STARTING)
        async with verified_client() as client:
            pending = asyncio.ensure_future(client.get(f"https://localhost:{port}/api"))
            await async_wait_until(lambda: directory.waiting == 1, message="the request to wait")
            pending.cancel()
        await async_wait_until(lambda: directory.waiting == 0, message="the held request to end")

    run_with_services(tmp_path, scenario)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_client_that_leaves_mid_upload_costs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        received = asyncio.Event()

        async def upload(request: web.Request) -> web.Response:
            try:
                async for _ in request.content.iter_any():
                    received.set()
            finally:
                received.set()
            return web.Response(text="done")

        app = web.Application()
        app.router.add_post("/api/up", upload)
        async with upstream(app) as api:
            directory = StandInDirectory({"api": api})
            spec = make_spec(tmp_path, {"api": api}, ROUTES[:1])
            async with running_proxy(spec, directory) as proxy:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", proxy.port, ssl=client_context(), server_hostname="localhost"
                )
                writer.write(
                    b"POST /api/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n"
                    b"\r\n" + b"a" * 1000
                )
                await writer.drain()
                async with asyncio.timeout(5):
                    await received.wait()
                writer.transport.abort()
                # The next request still works: nothing in the proxy is stuck or broken.
                async with (
                    verified_client() as client,
                    client.post(f"{proxy.url}/api/up", data=b"x" * 10) as resp,
                ):
                    assert (resp.status, await resp.text()) == (200, "done")

    asyncio.run(main())
    problems = [
        r for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("devstack", "asyncio"))
    ]  # fmt: skip
    assert problems == []


def test_aiohttp_session_rejects_an_untrusted_certificate(tmp_path: Path) -> None:
    """The tests' client really verifies: a default trust store does not know our CA."""

    async def scenario(port: int, _: StandInDirectory) -> None:
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await plain.get(f"https://localhost:{port}/api")

    run_with_services(tmp_path, scenario)
