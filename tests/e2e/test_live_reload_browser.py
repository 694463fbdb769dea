"""The browser follows the stack, in real headless Chromium over DevTools.

The proxy runs in the test's process in front of a real service on a loopback port, with a
stand-in directory whose statuses the test drives (the supervisor's transitions are tested on
their own); the page comes through the real proxy over TLS that Chromium verifies against
devstack's CA, and the live-reload script runs in the browser. A JavaScript variable set on the
page tells a reload (it is gone) from a stylesheet swap (it survives).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from devstack.manifest.spec import RouteSpec
from devstack.proxy.server import Proxy
from devstack.status import ServiceState
from devstack.tls.ca import ca_cert_path
from tests.component.test_proxy_harness import (
    StandInDirectory,
    make_spec,
    running_proxy,
    upstream,
)
from tests.conditions import async_wait_until
from tests.e2e import browser

pytestmark = pytest.mark.skipif(
    not browser.is_available(),
    reason="needs Debian's chromium and certutil from libnss3-tools (.ci/run installs them)",
)

PAGE = (
    "<!doctype html><html><head><title>app</title>"
    '<link rel="stylesheet" href="/static/style.css"></head>'
    '<body><p id="box">the app</p></body></html>'
)
RED, BLUE = "rgb(255, 0, 0)", "rgb(0, 0, 255)"
BOX_COLOR = "getComputedStyle(document.getElementById('box')).color"
HOSTILE_LINE = "SyntaxError: <img src=x onerror=\"window.pwned = 1\"> & more"


def app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    application = web.Application()
    application.router.add_get("/", page)
    return application


@dataclass
class Stack:
    proxy: Proxy
    directory: StandInDirectory
    static: Path

    async def connected(self, page: browser.Page, why: str) -> None:
        """The page's script has its socket open, and it is the only one the hub holds (the
        socket of the page before a reload is gone)."""
        await page.wait_for("window.__devstackLive && window.__devstackLive.connected",
                            message=f"the page's live-reload socket {why}")  # fmt: skip
        await async_wait_until(lambda: self.proxy.hub.page_count == 1, timeout=20,
                               message=f"one page on the live-reload socket {why}")  # fmt: skip


@asynccontextmanager
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    static = tmp_path / "static"
    static.mkdir()
    (static / "style.css").write_text(f"#box {{ color: {RED} }}")
    async with upstream(app()) as port:
        routes = (RouteSpec(path="/", service="web"),
                  RouteSpec(path="/static", static=static))  # fmt: skip
        spec = make_spec(tmp_path, {"web": port}, routes)
        directory = StandInDirectory({"web": port})
        async with running_proxy(spec, directory) as proxy:
            yield Stack(proxy, directory, static)


def test_the_page_follows_reloads_stylesheets_and_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            home = browser.trusting_home(tmp_path / "home", str(ca_cert_path()))
            async with browser.open_page(
                f"{s.proxy.url}/", home=home, profile=tmp_path / "profile"
            ) as page:
                await s.connected(page, "after the first load")
                await page.evaluate("window.marker = 42")
                assert await page.evaluate(BOX_COLOR) == RED

                # The service reloads: the page reloads (its variable is gone).
                s.directory.set("web", ServiceState.STARTING, pid=2)
                s.directory.set("web", ServiceState.READY)
                await page.wait_for("window.marker === undefined", message="the page to reload")
                await s.connected(page, "after the reload")

                # A stylesheet changes: swapped in place, the page's state survives.
                await page.evaluate("window.marker = 43")
                (s.static / "style.css").write_text(f"#box {{ color: {BLUE} }}")
                s.proxy.static_changed(s.static, (s.static / "style.css",))
                await page.wait_for(f"{BOX_COLOR} === '{BLUE}'", message="the new stylesheet")
                assert await page.evaluate("window.marker") == 43, "the page was reloaded"
                await page.wait_for("document.querySelectorAll('link').length === 1",
                                    message="the old stylesheet to go")  # fmt: skip

                # The new code does not start: its output over the app, as text.
                lines = ("Traceback (most recent call last):", HOSTILE_LINE)
                s.directory.set("web", ServiceState.BACKOFF, reason="exited with code 1",
                                last_lines=lines)  # fmt: skip
                overlay = "document.getElementById('devstack-overlay')"
                text = await page.wait_for(f"{overlay} && {overlay}.textContent",
                                           message="the error overlay")  # fmt: skip
                assert "web: exited with code 1" in text
                assert HOSTILE_LINE in text
                assert await page.evaluate(f"{overlay}.querySelector('img') === null")
                assert await page.evaluate("window.pwned === undefined")
                assert await page.evaluate("window.marker") == 43
                box = f"{overlay}.getBoundingClientRect()"
                covers = f"{box}.width >= innerWidth && {box}.height >= innerHeight"
                assert await page.evaluate(covers), "the overlay covers the app"

                # The next save fixes it: the page comes back by itself.
                s.directory.set("web", ServiceState.STARTING, reason=None, pid=3)
                s.directory.set("web", ServiceState.READY)
                await page.wait_for(f"window.marker === undefined && !{overlay}",
                                    message="the page to reload without the overlay")  # fmt: skip
                await page.wait_for(f"{BOX_COLOR} === '{BLUE}'",
                                    message="the reloaded page's stylesheet")  # fmt: skip

    asyncio.run(main())  # asyncio's own loop: the fast lane is on (no access log) without uvloop
