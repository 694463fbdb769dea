"""Static files on the full proxy (aiohttp): the requests the fast lane hands over.

The fast lane (:mod:`.lane`) answers plain GET and HEAD requests for files it finds; this
answers the rest with the same rules (:func:`.answer.answer_file`): other methods (405 with
``Allow``), paths that name no file (the 404 page), folders named without their trailing slash
(308 to the same-origin path with one: ``Location: /docs/``, never ``//docs/``, which a browser
reads as another host), and every request while the access log is on.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import hdrs, web
from multidict import CIMultiDict

from devstack.proxy import pages
from devstack.proxy.static.answer import FileAnswer, answer_file, file_request
from devstack.proxy.static.cache import FILES
from devstack.proxy.static.locate import Found
from devstack.proxy.target import RequestTarget

READ_CHUNK_BYTES = 256 * 1024
"""A large file is read and written in pieces of this size."""


async def serve(
    request: web.BaseRequest,
    root: Path,
    path: str,
    target: RequestTarget,
    *,
    live_reload: bool = False,
) -> web.StreamResponse:
    """Answer ``request`` with the file at ``path`` (below the route's prefix, normalized and
    still percent-encoded) under ``root``; ``target`` is the request's checked target;
    ``live_reload``: the route's (its HTML files get the live-reload script)."""
    if request.method not in ("GET", "HEAD"):
        return web.Response(
            status=405, text="405: files accept only GET and HEAD\n", headers={"Allow": "GET, HEAD"}
        )
    asked = file_request(request.headers.items(), is_head=request.method == "HEAD")
    for _ in range(2):  # twice when the file changed between the answer and its opening
        answer = answer_file(FILES, root, path, asked, live_reload=live_reload)
        if answer is Found.FOLDER_WITHOUT_SLASH:
            # The normalized path starts with one slash: the Location stays on this origin.
            query = "" if target.query is None else f"?{target.query}"
            return web.Response(status=308, headers={"Location": f"{target.path}/{query}"})
        if isinstance(answer, Found):
            break
        if answer.source is None:
            return _whole(request, answer)
        opened = answer.source.open()
        if opened is not None:
            return await _stream(request, answer, opened)
    return pages.file_not_found_page(request)


def _whole(request: web.BaseRequest, answer: FileAnswer) -> web.StreamResponse:
    headers = _headers(answer)
    if not answer.has_length:
        return web.Response(status=answer.status, headers=headers)
    if request.method == "HEAD":
        headers[hdrs.CONTENT_LENGTH] = str(answer.length)
        return web.Response(status=answer.status, headers=headers)
    return web.Response(status=answer.status, headers=headers, body=bytes(answer.body))


def _headers(answer: FileAnswer) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in answer.fields.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            headers.add(name, value)
    return headers


async def _stream(request: web.BaseRequest, answer: FileAnswer, fd: int) -> web.StreamResponse:
    """Send ``answer``'s part of the open file ``fd`` (closed at the end)."""
    loop = asyncio.get_running_loop()
    try:
        response = web.StreamResponse(status=answer.status, headers=_headers(answer))
        response.content_length = answer.length
        await response.prepare(request)
        # Read in pieces in an executor: this is a coroutine, it can wait for the disk.
        offset, left = answer.offset, answer.length
        while left:
            chunk = await loop.run_in_executor(
                None, os.pread, fd, min(left, READ_CHUNK_BYTES), offset
            )
            if not chunk:  # the file shrank under us: cut the answer short
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(chunk)
            offset += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    await response.write_eof()
    return response

