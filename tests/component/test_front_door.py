"""The front door's request rules (devstack/proxy/target.py), over real TLS on both lanes.

Each test sends exact bytes on a verified TLS connection to a proxy in front of two stub
services that record every byte they receive, and asserts the same outcome on both lanes
(:data:`tests.component.test_proxy_harness.LANES`): with the fast lane on, a plain GET is
answered there and anything else handed over; with the access log on, the full proxy takes
everything. What a refused request must never do is reach a service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec
from devstack.proxy.server import Proxy, ProxyTimeouts
from devstack.proxy.target import MAX_FIELDS, BodyPace
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    use_lane,
)
from tests.conditions import async_wait_until

ROUTES = (
    RouteSpec(path="/api", service="a"),
    RouteSpec(path="/api/admin", service="b"),
    RouteSpec(path="/startup", service="b", strip_prefix=True),
    RouteSpec(path="/", static=Path("public")),
)


@pytest.fixture(autouse=True, params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


@dataclass
class Stub:
    """A service that records every byte it receives and answers each request with its name
    and request line (as JSON)."""

    name: str
    received: bytearray = field(default_factory=bytearray)
    lines: list[str] = field(default_factory=list)
    closed: int = 0
    """Connections that ended (the proxy closed or cut them)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += head
                line, *fields = head.decode("latin-1").split("\r\n")
                self.lines.append(line)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (f.partition(":") for f in fields if f)}  # fmt: skip
                await self._read_body(reader, headers)
                body = json.dumps({"service": self.name, "line": line}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        if "chunked" in headers.get("transfer-encoding", ""):
            while not self.received.endswith(b"0\r\n\r\n"):
                self.received += await reader.readuntil(b"\r\n")
            return
        left = int(headers.get("content-length", "0"))
        while left:
            chunk = await reader.read(left)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            self.received += chunk
            left -= len(chunk)


@dataclass
class FrontDoor:
    proxy: Proxy
    a: Stub
    b: Stub

    @property
    def host(self) -> str:
        return f"localhost:{self.proxy.port}"

    @property
    def forwarded(self) -> bytes:
        return bytes(self.a.received + self.b.received)


@asynccontextmanager
async def front_door(
    tmp_path: Path, timeouts: ProxyTimeouts | None = None
) -> AsyncIterator[FrontDoor]:
    """Stubs ``a`` and ``b`` behind a proxy with :data:`ROUTES` (``/`` serves ``public/``)."""
    (tmp_path / "public" / "docs").mkdir(parents=True)
    (tmp_path / "public" / "index.html").write_text("home")
    (tmp_path / "public" / "docs" / "index.html").write_text("docs")
    a, b = Stub("a"), Stub("b")
    server_a = await asyncio.start_server(a.serve, "127.0.0.1", 0)
    server_b = await asyncio.start_server(b.serve, "127.0.0.1", 0)
    ports = {"a": server_a.sockets[0].getsockname()[1], "b": server_b.sockets[0].getsockname()[1]}
    try:
        spec = make_spec(tmp_path, ports, ROUTES)
        async with running_proxy(spec, StandInDirectory(ports), timeouts) as proxy:
            yield FrontDoor(proxy, a, b)
    finally:
        for server in (server_a, server_b):
            server.close()
            await server.wait_closed()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, str]:
        answer: dict[str, str] = json.loads(self.body)
        return answer


