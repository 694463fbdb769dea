"""The pages connected to ``/_devstack/live``, and what they are told.

:meth:`Hub.follow` watches the services through :meth:`devstack.status.ServiceDirectory.changed`
and tells every connected page:

- ``{"type": "reload"}`` when a service becomes ready: from any state that was not ready, or
  ready again on another pid or port (a blue-green switch), or ready without the failure it
  carried before;
- ``{"type": "error", "service", "reason", "lines"}`` when a service is in trouble: crashed and
  waiting to restart (backoff), crashed for good, failed, or still serving the old code after a
  reload that failed (ready, with the failure in its ``reason``). The page shows the lines over
  the app; the ``reload`` that follows once the service is ready takes them away. A page that
  connects while a service is in trouble is told at once.

:meth:`Hub.static_changed` is called with files changed under a static route's folder: when
they are all stylesheets, pages get ``{"type": "css", "paths": [...]}`` (the URL paths the
static routes serve them at) and swap them in place; anything else reloads them.

Every page follows every service: a page from a static route is usually the front end of the
services behind it (``/`` a folder, ``/api`` a service), and a page cannot tell which services
its scripts call. Pages are told only these events; what they send is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from aiohttp import WSMsgType, web

from devstack.proxy.routing import RouteTable
from devstack.status import ServiceDirectory, ServiceState, ServiceStatus

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
"""Pages that stop answering pings this long are dropped."""
SEND_SECONDS = 5.0
"""A page that does not take a message this long is dropped."""
CLOSE_SECONDS = 1.0
"""How long the proxy waits for pages to answer its close when it stops."""

_TROUBLE_STATES = frozenset({ServiceState.BACKOFF, ServiceState.CRASHED, ServiceState.FAILED})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
"""Terminal colour and cursor sequences, taken out of the lines a page shows."""

RELOAD = json.dumps({"type": "reload"})


class Hub:
    """Every page connected to the live-reload socket; run :meth:`follow` as a task."""

    def __init__(self, directory: ServiceDirectory, services: Iterable[str],
                 table: RouteTable) -> None:  # fmt: skip
        self._directory = directory
        self._services = tuple(services)
        self._static = [
            (_normalized(route.target.static), route.prefix)
            for route in table.routes
            if route.target.static is not None
        ]
        self._pages: set[web.WebSocketResponse] = set()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def page_count(self) -> int:
        """How many pages are connected now."""
        return len(self._pages)

    async def serve(self, request: web.BaseRequest) -> web.WebSocketResponse:
        """Accept a page's WebSocket (its origin checked by the caller) and keep it until it
        closes; it is told about services in trouble at once."""
        socket = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=4096)
        await socket.prepare(request)
        self._pages.add(socket)
        try:
            for name in self._services:
                status = self._directory.status(name)
                if is_in_trouble(status):
                    await socket.send_str(_error_message(status))
            async for message in socket:  # pages have nothing to say; wait for the close
                if message.type is WSMsgType.ERROR:
                    break
        except ConnectionResetError:
            logger.debug("a live-reload page went away")
        finally:
            self._pages.discard(socket)
        return socket

    async def follow(self) -> None:
        """Tell the pages about every change of the services' status, until cancelled."""
        seen = {name: self._directory.status(name) for name in self._services}
        while True:
            await self._directory.changed()
            reload = False
            for name in self._services:
                now, before = self._directory.status(name), seen[name]
                seen[name] = now
                if now == before:
                    continue
                if is_in_trouble(now):
                    if not is_in_trouble(before) or _shown(now) != _shown(before):
                        self._broadcast(_error_message(now))
                elif now.is_ready and _is_new(now, before):
                    reload = True
            if reload:
                self._broadcast(RELOAD)

    def static_changed(self, root: Path, files: tuple[Path, ...]) -> None:
        """Files under ``root`` (a static route's folder) changed: stylesheets alone are
        swapped in the pages, anything else reloads them."""
        folder = _normalized(root)
        prefixes = [prefix for served, prefix in self._static if served == folder]
        if not prefixes or not files:
            logger.debug("changes under %s, which no static route serves", root)
            return
        if not all(file.suffix.lower() == ".css" for file in files):
            self._broadcast(RELOAD)
            return
        paths: list[str] = []
        for file in files:
            relative = os.path.relpath(_normalized(folder / file), folder)
            if relative.startswith(".."):
                continue
            for prefix in prefixes:
                base = "" if prefix == "/" else prefix
                paths.append(f"{base}/{quote(Path(relative).as_posix())}")
        self._broadcast(json.dumps({"type": "css", "paths": paths}))

    async def close(self) -> None:
        """Close every page's socket (``1001``: going away; pages reconnect with backoff)."""
        for task in list(self._sending):
            task.cancel()
        pages, self._pages = list(self._pages), set()
        await asyncio.gather(*(_close(page) for page in pages))

    def _broadcast(self, text: str) -> None:
        if not self._pages:
            return
        logger.debug("live reload: %d page(s) told %s", len(self._pages), text[:80])
        task = asyncio.get_running_loop().create_task(self._send_all(text))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_all(self, text: str) -> None:
        await asyncio.gather(*(self._send(page, text) for page in list(self._pages)))

    async def _send(self, page: web.WebSocketResponse, text: str) -> None:
        try:
            async with asyncio.timeout(SEND_SECONDS):
                await page.send_str(text)
        except (ConnectionResetError, TimeoutError) as exc:
            logger.debug("dropped a live-reload page: %r", exc)
            self._pages.discard(page)
            await _close(page)


def is_in_trouble(status: ServiceStatus) -> bool:
    """Crashed, failed, waiting to restart after a crash, or ready on its old code after a
    reload that failed (blue-green: ``last_lines`` are then the failed attempt's)."""
    return status.state in _TROUBLE_STATES or status.has_failed_reload


def _is_new(ready: ServiceStatus, before: ServiceStatus) -> bool:
    """``ready`` is a service that came back: from any other state, on another process or port
    (a blue-green switch), or without the failure it carried."""
    if not before.is_ready or is_in_trouble(before):
        return True
    return (ready.pid, ready.port) != (before.pid, before.port)


def _shown(status: ServiceStatus) -> tuple[object, ...]:
    return status.state, status.reason, status.last_lines


def _error_message(status: ServiceStatus) -> str:
    reason = status.reason or str(status.state)
    lines = [_ANSI.sub("", line) for line in status.last_lines]
    return json.dumps({"type": "error", "service": status.name, "reason": reason,
                       "lines": lines})  # fmt: skip


def _normalized(path: Path | None) -> Path:
    """An absolute path without ``..`` or ``.`` (symlinks left alone: no disk access)."""
    return Path(os.path.normpath(os.path.abspath(path or ".")))


async def _close(page: web.WebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(CLOSE_SECONDS):
            await page.close(code=1001, message=b"going away")
