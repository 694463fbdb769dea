"""The examples under hot reload, in headless Chromium: `devstack up` on a copy of examples/ (its
own DEVSTACK_HOME, as every test has), the game page open over TLS that Chromium verifies against
devstack's CA, and files of the copy edited the way an editor saves them (written in place).

A JavaScript variable set on the page tells a stylesheet swap (it survives) from a reload (it is
gone). Every step is seen by the page on its own: nothing in the test refreshes it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conditions import wait_until
from tests.e2e import browser
from tests.e2e.conftest import DevstackProcess, DevstackRunner, start_examples

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="the example needs Node.js"),
    pytest.mark.skipif(
        not browser.is_available(),
        reason="needs Debian's chromium and certutil from libnss3-tools (.ci/run installs them)",
    ),
]

FOOTER_COLOR = "getComputedStyle(document.querySelector('.footer')).color"
NEW_COLOR = "rgb(1, 2, 3)"
GAME_PAGE = "document.getElementById('board') !== null"
OVERLAY = "document.getElementById('devstack-overlay')"


@dataclass
class Stack:
    run: DevstackProcess
    folder: Path
    port: int
    ca: str

    @property
    def simon(self) -> Path:
        return self.folder / "simon"

    def wait_for_line(self, pattern: str, *, after: int, timeout: float = 30) -> re.Match[str]:
        """A line of devstack's output matching ``pattern``, printed past offset ``after``."""

        def seen() -> re.Match[str] | None:
            output = self.run.output
            assert self.run.popen.poll() is None, f"devstack exited:\n{output}"
            return re.search(pattern, output[after:])

        match = wait_until(seen, timeout=timeout, message=f"devstack to print /{pattern}/")
        assert isinstance(match, re.Match)
        return match


@pytest.fixture
def stack(devstack: DevstackRunner, tmp_path: Path) -> Iterator[Stack]:
    run, folder, port = start_examples(devstack, tmp_path)
    ca = devstack.run("ca").stdout.strip()
    yield Stack(run, folder, port, ca)
    assert run.interrupt() == 0


async def connected(page: browser.Page, why: str) -> None:
    await page.wait_for(f"{GAME_PAGE} && window.__devstackLive && window.__devstackLive.connected",
                        message=f"the game page's live-reload socket {why}")  # fmt: skip


def test_edits_to_the_game_swap_its_stylesheet_reload_it_and_show_a_broken_save(
    stack: Stack, tmp_path: Path
) -> None:
    home = browser.trusting_home(tmp_path / "home", stack.ca)
    css, server = stack.simon / "public" / "simon.css", stack.simon / "server.py"
    original_server = server.read_text()

    async def main() -> None:
        async with browser.open_page(
            f"https://localhost:{stack.port}/", home=home, profile=tmp_path / "profile"
        ) as page:
            await connected(page, "after the first load")
            await page.evaluate("window.marker = 42")
            assert await page.evaluate(FOOTER_COLOR) != NEW_COLOR

            # (a) The stylesheet changes: swapped in place, the page's state survives.
            css.write_text(css.read_text() + f"\n.footer {{ color: {NEW_COLOR}; }}\n")
            await page.wait_for(f"{FOOTER_COLOR} === '{NEW_COLOR}'",
                                message="the edited stylesheet on the page")  # fmt: skip
            assert await page.evaluate("window.marker") == 42, "the page was reloaded"
            await page.wait_for("document.querySelectorAll('link[rel=stylesheet]').length === 1",
                                message="the old stylesheet to go")  # fmt: skip

            # (b) A harmless edit of the service: it reloads, and so does the page.
            offset = len(stack.run.output)
            server.write_text(original_server.replace("TOP_SIZE = 10", "TOP_SIZE = 10  # edited"))
            stack.wait_for_line(r"simon: reloading \(server\.py changed\)", after=offset)
            stack.wait_for_line(r"simon: reloaded in \d+ ms", after=offset)
            await page.wait_for("window.marker === undefined", message="the page to reload")
            await connected(page, "after the reload")
            assert await page.evaluate(FOOTER_COLOR) == NEW_COLOR

            # (c) A broken save: the service's last lines over the game, no refresh.
            await page.evaluate("window.marker = 43")
            server.write_text(original_server.replace("TOP_SIZE = 10", "TOP_SIZE = = 10"))
            text = await page.wait_for(f"{OVERLAY} && {OVERLAY}.textContent",
                                       message="the error overlay")  # fmt: skip
            shown = f"SyntaxError in the overlay (it shows {text!r})"
            await page.wait_for(f"{OVERLAY}.textContent.includes('SyntaxError')", message=shown)
            assert "simon" in text
            assert await page.evaluate("window.marker") == 43

            # (d) The fix: the game comes back by itself, without the overlay.
            server.write_text(original_server)
            await page.wait_for(f"window.marker === undefined && !{OVERLAY} && {GAME_PAGE}",
                                message="the game page back without the overlay")  # fmt: skip
            await connected(page, "after the fix")

    asyncio.run(main())
