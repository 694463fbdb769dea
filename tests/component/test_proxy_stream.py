"""Large bodies stream through the proxy both ways without the proxy's memory growing.

The proxy runs as its own process (the harness module's ``__main__``) so its peak resident
memory (``VmHWM``) can be read from ``/proc`` while a few hundred megabytes pass through it, in
both lanes: with the fast lane on (the download is relayed there, the upload handed over) and
with every request on the full proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.component.test_proxy_harness import LANES, upstream, verified_client

MB = 1024 * 1024
TOTAL = 200 * MB
CHUNK = b"devstack" * (64 * 1024 // 8)
ALLOWED_GROWTH = 48 * MB
REPO = Path(__file__).resolve().parents[2]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def bulk_app() -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"bytes": size, "sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // len(CHUNK)):
            await resp.write(CHUNK)
        return resp

    app = web.Application(client_max_size=0)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    return app


async def body(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


@pytest.mark.parametrize("lane", LANES)
def test_hundreds_of_megabytes_each_way_keep_the_proxy_flat(lane: str) -> None:
    async def main() -> None:
        async with upstream(bulk_app()) as port:
            proxy = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.component.test_proxy_harness", str(port), lane,
                cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert proxy.stdout is not None and proxy.stdin is not None
                async with asyncio.timeout(20):
                    proxy_port = int(await proxy.stdout.readline())
                url = f"https://localhost:{proxy_port}"
                async with verified_client() as client:
                    async with client.get(f"{url}/download?size={len(CHUNK)}") as resp:
                        assert len(await resp.read()) == len(CHUNK)  # warmed up
                    before = peak_rss(proxy.pid)

                    async with client.post(f"{url}/upload", data=body(TOTAL)) as resp:
                        answer = await resp.json()
                    expected = hashlib.sha256()
                    for _ in range(TOTAL // len(CHUNK)):
                        expected.update(CHUNK)
                    assert answer == {"bytes": TOTAL, "sha256": expected.hexdigest()}

                    received = 0
                    async with client.get(f"{url}/download?size={TOTAL}") as resp:
                        assert resp.headers["Content-Length"] == str(TOTAL)
                        async for chunk in resp.content.iter_any():
                            received += len(chunk)
                    assert received == TOTAL
                growth = peak_rss(proxy.pid) - before
                assert growth < ALLOWED_GROWTH, f"proxy peak memory grew by {growth / MB:.0f} MB"
                proxy.stdin.close()
                async with asyncio.timeout(10):
                    assert await proxy.wait() == 0
            finally:
                if proxy.returncode is None:
                    proxy.kill()
                    await proxy.wait()

    asyncio.run(main())
