"""New TLS connections to the proxy, as a page of many files makes them: one ticket to resume
the next connection with (TLS 1.3), AES-128-GCM first for TLS 1.2 clients, and ``Connection:
close`` answered on the fast lane. Real handshakes on loopback, verified against devstack's CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec
from devstack.proxy.server import Proxy
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import StandInDirectory, make_spec, running_proxy, use_lane

REQUEST = b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def fast() -> Iterator[None]:
    with use_lane("fast"):
        yield


def serve_files(tmp_path: Path, scenario: Callable[[Proxy], Awaitable[None]]) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("a" * 100)
    spec = make_spec(tmp_path, {"api": 1}, (RouteSpec(path="/", static=Path("public")),))

    async def main() -> None:
        async with running_proxy(spec, StandInDirectory({"api": 1})) as proxy:
            await scenario(proxy)

    asyncio.run(main())


Resumable = ssl.SSLSession | None


def connect(
    port: int, context: ssl.SSLContext, session: Resumable
) -> tuple[bytes, bool, Resumable]:
    """One request with ``Connection: close`` on a new connection (blocking: the stdlib takes a
    session to resume only before a socket's handshake): the answer up to the proxy's close,
    whether the session was resumed, and the session to resume the next one with."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(REQUEST)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return answer, bool(tls.session_reused), tls.session


def test_the_next_connection_resumes_with_the_ticket_and_closes_on_the_fast_lane(
    tmp_path: Path,
) -> None:
    async def scenario(proxy: Proxy) -> None:
        context = client_context()
        reused = []
        session = None
        for _ in range(3):
            answer, was_reused, session = await asyncio.to_thread(
                connect, proxy.port, context, session
            )
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"a" * 100)
            assert b"\r\nConnection: close\r\n" in answer
            reused.append(was_reused)
        assert reused == [False, True, True]
        assert proxy.fast_lane is not None and proxy.fast_lane.handovers == 0

    serve_files(tmp_path, scenario)


def test_tls_1_2_clients_get_aes_128_gcm_first(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy) -> None:
        context = client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        _, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"
        )
        tls = writer.get_extra_info("ssl_object")
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        writer.close()

    serve_files(tmp_path, scenario)

