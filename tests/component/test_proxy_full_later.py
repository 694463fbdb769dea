"""The proxy serving with its fast lane before the full proxy has loaded (``start(full=False)``,
as ``devstack up`` and ``devstack run`` start it): plain requests are answered at once; what
needs the full proxy (a request the fast lane hands over, plain HTTP for the redirect) waits,
says so (``full_wanted``), and is answered once :meth:`Proxy.start_full` ran; a proxy stopped
before that closes what waited. Real TLS on loopback, verified against devstack's CA."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec, StackSpec
from devstack.proxy.routing import certificate_hosts
from devstack.proxy.server import Proxy
from devstack.tls.ca import ServerCertificate, client_context, load_or_create_ca
from tests.component.test_proxy_harness import StandInDirectory, make_spec
from tests.conditions import async_wait_until

FILE_REQUEST = b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
HANDED_OVER = b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
"""The fast lane leaves ``OPTIONS *`` to the full proxy."""


def files_spec(tmp_path: Path) -> StackSpec:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("a" * 100)
    return make_spec(tmp_path, {"api": 1}, (RouteSpec(path="/", static=Path("public")),))


@asynccontextmanager
async def fast_lane_only(spec: StackSpec) -> AsyncIterator[Proxy]:
    certificate = ServerCertificate(load_or_create_ca(), certificate_hosts(spec))
    proxy = Proxy(spec, StandInDirectory({"api": 1}), certificate.context, port=0)
    await proxy.start(full=False)
    try:
        yield proxy
    finally:
        await proxy.stop()


def exchange(port: int, request: bytes, *, tls: bool = True) -> bytes:
    """One request on a new connection (blocking, run in a thread): the answer, up to the
    proxy's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        sock = client_context().wrap_socket(raw, server_hostname="localhost") if tls else raw
        with sock:
            sock.sendall(request)
            answer = b""
            with contextlib.suppress(ssl.SSLError):  # close_notify crossing the last bytes
                while chunk := sock.recv(65536):
                    answer += chunk
            return answer


def send(port: int, request: bytes, *, tls: bool = True) -> asyncio.Future[bytes]:
    return asyncio.ensure_future(asyncio.to_thread(exchange, port, request, tls=tls))


def test_plain_requests_are_answered_before_the_full_proxy_loads(tmp_path: Path) -> None:
    async def main() -> None:
        async with fast_lane_only(files_spec(tmp_path)) as proxy:
            answer = await asyncio.wait_for(send(proxy.port, FILE_REQUEST), 30)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"a" * 100)
            assert not proxy.has_full and not proxy.full_wanted.is_set()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("request_bytes", "tls", "expected"),
    [
        pytest.param(HANDED_OVER, True, b"HTTP/1.1 200 OK\r\n", id="handed-over"),
        pytest.param(FILE_REQUEST, False, b"HTTP/1.1 308 ", id="plain-http"),
    ],
)
def test_what_needs_the_full_proxy_waits_for_it_then_is_answered(
    tmp_path: Path, request_bytes: bytes, tls: bool, expected: bytes
) -> None:
    async def main() -> None:
        async with fast_lane_only(files_spec(tmp_path)) as proxy:
            answer = send(proxy.port, request_bytes, tls=tls)
            await async_wait_until(proxy.full_wanted.is_set, message="the full proxy wanted")
            assert not answer.done()  # nothing else could have answered it
            await proxy.start_full()
            assert (await asyncio.wait_for(answer, 30)).startswith(expected)

    asyncio.run(main())


def test_a_connection_to_the_http_port_asks_for_the_full_proxy(tmp_path: Path) -> None:
    """``proxy.http_port`` only redirects, which is the full proxy's: a client knocking there
    must not wait for a full proxy nobody starts (``devstack run`` starts it on demand)."""
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("a")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    spec = make_spec(tmp_path, {"api": 1}, (RouteSpec(path="/", static=Path("public")),),
                     http_port=http_port)  # fmt: skip

    async def main() -> None:
        async with fast_lane_only(spec) as proxy:
            answer = send(http_port, FILE_REQUEST, tls=False)
            await async_wait_until(proxy.full_wanted.is_set, message="the full proxy wanted")
            await proxy.start_full()
            assert (await asyncio.wait_for(answer, 30)).startswith(b"HTTP/1.1 308 ")

    asyncio.run(main())


def test_a_proxy_stopped_before_the_full_proxy_loads_closes_what_waited(tmp_path: Path) -> None:
    async def main() -> None:
        async with fast_lane_only(files_spec(tmp_path)) as proxy:
            answer = send(proxy.port, HANDED_OVER)
            await async_wait_until(proxy.full_wanted.is_set, message="the full proxy wanted")
        assert await asyncio.wait_for(answer, 30) == b""

    asyncio.run(main())


def test_the_fast_lane_loads_without_aiohttp() -> None:
    # Nor what aiohttp brings that the fast lane needs not: multidict, email (for dates).
    heavy = ("aiohttp", "cryptography", "multidict", "email")
    code = (
        "import sys\n"
        "import devstack.proxy.server, devstack.proxy.fastlane, devstack.tls.quick\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stdout


def test_the_fast_lane_says_server_as_aiohttp_does() -> None:
    from aiohttp.http import SERVER_SOFTWARE

    from devstack.proxy import stamps

    assert stamps.SERVER_SOFTWARE == SERVER_SOFTWARE
    assert b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n" == stamps.SERVER_LINE