class Client:
    """One verified TLS connection that sends exact bytes and reads answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)
            }
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split()[1]), headers, body)

    async def is_closed(self) -> bool:
        """The proxy closes the connection (EOF), within a deadline."""
        async with asyncio.timeout(5):
            return await self.reader.read() == b""


@asynccontextmanager
async def connect(door: FrontDoor, *, tls: bool = True) -> AsyncIterator[Client]:
    ssl = {"ssl": client_context(), "server_hostname": "localhost"} if tls else {}
    reader, writer = await asyncio.open_connection("127.0.0.1", door.proxy.port, **ssl)  # type: ignore[arg-type]
    try:
        yield Client(reader, writer)
    finally:
        writer.transport.abort()


async def ask(door: FrontDoor, request: bytes) -> Answer:
    async with connect(door) as client:
        await client.send(request)
        return await client.answer()


def get(
    target: str, host: str | None, *extra: str, method: str = "GET", version: str = "1.1"
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    lines += [f"Host: {host}"] if host is not None else []
    return "\r\n".join([*lines, *extra, "", ""]).encode()


# --- 1. dot segments and encoded slashes --------------------------------------------------------

ROUTED = [
    # (target as sent, service, request line it receives)
    ("/api/../api/admin/x", "b", "GET /api/admin/x HTTP/1.1"),
    ("/api/%2e%2e/api/admin/x", "b", "GET /api/admin/x HTTP/1.1"),
    ("/api/admin/../../startup/x", "b", "GET /x HTTP/1.1"),
    ("/startup/../api/x", "a", "GET /api/x HTTP/1.1"),
    ("/api/./admin/y?q=/../1", "b", "GET /api/admin/y?q=/../1 HTTP/1.1"),
    ("/api/admin%2Fx", "a", "GET /api/admin%2Fx HTTP/1.1"),
    ("/startup/%7e/a%2fb", "b", "GET /~/a%2Fb HTTP/1.1"),
]


@pytest.mark.parametrize(("target", "service", "line"), ROUTED)
def test_the_path_is_normalized_before_routing_and_sent_as_matched(
    tmp_path: Path, lane: str, target: str, service: str, line: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            answer = await ask(door, get(target, door.host))
            assert answer.status == 200, answer.body
            assert answer.json() == {"service": service, "line": line}
            other = door.a if service == "b" else door.b
            assert other.received == b""
            fast = door.proxy.fast_lane
            if lane == "fast":
                assert fast is not None and fast.handovers == 0, "the fast lane answered"

    asyncio.run(main())


def test_a_body_takes_the_full_proxy_and_the_same_rules(tmp_path: Path, lane: str) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            request = get("/startup/../api/x", door.host, "Content-Length: 2", method="POST")
            answer = await ask(door, request + b"hi")
            assert answer.json() == {"service": "a", "line": "POST /api/x HTTP/1.1"}
            assert door.a.received.endswith(b"\r\n\r\nhi")

    asyncio.run(main())


def test_an_encoded_slash_is_data_not_a_separator(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            # /api%2fadmin is one segment: under neither /api nor /api/admin, so the static
            # root answers, and a static route never serves an encoded slash.
            for target in ("/api%2fadmin/x", "/docs%2Findex.html"):
                assert (await ask(door, get(target, door.host))).status == 404, target
            assert (await ask(door, get("/docs/index.html", door.host))).body.startswith(b"docs")
            assert door.forwarded == b""

    asyncio.run(main())


@pytest.mark.parametrize("target", ["/..", "/api/../../x", "/api/%2e%2e/%2E%2E/etc", "/api/a%zz"])
def test_a_path_climbing_above_the_root_or_malformed_is_refused(
    tmp_path: Path, target: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            await client.send(get(target, door.host, "Accept: application/json"))
            answer = await client.answer()
            assert answer.status == 400
            assert answer.headers["x-devstack"] == "proxy"
            assert answer.headers["connection"] == "close"
            assert "error" in answer.json()
            assert await client.is_closed()
            assert door.forwarded == b""

    asyncio.run(main())


# --- 7. Host values that are not hosts ----------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost:{port}@attacker.example",
        "attacker.example/.localhost",
        "attacker.example#.localhost",
        "localhost:{port} evil",
        "localhost:99999",
        "",
        None,
    ],
)
def test_a_host_that_is_not_host_port_is_refused(tmp_path: Path, host: str | None) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            value = None if host is None else host.format(port=door.proxy.port)
            answer = await ask(door, get("/api/x", value))
            assert answer.status == 400, answer.body
            assert answer.headers["x-devstack"] == "proxy"
            assert door.forwarded == b""

    asyncio.run(main())


def test_two_hosts_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            answer = await ask(door, get("/api/x", door.host, "Host: attacker.example"))
            assert answer.status == 400
            assert door.forwarded == b""

    asyncio.run(main())


# --- 4. not a forward proxy ---------------------------------------------------------------------


def test_the_absolute_form_is_taken_only_for_a_served_host_and_sent_in_origin_form(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            answer = await ask(door, get("http://evil.example/api/x", door.host))
            assert answer.status == 403
            assert door.forwarded == b""
            answer = await ask(door, get(f"https://{door.host}/api/../api/x?y=1", door.host))
            assert answer.json() == {"service": "a", "line": "GET /api/x?y=1 HTTP/1.1"}

    asyncio.run(main())


def test_connect_is_refused_and_options_star_answered_by_the_proxy(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            async with connect(door) as client:
                await client.send(get("evil.example:443", "evil.example:443", method="CONNECT"))
                answer = await client.answer()
                assert answer.status == 405
                assert "GET" in answer.headers["allow"]
                assert await client.is_closed()
            answer = await ask(door, get("*", door.host, method="OPTIONS"))
            assert answer.status == 200
            assert "OPTIONS" in answer.headers["allow"]
            assert answer.headers["x-devstack"] == "proxy"
            assert (await ask(door, get("*", door.host))).status == 400
            assert door.forwarded == b""

    asyncio.run(main())


# --- 2. head limits -----------------------------------------------------------------------------


def test_heads_over_the_limits_are_refused_alike_on_both_lanes(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            long_line = get("/api/" + "x" * 9000, door.host)
            assert (await ask(door, long_line)).status == 414
            long_field = get("/api/x", door.host, "X-Big: " + "y" * 20_000)
            assert (await ask(door, long_field)).status == 431
            many = [f"X-{i}: {i}" for i in range(1000)]
            assert (await ask(door, get("/api/x", door.host, *many))).status == 431
            one_too_many = get("/api/x", door.host, *many[:MAX_FIELDS])
            assert (await ask(door, one_too_many)).status == 431
            assert door.forwarded == b""
            at_the_limit = get("/api/x", door.host, *many[: MAX_FIELDS - 1])
            assert (await ask(door, at_the_limit)).status == 200
            just_under = get("/api/" + "x" * 8000, door.host, "X-Big: " + "y" * 8000)
            assert (await ask(door, just_under)).status == 200

    asyncio.run(main())


# --- 6. HTTP/1.0 with Transfer-Encoding ---------------------------------------------------------


def test_http_1_0_with_transfer_encoding_is_refused_and_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            request = get("/api/x", door.host, "Transfer-Encoding: chunked", method="POST",
                          version="1.0")  # fmt: skip
            await client.send(request + b"5\r\nhello\r\n0\r\n\r\n")
            answer = await client.answer()
            assert answer.status == 400
            assert answer.headers["connection"] == "close"
            assert await client.is_closed()
            assert door.forwarded == b""

    asyncio.run(main())


# --- 3 and 9. redirects -------------------------------------------------------------------------


def test_a_folder_redirect_stays_on_this_origin(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            answer = await ask(door, get("//docs?x=1", door.host))
            assert (answer.status, answer.headers["location"]) == (308, "/docs/?x=1")
            answer = await ask(door, get("/api/../docs", door.host))
            assert (answer.status, answer.headers["location"]) == (308, "/docs/")

    asyncio.run(main())


def test_plain_http_gets_its_redirect_and_the_connection_closes(tmp_path: Path) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door, tls=False) as client:
            await client.send(get("//evil.example/x?y=1", door.host))
            answer = await client.answer()
            assert answer.status == 308
            assert answer.headers["location"] == f"https://{door.host}/evil.example/x?y=1"
            assert answer.headers["connection"] == "close"
            assert await client.is_closed(), "the proxy closes the connection after a redirect"

    asyncio.run(main())


# --- 10. no tracebacks --------------------------------------------------------------------------

MALFORMED = [
    b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    b"GET /api/\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"BREW /api/x HTCPCP/1.0\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /../x HTTP/1.1\r\nHost: localhost\r\n\r\n",
]


def test_malformed_requests_get_a_4xx_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devstack.proxy")

    async def main() -> None:
        async with front_door(tmp_path) as door:
            for request in MALFORMED:
                answer = await ask(door, request)
                assert 400 <= answer.status < 500, request
            assert door.forwarded == b""

    asyncio.run(main())
    traced = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert traced == []
    loud = [
        r for r in caplog.records if r.levelno >= logging.INFO and "listening" not in r.getMessage()
    ]
    assert loud == []
    refusals = [
        r
        for r in caplog.records
        if r.name.startswith("devstack.proxy") and "refused" in r.getMessage()
    ]
    assert len(refusals) <= len(MALFORMED), "at most one line per bad request"


# --- 5. slow bodies -----------------------------------------------------------------------------


def test_a_body_that_trickles_is_cut_off(tmp_path: Path) -> None:
    async def main() -> None:
        pace = BodyPace(idle_seconds=0.2, min_bytes_per_second=100)
        async with front_door(tmp_path, ProxyTimeouts(body_pace=pace)) as door, \
                connect(door) as client:  # fmt: skip
            loop = asyncio.get_running_loop()
            started = loop.time()
            head = get("/api/up", door.host, "Content-Length: 100000", method="POST")
            await client.send(head)

            async def trickle() -> None:  # one byte every 20 ms: 50 bytes/s
                while True:
                    client.writer.write(b"z")
                    await asyncio.sleep(0.02)  # the client's schedule, not a wait

            sending = asyncio.create_task(trickle())
            try:
                answer = await client.answer()
            finally:
                sending.cancel()
            assert answer.status == 408
            assert answer.headers["connection"] == "close"
            assert loop.time() - started < 5
            await async_wait_until(lambda: door.a.closed == 1, message="the upstream request cut")
            assert len(door.a.received) < 1000

    asyncio.run(main())
