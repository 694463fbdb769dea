"""Host and origin, on both lanes and under both parsers: a foreign Host is refused before any
service is even connected to; the proxy adds no CORS header to any answer (a service's own
CORS policy is its own); ``/_devstack/`` refuses cross-site use; the control socket is not
reachable by another user and acts on nothing that is not its own protocol.

Complements tests/component/test_proxy.py (the 403 page and the allowed names) and
tests/component/test_live_reload.py (the script and socket refused to other origins).
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.component.test_front_door as front
from devstack.control.protocol import StackInfo
from devstack.control.server import ControlServer
from devstack.status import ServiceState, ServiceStatus
from tests.component.test_front_door import FrontDoor, connect, front_door
from tests.conditions import async_wait_until
from tests.reliability.raw import get

FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "localhost.evil.example:{port}",
    "evil.example.:{port}",
    "127.0.0.1.evil.example",
    "localhost:{port}.evil.example",
    "xn--localhost-.example",
    "EVIL.EXAMPLE:{port}",
]


class CountingStub(front.Stub):
    """A stub that also counts the connections made to it."""

    connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await super().serve(reader, writer)


@pytest.fixture(autouse=True)
def counting_stubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(front, "Stub", CountingStub)
    yield


def connections(door: FrontDoor) -> int:
    return sum(getattr(stub, "connections", 0) for stub in (door.a, door.b))


async def answer_to(door: FrontDoor, request: bytes) -> front.Answer:
    async with connect(door) as client:
        await client.send(request.replace(b"{host}", door.host.encode()))
        return await client.answer()


def test_a_foreign_host_is_refused_before_any_service_is_connected_to(
    tmp_path: Path, lane: str, parser: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            port = door.proxy.port
            for host in FOREIGN_HOSTS:
                for target in ("/api/x", "/", "/_devstack/live.js", f"https://{host}/api/x"):
                    value = host.format(port=port)
                    request = get(target=target.format(port=port).encode())
                    request = request.replace(b"{host}", value.encode())
                    answer = await answer_to(door, request)
                    assert answer.status in (400, 403), (host, target, answer.status)
                    assert answer.headers["x-devstack"] == "proxy"
            assert connections(door) == 0, "a service was connected to"
            assert door.forwarded == b""
            assert (await answer_to(door, get())).status == 200  # and the proxy still serves

    asyncio.run(main())


def test_forwarded_headers_from_the_client_are_never_trusted(
    tmp_path: Path, lane: str, parser: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            spoofed = get(
                b"X-Forwarded-Host: evil.example",
                b"X-Forwarded-For: 10.9.9.9",
                b"X-Forwarded-Proto: http",
                b"X-Forwarded-Prefix: /evil",
                b"Forwarded: for=10.9.9.9;host=evil.example;proto=http",
            )
            assert (await answer_to(door, spoofed)).status == 200
            head = bytes(door.a.received).decode("latin-1").lower()
            assert "evil" not in head and "10.9.9.9" not in head, head
            assert f"x-forwarded-host: {door.host}" in head
            assert "x-forwarded-proto: https" in head

    asyncio.run(main())


CROSS_SITE = [b"Origin: https://evil.example", b"Sec-Fetch-Site: cross-site"]


def test_no_answer_gets_cors_headers_from_the_proxy(tmp_path: Path, lane: str, parser: str) -> None:
    requests = {
        "service": get(CROSS_SITE[0]),
        "preflight": b"OPTIONS /api/x HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example"
        b"\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
        "static": get(CROSS_SITE[0], target=b"/"),
        "static-missing": get(CROSS_SITE[0], target=b"/missing.js"),
        "script": get(target=b"/_devstack/live.js"),
        "script-cross-site": get(CROSS_SITE[0], target=b"/_devstack/live.js"),
        "refusal": get(CROSS_SITE[0], target=b"/../etc/passwd"),
        "foreign-host": b"GET /api/x HTTP/1.1\r\nHost: evil.example\r\nOrigin: https://evil.example\r\n\r\n",
        "options-star": b"OPTIONS * HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\n\r\n",
    }

    async def main() -> dict[str, list[str]]:
        added = {}
        async with front_door(tmp_path) as door:
            for name, request in requests.items():
                answer = await answer_to(door, request)
                cors = [h for h in answer.headers if h.startswith("access-control-")]
                if cors:
                    added[name] = cors
            assert door.a.lines.count("OPTIONS /api/x HTTP/1.1") == 1, (
                "the preflight is the service's"
            )
        return added

    assert asyncio.run(main()) == {}


def _handshake(origin: bytes | None) -> bytes:
    key = base64.b64encode(os.urandom(16))
    fields = [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
              b"Sec-WebSocket-Key: " + key]  # fmt: skip
    if origin is not None:
        fields.append(b"Origin: " + origin)
    return get(*fields, target=b"/_devstack/live")


def test_devstack_endpoints_refuse_cross_site_use(tmp_path: Path, lane: str, parser: str) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            port = str(door.proxy.port).encode()
            for origin in (
                b"https://evil.example",
                b"https://evil.example:" + port,
                b"http://localhost:" + port,
                b"https://localhost:" + str(door.proxy.port + 1).encode(),
                b"https://localhost:" + port + b"/path",
                b"https://user@localhost:" + port,
                b"null",
                None,
            ):
                answer = await answer_to(door, _handshake(origin))
                assert answer.status == 403, origin
            own = await answer_to(door, _handshake(b"https://localhost:" + port))
            assert own.status == 101
            for cross in CROSS_SITE:
                answer = await answer_to(door, get(cross, target=b"/_devstack/live.js"))
                assert answer.status == 403, cross
            for method in (b"POST", b"PUT", b"DELETE"):
                request = get(b"Content-Length: 0", line=method + b" /_devstack/live.js HTTP/1.1")
                assert (await answer_to(door, request)).status == 405, method
            assert (await answer_to(door, get(target=b"/_devstack/anything"))).status == 404
            assert door.forwarded == b""

    asyncio.run(main())


class Controlled:
    def __init__(self) -> None:
        self.acted: list[str] = []

    def statuses(self) -> list[ServiceStatus]:
        return [ServiceStatus(name="web", state=ServiceState.READY, port=1)]

    def restart(self, name: str) -> None:
        self.acted.append(f"restart {name}")

    def stop(self, name: str) -> None:
        self.acted.append(f"stop {name}")

    def start(self, name: str) -> None:
        self.acted.append(f"start {name}")

    def request_shutdown(self, *, force: bool = False) -> None:
        self.acted.append("down")


CROSS_SITE_CONTROL = [
    b"POST / HTTP/1.1\r\nHost: localhost\r\nOrigin: https://evil.example\r\nContent-Type: "
    b'text/plain\r\nContent-Length: 20\r\n\r\n{"command": "down"}\n',
    b'GET /?{"command":"down"} HTTP/1.1\r\nHost: localhost\r\n\r\n',
    b'{"command": "down"} HTTP/1.1\r\n',
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",  # a TLS hello
]


def test_the_control_socket_is_the_owners_only_and_acts_on_its_protocol_only(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        state = tmp_path / ".devstack"
        state.mkdir(mode=0o700)
        path = state / "control.sock"
        controlled = Controlled()
        info = StackInfo(manifest=tmp_path / "devstack.yaml", pid=os.getpid())
        server = ControlServer(path, controlled, info, state / "logs")
        until = asyncio.get_running_loop().create_future()
        serving = asyncio.ensure_future(server.serve(until))
        try:
            await async_wait_until(path.exists, message="the control socket")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            for request in CROSS_SITE_CONTROL:
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(request)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                assert b'"ok": false' in answer or b'"ok":false' in answer, answer
            assert controlled.acted == []
            assert not _listens_on_tcp(os.getpid()), "the control server opened a TCP port"
        finally:
            until.set_result(None)
            await serving

    asyncio.run(main())


def _listens_on_tcp(pid: int) -> bool:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        with open(f"/proc/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    return True
    return False


def test_an_origin_that_is_not_utf8_is_refused_without_a_traceback(
    tmp_path: Path, lane: str, parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the proxy fuzzer: under the pure-Python parser a header's bytes that are not
    # UTF-8 arrive as surrogates, and the page echoing the Origin could not be encoded (a 500
    # and a traceback).
    async def main() -> None:
        async with front_door(tmp_path) as door:
            for target in (b"/_devstack/live.js", b"/_devstack/live"):
                request = get(b"Origin: https://\xff\xfe.example", target=target)
                answer = await answer_to(door, request)
                assert answer.status == 403, target
            assert door.forwarded == b""

    asyncio.run(main())
    assert [r for r in caplog.records if r.exc_info] == []
