"""Static routes: files from a folder, never anything outside it.

A request path is refused (404, same as a missing file, so nothing is revealed) when any
segment starts with a dot (``..``, ``.env``, ``.git/``), contains a NUL or a backslash, or when
the file it resolves to (symlinks followed) lies outside the folder. The path arrives normalized
by :mod:`devstack.proxy.target` (dot segments gone, ``%2e`` already ``.``) and is decoded here,
after that check could see every segment; an encoded slash (``%2F``) is a 404, never a
separator. Folders answer with their ``index.html``; there is no directory listing, and a
folder named without its trailing slash is redirected to the same-origin path with one
(``Location: /docs/``, never ``//docs/``, which a browser reads as another host). Conditional
requests (ETag, Last-Modified, 304), ranges (206) and HEAD are aiohttp's ``FileResponse``'s work.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from devstack.proxy import pages
from devstack.proxy.target import RequestTarget

INDEX_FILE = "index.html"


class _Found(enum.Enum):
    NOTHING = "nothing"
    FOLDER_WITHOUT_SLASH = "folder without slash"


async def serve(
    request: web.BaseRequest, root: Path, path: str, target: RequestTarget
) -> web.StreamResponse:
    """Answer ``request`` with the file at ``path`` (below the route's prefix, normalized and
    still percent-encoded) under ``root``; ``target`` is the request's checked target."""
    if request.method not in ("GET", "HEAD"):
        return web.Response(
            status=405, text="405: files accept only GET and HEAD\n", headers={"Allow": "GET, HEAD"}
        )
    if "%2F" in path:  # normalized escapes are upper case
        return pages.file_not_found_page(request)
    loop = asyncio.get_running_loop()
    # resolve() and stat() touch the disk: keep them off the event loop.
    found = await loop.run_in_executor(None, locate, root, unquote(path, errors="surrogateescape"))
    if found is _Found.FOLDER_WITHOUT_SLASH:
        # The normalized path starts with exactly one slash: the Location stays on this origin.
        query = "" if target.query is None else f"?{target.query}"
        return web.Response(status=308, headers={"Location": f"{target.path}/{query}"})
    if found is _Found.NOTHING:
        return pages.file_not_found_page(request)
    return web.FileResponse(found)


def locate(root: Path, path: str) -> Path | _Found:
    """The file ``path`` names under ``root``, or why there is none. Blocking (touches disk)."""
    parts = [part for part in path.split("/") if part]
    if any(_is_refused(part) for part in parts):
        return _Found.NOTHING
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if not _is_inside(candidate, base):
        return _Found.NOTHING
    if candidate.is_dir():
        if parts and not path.endswith("/"):
            return _Found.FOLDER_WITHOUT_SLASH
        candidate = (candidate / INDEX_FILE).resolve()
        if not _is_inside(candidate, base):
            return _Found.NOTHING
    return candidate if candidate.is_file() else _Found.NOTHING


def _is_refused(part: str) -> bool:
    return part.startswith(".") or "\x00" in part or "\\" in part


def _is_inside(candidate: Path, base: Path) -> bool:
    """Inside ``base`` after symlinks, and not a hidden file reached through a link."""
    if not candidate.is_relative_to(base):
        return False
    return not any(part.startswith(".") for part in candidate.relative_to(base).parts)
