"""Readiness probes: a TCP connect on the service's port, or an HTTP GET that answers 2xx/3xx.

A probe is one attempt with a short deadline; :func:`wait_until_ready` repeats it, quickly at first
(services that start in milliseconds are seen in milliseconds) and then every
``health.interval_seconds``, until it succeeds or the service is no longer alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from devstack.config import HealthSpec

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 1.0
FIRST_INTERVAL_SECONDS = 0.005
LOOPBACK_HOSTS = ("127.0.0.1", "::1")


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_SECONDS)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), PROBE_TIMEOUT_SECONDS)


async def probe_tcp(port: int) -> bool:
    """True when something accepts connections on the port, on 127.0.0.1 or ::1."""
    for host in LOOPBACK_HOSTS:
        try:
            _, writer = await _connect(host, port)
        except (OSError, TimeoutError):
            continue
        await _close(writer)
        return True
    return False


async def probe_http(port: int, path: str) -> bool:
    """True when ``GET path`` on the port answers with a 2xx or 3xx status."""
    for host in LOOPBACK_HOSTS:
        try:
            reader, writer = await _connect(host, port)
        except (OSError, TimeoutError):
            continue
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: devstack-health\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_SECONDS)
        except (OSError, TimeoutError):
            return False
        finally:
            await _close(writer)
        parts = status_line.split()
        return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
    return False


async def probe(health: HealthSpec, port: int) -> bool:
    if not health.enabled:
        return True
    if health.path is None:
        return await probe_tcp(port)
    return await probe_http(port, health.path)


async def wait_until_ready(
    health: HealthSpec, port: int, *, is_alive: Callable[[], bool] = lambda: True
) -> bool:
    """Probe until ready (True) or until the service is no longer alive (False); no deadline here:
    the caller decides what a slow start means."""
    interval = FIRST_INTERVAL_SECONDS
    while is_alive():
        if await probe(health, port):
            return True
        await asyncio.sleep(interval)
        interval = min(interval * 2, health.interval_seconds)
    return False
