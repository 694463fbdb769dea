"""Readiness probes: a TCP connect on the service's port, or an HTTP GET that answers 2xx/3xx.

The supervisor asks a :class:`Readiness` when a service is ready; :class:`Prober` is the real one.
A probe is one attempt with a short deadline; :meth:`Prober.wait` repeats it, quickly at first
(services that start in milliseconds are seen in milliseconds) and then every
``health.interval_seconds``, until it succeeds or the supervisor cancels it (the process exited).

Before the first probe, a :class:`ListenWatcher` waits for the port to have a listening socket
at all, asking the kernel once per tick for every waiting service together: twenty services
booting on two cores are not slowed by twenty probe loops. The probe that follows is still the
real test (it connects, or GETs the health path). The query is asked often while a start is young
(:func:`listen_tick`): a reload waits on it, with requests held in the proxy meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from devstack.manifest.spec import HealthSpec
from devstack.netstat.listening import ListeningPorts

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 1.0
FIRST_INTERVAL_SECONDS = 0.005
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
LISTEN_TICKS = ((1.0, 0.002), (5.0, 0.005))
"""``(waited up to, tick)``: how often the kernel is asked while the newest start has waited that
long; :data:`LISTEN_TICK_SECONDS` after. One query costs about 65 us, so the first second's
2 ms ticks take about 3 % of one core, and a service is seen listening about 1 ms after it is."""
LISTEN_TICK_SECONDS = 0.01


def listen_tick(waited_seconds: float) -> float:
    """The pause between two listen queries, once the newest waiter has waited this long."""
    for up_to, tick in LISTEN_TICKS:
        if waited_seconds < up_to:
            return tick
    return LISTEN_TICK_SECONDS


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
    if health.path is None:
        return await probe_tcp(port)
    return await probe_http(port, health.path)


class ListenWatcher:
    """Waits for ports to listen, with one kernel query per tick for all of them."""

    def __init__(
        self, ports: ListeningPorts | None = None, tick: Callable[[float], float] = listen_tick
    ) -> None:
        """``tick``: the pause between queries, given how long the newest waiter has waited."""
        self._ports = ports if ports is not None else ListeningPorts()
        self._tick = tick
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._newest = 0.0
        """``loop.time()`` when the newest waiter began waiting (its ``since``)."""
        self._poller: asyncio.Task[None] | None = None
        self.is_available = self._ports.snapshot() is not None

    async def wait(self, port: int, timeout: float, *, since: float | None = None) -> bool:
        """True once ``port`` listens; False after ``timeout`` (or when the kernel won't say).
        ``since``: ``loop.time()`` when the caller began waiting for this port (default: now),
        which sets how often the kernel is asked."""
        if not self.is_available:
            return False
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiters.setdefault(port, set()).add(future)
        self._newest = max(self._newest, loop.time() if since is None else since)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(port)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiters[port]
        return True

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters:
            listening = self._ports.snapshot()
            if listening is None:
                self.is_available = False
                listening = frozenset(self._waiters)  # let every waiter fall back to probing
            for port in listening & self._waiters.keys():
                for future in self._waiters[port]:
                    if not future.done():
                        future.set_result(None)
            await asyncio.sleep(self._tick(loop.time() - self._newest))

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        self._ports.close()


class Readiness(Protocol):
    """What the supervisor asks about a started service (with ``health.enabled``)."""

    async def wait(self, health: HealthSpec, port: int) -> None:
        """Return once the service on ``port`` passes ``health``'s probe. No deadline here: the
        caller decides what a slow start means, and cancels the wait when the process exits."""
        ...

    def close(self) -> None: ...


class Prober:
    """The real :class:`Readiness`: one :class:`ListenWatcher` for every service, then probes."""

    def __init__(self) -> None:
        self._watcher = ListenWatcher()

    async def wait(self, health: HealthSpec, port: int) -> None:
        watcher = self._watcher
        since = asyncio.get_running_loop().time()
        while watcher.is_available:
            if await watcher.wait(port, timeout=health.interval_seconds * 2, since=since):
                break
        interval = FIRST_INTERVAL_SECONDS
        while not await probe(health, port):
            await asyncio.sleep(interval)
            interval = min(interval * 2, health.interval_seconds)

    def close(self) -> None:
        self._watcher.close()
