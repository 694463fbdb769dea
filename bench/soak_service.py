"""The soak's service (standard library and aiohttp only): plain answers, uploads, server-sent
events and a websocket echo, on ``$PORT``. The bench's soak runs a copy of this file per service
(``python soak_service.py``), the in-process soak test (``tests/reliability/test_soak.py``) this
file itself. The bench edits the ``EDIT`` line of the target's copy, and ``/hello`` answers it,
so a new process shows its edit.

It stops as devstack's restarts expect a service to (SIGTERM: what is under way finishes), which
aiohttp's ``run_app`` does not quite do: on SIGTERM it marks every connection closing at once
(``Server.pre_shutdown``), and from then on a connection drops whatever it receives
(``RequestHandler.data_received`` returns early once ``_close`` is set). An upload whose body
was still arriving waits for the rest for ever, and its client gets a broken answer when the
process is killed after its stop timeout (aio-libs/aiohttp#2298). So :func:`serve` stops
accepting, waits until no request has been under way for :data:`QUIET_SECONDS` (what a client
sent just before the signal included), and only then lets aiohttp close the connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

EDIT = "<edit 0>"
QUIET_SECONDS = 0.1
"""After SIGTERM, how long no request may have been under way before the connections close: a
request a client wrote just before the signal is still read and answered."""
DRAIN_SECONDS = 60.0
"""At most this long for what is under way to finish (aiohttp's own shutdown timeout)."""


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello from {os.getpid()} {EDIT}")


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    async for chunk in request.content.iter_any():
        digest.update(chunk)
    return web.Response(text=digest.hexdigest())


async def events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(int(request.query.get("n", "5"))):
        await response.write(f"data: {i}\n\n".encode())
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def echo(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        await socket.send_str(message.data)
    return socket


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UnderWay:
    """The requests being handled (a middleware counts them), and when the last one started
    or ended."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.count = 0
        self.last = self._loop.time()
        self._changed = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._moved(+1)
        try:
            return await handler(request)
        finally:
            self._moved(-1)

    def _moved(self, step: int) -> None:
        self.count += step
        self.last = self._loop.time()
        self._changed.set()
        self._changed = asyncio.Event()

    async def quiet(self) -> None:
        """Return once nothing has been under way for :data:`QUIET_SECONDS`."""
        while True:
            if self.count:
                await self._changed.wait()
                continue
            left = self.last + QUIET_SECONDS - self._loop.time()
            if left <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                pass


async def serve(port: int) -> None:
    under_way = UnderWay()
    app = web.Application(client_max_size=0, middlewares=[under_way.middleware])
    app.router.add_get("/{p:.*}/hello", hello)
    app.router.add_post("/{p:.*}/upload", upload)
    app.router.add_get("/{p:.*}/events", events)
    app.router.add_get("/{p:.*}/ws", echo)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
        await site.stop()  # no new connection; the open ones are still read and answered
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await under_way.quiet()
        except TimeoutError:
            pass
    finally:
        await runner.cleanup()


def main() -> None:
    asyncio.run(serve(int(os.environ["PORT"])))


if __name__ == "__main__":
    main()
