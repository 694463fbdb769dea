"""The front door as `devstack up` starts it (:class:`devstack.proxy.frontend.Frontend`): the
first start issues the certificate; a later one serves the cached one without cryptography, with
its fast lane, and checks the certificate once the full proxy starts. Real TLS on loopback,
verified against devstack's CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from devstack.manifest.spec import RouteSpec
from devstack.proxy.bind import bind_proxy
from devstack.proxy.frontend import Frontend
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import StandInDirectory, make_spec
from tests.conditions import async_wait_until

REQUEST = b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def fetch(port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        client_context().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(REQUEST)
        answer = b""
        try:
            while chunk := tls.recv(65536):
                answer += chunk
        except ssl.SSLError:  # close_notify crossing the last bytes
            pass
        return answer


def test_a_later_start_serves_the_cached_certificate_and_checks_it_with_the_full_proxy(
    tmp_path: Path,
) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("a" * 100)
    spec = make_spec(tmp_path, {"api": 1}, (RouteSpec(path="/", static=Path("public")),))

    async def start(*, full: bool) -> Frontend:
        frontend = Frontend(spec, bind_proxy(spec, 0))
        await frontend.start(StandInDirectory({"api": 1}), full=full)
        return frontend

    async def main() -> None:
        first = await start(full=True)
        try:
            assert first.certificate is not None  # nothing cached: issued at once
            assert (await asyncio.to_thread(fetch, int(first.url.rsplit(":", 1)[1]))).endswith(
                b"a" * 100
            )
        finally:
            await first.stop()
        later = await start(full=False)
        try:
            assert later.certificate is None  # served from the cache, not checked yet
            port = int(later.url.rsplit(":", 1)[1])
            assert (await asyncio.to_thread(fetch, port)).endswith(b"a" * 100)
            await later.start_full()
            await async_wait_until(lambda: later.certificate is not None,
                                   message="the cached certificate checked")  # fmt: skip
            assert later.ca_path == first.ca_path
            assert (await asyncio.to_thread(fetch, port)).endswith(b"a" * 100)
        finally:
            await later.stop()

    asyncio.run(main())
