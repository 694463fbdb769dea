"""Modules loading in a background thread (``devstack.app.load_in_background``): the GIL's
switch interval is short while any load runs, and Python's own is back once the last ends,
whatever order they end in and however they end."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from devstack.app import BACKGROUND_SWITCH_SECONDS, load_in_background


def test_the_switch_interval_is_short_while_loads_run_and_restored_after_the_last() -> None:
    before = sys.getswitchinterval()
    first_may_end, second_may_end = threading.Event(), threading.Event()
    seen: list[float] = []

    def load(may_end: threading.Event) -> str:
        seen.append(sys.getswitchinterval())
        may_end.wait(10)
        return "loaded"

    async def main() -> None:
        first = asyncio.ensure_future(load_in_background(load, first_may_end))
        second = asyncio.ensure_future(load_in_background(load, second_may_end))
        await asyncio.sleep(0)
        first_may_end.set()  # the first to start ends first: the second still runs
        assert await first == "loaded"
        assert sys.getswitchinterval() == BACKGROUND_SWITCH_SECONDS
        second_may_end.set()
        assert await second == "loaded"

    asyncio.run(main())
    assert seen == [BACKGROUND_SWITCH_SECONDS, BACKGROUND_SWITCH_SECONDS]
    assert sys.getswitchinterval() == before


def test_a_load_that_fails_restores_the_interval_and_raises() -> None:
    before = sys.getswitchinterval()

    def load() -> None:
        raise ImportError("no such module")

    with pytest.raises(ImportError):
        asyncio.run(load_in_background(load))
    assert sys.getswitchinterval() == before
