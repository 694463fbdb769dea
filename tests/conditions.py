"""Waiting on conditions with a deadline and a message: the tests' only way to wait."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable


class ConditionTimeout(AssertionError):
    pass


def wait_until(
    predicate: Callable[[], object], *, timeout: float = 10.0, message: str, interval: float = 0.01
) -> object:
    """Poll ``predicate`` until it returns something truthy; return that, or fail saying what
    was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Awaitable[object] | object],
    *,
    timeout: float = 10.0,
    message: str,
    interval: float = 0.01,
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"
