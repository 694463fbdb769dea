"""The example stack, started by `devstack up` and used through the proxy with real clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devstack.tls.ca import client_context
from tests.e2e import browser
from tests.e2e.conftest import DevstackProcess, DevstackRunner, start_examples

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="the example needs Node.js")


@dataclass
class Stack:
    run: DevstackProcess
    port: int
    ca: str

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    def curl(self, *args: str, host: str = "localhost") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                self.ca,
                "--resolve",
                f"{host}:{self.port}:127.0.0.1",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )


@pytest.fixture
def stack(devstack: DevstackRunner, tmp_path: Path) -> Iterator[Stack]:
    run, _, port = start_examples(devstack, tmp_path)
    ca = devstack.run("ca").stdout.strip()
    yield Stack(run, port, ca)
    assert run.interrupt() == 0


def test_the_api_static_page_and_the_startup_service_answer(stack: Stack) -> None:
    page = stack.curl(f"{stack.origin}/")
    assert "<title>" in page.stdout and "Simon" in page.stdout
    posted = stack.curl(
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        '{"name": "ada", "score": 7}',
        f"{stack.origin}/api/scores",
    )
    assert json.loads(posted.stdout)["name"] == "ada"
    scores = json.loads(stack.curl(f"{stack.origin}/api/scores").stdout)
    assert any(entry["name"] == "ada" and entry["score"] == 7 for entry in scores)
    by_prefix = json.loads(stack.curl(f"{stack.origin}/startup/api/ideas").stdout)
    by_host = json.loads(
        stack.curl(
            f"https://startup.localhost:{stack.port}/api/ideas", host="startup.localhost"
        ).stdout
    )
    assert by_prefix == by_host


def test_websocket_pushes_and_sse_stream_through_the_proxy(stack: Stack) -> None:
    async def main() -> None:
        ssl = client_context()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"wss://localhost:{stack.port}/api/ws", ssl=ssl) as ws:
                posted = await session.post(
                    f"{stack.origin}/api/scores", json={"name": "grace", "score": 99}, ssl=ssl
                )
                assert posted.status == 201
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads((await ws.receive()).data)
                        if message.get("type") == "highscore":
                            break
                assert message["entry"]["name"] == "grace"
            async with session.get(f"{stack.origin}/startup/events", ssl=ssl) as events:
                assert events.headers["Content-Type"].startswith("text/event-stream")
                async with asyncio.timeout(10):
                    async for line in events.content:
                        if line.startswith(b"event: tick"):
                            break

    asyncio.run(main())


@pytest.mark.skipif(
    not browser.is_available(),
    reason="needs Debian's chromium and libnss3-tools (.ci/run installs them)",
)
def test_the_game_page_shows_live_scores_in_headless_chromium(stack: Stack, tmp_path: Path) -> None:
    stack.curl(
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        '{"name": "linus", "score": 12}',
        f"{stack.origin}/api/scores",
    )
    home = browser.trusting_home(tmp_path / "home", stack.ca)

    async def main() -> None:
        async with browser.open_page(
            f"{stack.origin}/", home=home, profile=tmp_path / "profile"
        ) as page:
            await page.wait_for(
                "document.getElementById('connection').dataset.state === 'live'",
                message="the page's websocket through the proxy",
            )
            await page.wait_for(
                "document.getElementById('scores-body').textContent.includes('linus')",
                message="the score posted before the page loaded",
            )
            # A score posted elsewhere arrives over the websocket, with no reload.
            stack.curl(
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                '{"name": "margaret", "score": 40}',
                f"{stack.origin}/api/scores",
            )
            await page.wait_for(
                "document.getElementById('scores-body').textContent.includes('margaret')",
                message="the pushed high score in the table",
            )
            assert await page.evaluate("location.protocol") == "https:"

    asyncio.run(main())
