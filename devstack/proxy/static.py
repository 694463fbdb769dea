"""Static routes: files from a folder, never anything outside it.

A request path is refused (404, same as a missing file, so nothing is revealed) when any
segment starts with a dot (``..``, ``.env``, ``.git/``), contains a NUL or a backslash, or when
the file it resolves to (symlinks followed) lies outside the folder. The path arrives decoded
(``%2e%2e`` and ``%2f`` are already ``..`` and ``/``), so encodings cannot sneak past the check.
Folders answer with their ``index.html``; there is no directory listing. Conditional requests
(ETag, Last-Modified, 304), ranges (206) and HEAD are aiohttp's ``FileResponse``'s work.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path

from aiohttp import web

from devstack.proxy import pages

INDEX_FILE = "index.html"


class _Found(enum.Enum):
    NOTHING = "nothing"
    FOLDER_WITHOUT_SLASH = "folder without slash"


async def serve(request: web.BaseRequest, root: Path, path: str) -> web.StreamResponse:
    """Answer ``request`` with the file at ``path`` (relative to the route) under ``root``."""
    if request.method not in ("GET", "HEAD"):
        return web.Response(
            status=405, text="405: files accept only GET and HEAD\n", headers={"Allow": "GET, HEAD"}
        )
    loop = asyncio.get_running_loop()
    # resolve() and stat() touch the disk: keep them off the event loop.
    found = await loop.run_in_executor(None, locate, root, path)
    if found is _Found.FOLDER_WITHOUT_SLASH:
        location = request.raw_path.partition("?")
        target = location[0] + "/" + (location[1] + location[2])
        return web.Response(status=308, headers={"Location": target})
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
