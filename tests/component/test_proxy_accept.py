"""The proxy's accept path when a client's first byte comes after its connection: the proxy
waits for it (the connection is counted in ``awaiting_first_byte``), then sends TLS to the
HTTPS lanes and plain HTTP to the redirect, and a connection still waiting when the proxy
stops is closed. (A first byte that arrives with the connection, and a client that never
sends one, are covered in test_proxy.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from devstack.proxy.server import Proxy, ProxyTimeouts
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    use_lane,
)
from tests.conditions import async_wait_until


@pytest.fixture(autouse=True, params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


def run_proxy(tmp_path: Path, scenario: Callable[[Proxy], Awaitable[None]]) -> None:
    async def main() -> None:
        spec = make_spec(tmp_path, {})
        async with running_proxy(spec, StandInDirectory({}), ProxyTimeouts()) as proxy:
            await scenario(proxy)

    asyncio.run(main())


async def connect_silently(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection the proxy has accepted and is waiting on for a first byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    await async_wait_until(
        lambda: proxy.awaiting_first_byte == 1, message="the proxy to wait for a first byte"
    )
    return reader, writer


def test_a_tls_handshake_that_comes_late_is_served(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy) -> None:
        reader, writer = await connect_silently(proxy)
        await writer.start_tls(client_context(), server_hostname="localhost")
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
        assert proxy.awaiting_first_byte == 0

    run_proxy(tmp_path, scenario)


def test_plain_http_that_comes_late_is_redirected(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy) -> None:
        reader, writer = await connect_silently(proxy)
        writer.write(b"GET /a?b=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()  # the proxy closes after its redirect
        writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        assert head[0].startswith(b"HTTP/1.1 308 "), answer[:200]
        assert f"Location: https://localhost:{proxy.port}/a?b=1".encode() in head
        assert proxy.awaiting_first_byte == 0

    run_proxy(tmp_path, scenario)


def test_a_client_that_closes_before_a_byte_costs_nothing(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy) -> None:
        _, writer = await connect_silently(proxy)
        writer.close()
        await async_wait_until(
            lambda: proxy.awaiting_first_byte == 0, message="the proxy to forget the connection"
        )

    run_proxy(tmp_path, scenario)


def test_stopping_closes_a_connection_still_waiting_for_its_first_byte(tmp_path: Path) -> None:
    async def main() -> None:
        spec = make_spec(tmp_path, {})
        async with running_proxy(spec, StandInDirectory({}), ProxyTimeouts()) as proxy:
            reader, writer = await connect_silently(proxy)
        assert proxy.awaiting_first_byte == 0
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the proxy, not by us
        writer.close()

    asyncio.run(main())
