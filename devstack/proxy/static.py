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
Every answer says ``Cache-Control: no-cache`` (:data:`FILE_HEADERS`): a browser asks again each
time (a 304 while the file is unchanged) instead of reusing a copy it guessed fresh from
Last-Modified, which would show the old stylesheet after a page reload that follows an edit.

HTML files of a route with ``live_reload`` (up to :data:`LIVE_PAGE_MAX_BYTES`) are read and sent
with the live-reload tag after them (:mod:`devstack.proxy.live.injection`), as a variant of the
file with its own ETag (the file's with ``-live`` added), so a cached copy of one is never taken
for the other; conditional requests are answered for that variant (304). A Range request gets
the file itself, untouched, from ``FileResponse``: ranges are offsets into the file, whose ETag
then is the file's own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import mimetypes
import os
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

from aiohttp import hdrs, web

from devstack.proxy import pages
from devstack.proxy.live.script import SCRIPT_TAG
from devstack.proxy.target import RequestTarget

logger = logging.getLogger(__name__)

INDEX_FILE = "index.html"
LIVE_PAGE_MAX_BYTES = 4 * 1024 * 1024
"""HTML files up to this size get the live-reload script; larger ones are sent untouched."""
FILE_HEADERS = {hdrs.CACHE_CONTROL: "no-cache"}
"""On every file answer: revalidated each time, never reused by heuristic freshness
(RFC 9111 section 4.2.2)."""


class _Found(enum.Enum):
    NOTHING = "nothing"
    FOLDER_WITHOUT_SLASH = "folder without slash"


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
    if live_reload and hdrs.RANGE not in request.headers and _is_html(found):
        page = await loop.run_in_executor(None, _read_page, found)
        if page is not None:
            return _live_page(request, *page)
        logger.debug("%s is over %d bytes: sent without the live-reload script", found,
                     LIVE_PAGE_MAX_BYTES)  # fmt: skip
    return web.FileResponse(found, headers=FILE_HEADERS)


def _is_html(path: Path) -> bool:
    return mimetypes.guess_type(path)[0] == "text/html"


def _read_page(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The file's bytes and its stat, or ``None`` when it is too big to send whole. Blocking."""
    with path.open("rb") as file:
        stat = os.fstat(file.fileno())
        if stat.st_size > LIVE_PAGE_MAX_BYTES:
            return None
        return file.read(), stat


def _live_page(request: web.BaseRequest, content: bytes, stat: os.stat_result) -> web.Response:
    """An HTML file with the live-reload tag after it: a variant of the file with its own ETag.
    HEAD gets the headers GET would (aiohttp leaves the body out)."""
    etag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}-live"
    headers = {
        **FILE_HEADERS,
        hdrs.ETAG: f'"{etag}"',
        hdrs.LAST_MODIFIED: formatdate(stat.st_mtime, usegmt=True),
    }
    if _is_not_modified(request, etag, stat.st_mtime):
        return web.Response(status=304, headers=headers)
    return web.Response(body=content + SCRIPT_TAG, content_type="text/html", headers=headers)


def _is_not_modified(request: web.BaseRequest, etag: str, mtime: float) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match (weak comparison) when sent, else
    If-Modified-Since."""
    wanted = request.if_none_match
    if wanted is not None:
        return any(tag.value in (etag, "*") for tag in wanted)
    since = request.if_modified_since
    return since is not None and int(mtime) <= since.timestamp()


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
