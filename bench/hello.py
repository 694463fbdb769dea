"""The Python upstream of the proxy bench: a small aiohttp service answering ``Hello, world``.

Run as a program (``python bench/hello.py``), usually by devstack as a service: it listens on
``127.0.0.1:$PORT``, on uvloop when installed, prints one line when it is listening and exits
cleanly on SIGTERM or SIGINT. Standard library and aiohttp only, so it needs nothing from the
bench package.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

BODY = "Hello, world"


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=BODY)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"hello listening on http://127.0.0.1:{port}/", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Any = uvloop.new_event_loop
    return factory  # type: ignore[no-any-return]


def main() -> None:
    port = int(os.environ["PORT"])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(port))


if __name__ == "__main__":
    main()
