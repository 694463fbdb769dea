"""Waiting on a condition with a deadline and a message: the bench's only way to wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from bench.errors import BenchError

T = TypeVar("T")

POLL_SECONDS = 0.005
"""Short enough to time starts and stops of a few tens of milliseconds; cheap enough (a few
socket connects or /proc reads per poll) not to steal the machine from what is measured."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    message: str,
    interval: float = POLL_SECONDS,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    :class:`BenchError` saying what was awaited when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)
