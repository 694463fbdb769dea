"""Resource limits, on both lanes: heads that trickle, a thousand idle connections beside a
normal request, a client that never reads, ten thousand pipelined requests on one connection,
a gzip bomb passed through untouched.

Complements tests/component: test_proxy_stream.py (hundreds of megabytes each way with the
proxy's memory flat), test_front_door.py (a body that trickles), test_proxy.py and
test_proxy_fastlane.py (silent and idle clients dropped, unfinished heads).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from devstack.proxy.server import ProxyTimeouts
from devstack.tls.ca import client_context
from tests.component.test_front_door import connect, front_door
from tests.component.test_proxy_harness import upstream, verified_client
from tests.component.test_proxy_stream import peak_rss
from tests.conditions import async_wait_until
from tests.reliability.raw import get

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
IDLE_CONNECTIONS = 1000
PIPELINED = 10_000


@asynccontextmanager
async def proxy_process(upstream_port: int, lane: str) -> AsyncIterator[tuple[int, int]]:
    """The proxy in its own process (the harness's ``__main__``), in front of one service:
    its (port, pid)."""
    proxy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.component.test_proxy_harness", str(upstream_port), lane,
        cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proxy.stdout is not None and proxy.stdin is not None
        async with asyncio.timeout(20):
            port = int(await proxy.stdout.readline())
        yield port, proxy.pid
        proxy.stdin.close()
        async with asyncio.timeout(20):
            assert await proxy.wait() == 0
    finally:
        if proxy.returncode is None:
            proxy.kill()
            await proxy.wait()


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return app


def test_a_head_that_trickles_forever_is_closed(tmp_path: Path, lane: str) -> None:
    # One byte every 20 ms keeps any per-read timer happy; the head as a whole has a deadline.
    async def main() -> None:
        timeouts = ProxyTimeouts(idle_seconds=0.3)
        async with front_door(tmp_path, timeouts) as door, connect(door) as client:
            await client.send(f"GET /api/x HTTP/1.1\r\nHost: {door.host}\r\nX-Slow: ".encode())

            async def trickle() -> None:
                while True:
                    client.writer.write(b"a")
                    await asyncio.sleep(0.02)  # the client's schedule, not a wait

            sending = asyncio.create_task(trickle())
            try:
                async with asyncio.timeout(15):
                    data = await client.reader.read()
            finally:
                sending.cancel()
            assert b"HTTP/1.1 200" not in data
            assert door.forwarded == b""

    asyncio.run(main())


def test_a_thousand_idle_connections_leave_a_normal_request_served(lane: str) -> None:
    async def main() -> None:
        async with upstream(hello_app()) as service, proxy_process(service, lane) as (port, _):
            idle: list[asyncio.StreamWriter] = []
            try:
                # Half finish the TLS handshake and say nothing; half (opened last, so that the
                # first-byte deadline does not drop them first) do not even start it.
                for i in range(IDLE_CONNECTIONS):
                    tls = {"ssl": client_context(), "server_hostname": "localhost"}
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1",
                        port,
                        **(tls if i < IDLE_CONNECTIONS // 2 else {}),  # type: ignore[arg-type]
                    )
                    idle.append(writer)
                async with verified_client() as client:
                    for _ in range(3):
                        async with client.get(f"https://localhost:{port}/normal") as resp:
                            assert (resp.status, await resp.text()) == (200, "hello")
            finally:
                for writer in idle:
                    writer.transport.abort()

    asyncio.run(main())


class Firehose:
    """A service that answers every request with ``size`` bytes as fast as it may, counting what
    it managed to write and whether it is waiting for its reader."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.written = 0
        self.is_waiting = False
        self.finished = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * (256 * 1024)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
            while self.written < self.size:
                writer.write(chunk)
                self.written += len(chunk)
                self.is_waiting = True
                await writer.drain()
                self.is_waiting = False
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.finished.set()
            writer.close()


def test_a_client_that_never_reads_holds_back_the_service_not_the_proxys_memory(
    lane: str,
) -> None:
    async def main() -> None:
        hose = Firehose(1024 * MB)
        server = await asyncio.start_server(hose.serve, "127.0.0.1", 0)
        service = server.sockets[0].getsockname()[1]
        try:
            async with proxy_process(service, lane) as (port, pid):
                before = peak_rss(pid)
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
                )
                writer.write(f"GET /big HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
                seen: list[int] = []

                def stalled() -> bool:  # blocked with nothing more written, over 50 looks
                    seen.append(hose.written if hose.is_waiting else -1)
                    return len(seen) > 50 and len(set(seen[-50:])) == 1 and seen[-1] > 0

                await async_wait_until(stalled, timeout=60, message="the service to be held back")
                assert hose.written < 64 * MB, f"{hose.written / MB:.0f} MB left the service"
                growth = peak_rss(pid) - before
                assert growth < 48 * MB, f"the proxy grew by {growth / MB:.0f} MB"
                writer.transport.abort()  # the client leaves: the service's connection goes
                async with asyncio.timeout(20):
                    await hose.finished.wait()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_ten_thousand_pipelined_requests_on_one_connection(tmp_path: Path, lane: str) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            requests = b"".join(
                get(target=b"/api/%d" % i if i % 2 else b"/api/admin/%d" % i)
                for i in range(PIPELINED)
            )
            sending = asyncio.create_task(
                client.send(requests.replace(b"{host}", door.host.encode()))
            )
            for i in range(PIPELINED):
                answer = await client.answer()
                service = "a" if i % 2 else "b"
                path = f"/api/{i}" if i % 2 else f"/api/admin/{i}"
                assert answer.json() == {"service": service, "line": f"GET {path} HTTP/1.1"}, i
            await sending
            assert len(door.a.lines) + len(door.b.lines) == PIPELINED

    asyncio.run(main())


BOMB_BYTES = 256 * MB


def bomb() -> bytes:
    """256 MiB of zeros, gzipped: about 250 KiB on the wire."""
    return gzip.compress(bytes(BOMB_BYTES), compresslevel=9, mtime=0)


def test_a_gzip_bomb_passes_through_untouched(lane: str) -> None:
    compressed = bomb()
    digest = hashlib.sha256(compressed).hexdigest()

    async def main() -> None:
        received: list[str] = []

        async def answer(request: web.Request) -> web.Response:
            return web.Response(body=compressed, headers={
                "Content-Type": "text/html", "Content-Encoding": "gzip"})  # fmt: skip

        async def take(request: web.Request) -> web.Response:
            received.append(hashlib.sha256(await request.read()).hexdigest())
            return web.Response(text="taken")

        app = web.Application(client_max_size=0)
        app.router.add_get("/bomb", answer)
        app.router.add_post("/bomb", take)
        async with upstream(app) as service, proxy_process(service, lane) as (port, pid):
            before = peak_rss(pid)
            async with verified_client() as client:
                async with client.get(f"https://localhost:{port}/bomb") as resp:
                    assert resp.headers["Content-Encoding"] == "gzip"
                    body = await resp.read()
                assert hashlib.sha256(body).hexdigest() == digest, "the body was changed"
                headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
                url = f"https://localhost:{port}/bomb"
                async with client.post(url, data=compressed, headers=headers) as resp:
                    assert resp.status == 200
                assert received == [digest], "the upload was changed"
            growth = peak_rss(pid) - before
            assert growth < 48 * MB, f"the proxy grew by {growth / MB:.0f} MB"

    asyncio.run(main())
