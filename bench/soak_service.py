"""The soak's service (standard library and aiohttp only): plain answers, uploads, server-sent
events and a websocket echo, on ``$PORT``. The bench's soak runs a copy of this file per service
(``python soak_service.py``), the in-process soak test (``tests/reliability/test_soak.py``) this
file itself. The bench edits the ``EDIT`` line of the target's copy, and ``/hello`` answers it,
so a new process shows its edit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from aiohttp import web

EDIT = "<edit 0>"


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


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_get("/{p:.*}/hello", hello)
    app.router.add_post("/{p:.*}/upload", upload)
    app.router.add_get("/{p:.*}/events", events)
    app.router.add_get("/{p:.*}/ws", echo)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()
