"""Headless Chromium driven over the DevTools protocol, for tests that look at a real page.

Chromium trusts devstack's CA through an NSS database in a private HOME, the way
``devstack trust`` sets it up for a user; nothing skips certificate checks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


def is_available() -> bool:
    return shutil.which("chromium") is not None and shutil.which("certutil") is not None


def trusting_home(folder: Path, ca: str) -> Path:
    """A HOME whose NSS database trusts ``ca`` for websites."""
    nssdb = folder / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nssdb}"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "devstack", "-t", "C,,", "-i", ca],
        check=True,
    )
    return folder


NAVIGATING = ("navigated or closed", "Execution context was destroyed",
              "Cannot find context")
"""What DevTools answers to an evaluation that a navigation interrupted."""


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self._ws:
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result
        raise RuntimeError("the DevTools connection closed")

    async def navigate(self, url: str) -> str | None:
        """Go to ``url``: None once the page commits, else the network error that stopped it
        (``net::ERR_CERT_AUTHORITY_INVALID`` for a certificate the browser does not trust)."""
        result = await self.call("Page.navigate", url=url)
        error = result.get("errorText")
        return str(error) if error else None

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20, message: str) -> Any:
        """Evaluate ``expression`` until it is truthy (a condition with a deadline). A page
        navigating meanwhile (a reload is often what is waited for) is "not yet", not an error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as exc:
                if not any(reason in str(exc) for reason in NAVIGATING):
                    raise
                value = None
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {message}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def open_page(url: str, *, home: Path, profile: Path) -> AsyncIterator[Page]:
    process = await asyncio.create_subprocess_exec(
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        endpoint = None
        async with asyncio.timeout(30):
            async for line in process.stderr:
                found = re.search(rb"DevTools listening on (ws://\S+)", line)
                if found:
                    endpoint = found.group(1).decode()
                    break
        assert endpoint, "Chromium did not print its DevTools address"
        base = endpoint.split("/devtools/")[0].replace("ws://", "http://")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/json/list") as listing:
                targets = await listing.json()
            page_target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(
                page_target["webSocketDebuggerUrl"], max_msg_size=0
            ) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                yield page
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
