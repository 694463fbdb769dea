"""What a GET or HEAD for a static file is answered with: one set of rules for both lanes.

- **Which bytes** (the *representation*): an HTML file of a ``live_reload`` route (up to
  :data:`LIVE_PAGE_MAX_BYTES`) is sent with the live-reload tag after it, as a variant with its
  own ETag (the file's with ``-live``). Otherwise, when ``Accept-Encoding`` allows it, a
  precompressed sibling beside the file (``x.js.br``, then ``x.js.gz``, as Caddy's
  ``precompressed br gzip``) is sent with ``Content-Encoding``, the file's ``Content-Type`` and
  the sibling's own ETag. A sibling is looked up by the same rules as any file, so one that is a
  symlink out of the folder is never used; nor is one older than the file (the file was edited,
  the sibling not made again: out of date). A Range request gets the file itself, untouched:
  ranges are offsets into the file, not into a compressed copy. Every answer says ``Vary:
  Accept-Encoding``, whichever was sent.
- **Conditions** (RFC 9110 section 13.2.2, in this order): ``If-Match`` (strong comparison),
  else ``If-Unmodified-Since``: 412 when it fails; ``If-None-Match`` (weak comparison), else
  ``If-Modified-Since``: 304. A large file modified in the last seconds (see
  :mod:`.cache`: its ETag could survive a second edit) is never taken as unchanged.
- **Ranges** (RFC 9110 section 14): one byte range gets a 206 with ``Content-Range``; a range
  starting past the end, or one that cannot be parsed, a 416 with ``Content-Range: bytes
  */size``; several ranges, or a unit other than bytes, are ignored (the whole file, 200), as is
  a Range whose ``If-Range`` does not match (an ETag compared strongly, or the exact
  Last-Modified date).

Pure but for the cache's lookups: an answer is a status, header lines and either the bytes or
the part of a file to send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from devstack.proxy.httpdate import parse_http_date
from devstack.proxy.live.script import SCRIPT_TAG
from devstack.proxy.static.cache import Basis, FileCache, FileVersion, file_fields
from devstack.proxy.static.locate import Found

LIVE_PAGE_MAX_BYTES = 4 * 1024 * 1024
"""HTML files up to this size get the live-reload script; larger ones are sent untouched."""
PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))
"""Content codings tried in this order, and the extension of the sibling holding each."""

_ETAG = re.compile(r'(W/)?"([^"]*)"')
_RANGE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_CODING = re.compile(r"\s*([A-Za-z0-9*_-]+)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*")


class FileRequest(NamedTuple):
    """What of a request decides a file's answer (header values as sent, ``None`` when absent)."""

    is_head: bool
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    range: str | None = None
    if_range: str | None = None
    accept_encoding: str = ""


FILE_REQUEST_HEADERS = {
    "if-match": "if_match",
    "if-none-match": "if_none_match",
    "if-modified-since": "if_modified_since",
    "if-unmodified-since": "if_unmodified_since",
    "range": "range",
    "if-range": "if_range",
    "accept-encoding": "accept_encoding",
}
"""Request headers (lower case) to :class:`FileRequest` fields."""


def file_request(headers: Iterable[tuple[str, str]], *, is_head: bool) -> FileRequest:
    """The parts of a request's headers a file's answer depends on."""
    found = {}
    for name, value in headers:
        field = FILE_REQUEST_HEADERS.get(name.lower())
        if field is not None:
            found[field] = value
    return FileRequest(is_head, **found) if found else FileRequest(is_head)


class FileAnswer(NamedTuple):
    """A file's answer: the status, its header lines (each ending in CRLF; not Content-Length,
    Date, Server or Connection, which the lane adds) and the body: ``body`` when it is in memory,
    else ``length`` bytes of ``source``'s file from ``offset``. A 200 or 206 says
    ``Content-Length: length``, HEAD included (whose ``body`` is empty and ``source`` ``None``)."""

    status: int
    fields: bytes
    body: bytes | memoryview = b""
    length: int = 0
    source: FileVersion | None = None
    offset: int = 0
    holder: FileVersion | None = None
    """The file (or sibling) whose bytes or validators the answer carries."""
    basis: Basis | None = None
    """The files the answer was decided on, as they were (``None``: it cannot be given again
    on their word alone: a page with the live-reload script, a file modified moments ago)."""

    @property
    def has_length(self) -> bool:
        return self.status in (200, 206)


class _Chosen(NamedTuple):
    version: FileVersion
    fields: bytes
    etag: str
    body: bytes | None
    """Bytes to send instead of the file's own (the live page), or ``None``."""
    siblings: Basis | None
    """The siblings looked for and what each path held (``None`` for the live page)."""


def answer_file(
    cache: FileCache, root: Path, path: str, request: FileRequest, *, live_reload: bool
) -> FileAnswer | Found:
    """The answer to a GET or HEAD for ``path`` (below the route's prefix, normalized, still
    percent-encoded) under ``root``; ``live_reload``: the route's."""
    found = cache.get(root, path)
    if isinstance(found, Found):
        return found
    chosen = _choose(cache, root, found, request, live_reload=live_reload)
    version = chosen.version
    basis = None
    if chosen.siblings is not None and not found.is_racy and not version.is_racy:
        basis = ((found.located.path, found.identity), *chosen.siblings)
    answer = _answer(chosen, request)
    return answer._replace(holder=version, basis=basis)


def _answer(chosen: _Chosen, request: FileRequest) -> FileAnswer:
    version = chosen.version
    # A large file modified moments ago may keep its ETag through a second edit: never "same".
    trusted = version.content is not None or not version.is_racy
    failed = _failed_condition(request, chosen.etag, version.mtime, trusted=trusted)
    if failed == 412:
        return FileAnswer(412, b"Content-Length: 0\r\nCache-Control: no-cache\r\n", b"")
    if failed == 304:
        return FileAnswer(304, chosen.fields, b"")
    if chosen.body is not None:
        body = chosen.body
        return FileAnswer(200, chosen.fields, b"" if request.is_head else body, len(body))
    size = version.size
    start, stop = 0, size
    status = 200
    fields = chosen.fields
    if request.range is not None and _if_range_holds(request.if_range, version, trusted=trusted):
        wanted = byte_range(request.range, size)
        if wanted is None:
            unsatisfiable = b"Content-Range: bytes */%d\r\nContent-Length: 0\r\n" % size
            return FileAnswer(416, unsatisfiable + b"Cache-Control: no-cache\r\n")
        if wanted != (-1, -1):
            start, stop = wanted
            status = 206
            fields += b"Content-Range: bytes %d-%d/%d\r\n" % (start, stop - 1, size)
    length = stop - start
    if request.is_head:
        return FileAnswer(status, fields, b"", length)
    if version.content is not None:
        part = version.content if status == 200 else memoryview(version.content)[start:stop]
        return FileAnswer(status, fields, part, length)
    return FileAnswer(status, fields, b"", length, version, start)


def _choose(cache: FileCache, root: Path, version: FileVersion, request: FileRequest, *,
            live_reload: bool) -> _Chosen:  # fmt: skip
    """The representation to send: the live page, a precompressed sibling or the file."""
    if request.range is not None:
        return _Chosen(version, version.fields, version.etag, None, ())
    if live_reload and version.is_html and version.size <= LIVE_PAGE_MAX_BYTES:
        content = version.content
        if content is None:  # between the cache's limit and the live page's
            with open(version.located.resolved, "rb") as file:
                content = file.read()
        etag = version.etag[:-1] + '-live"'
        fields = file_fields(version.content_type, etag, version.last_modified)
        return _Chosen(version, fields, etag, content + SCRIPT_TAG, None)
    looked: Basis = ()
    if request.accept_encoding:
        accepted = accepted_codings(request.accept_encoding)
        for coding, extension in PRECOMPRESSED:
            if coding not in accepted:
                continue
            sibling, held = cache.sibling(root, version, extension)
            looked += ((version.located.path + extension, held),)
            if sibling is not None:
                fields = file_fields(version.content_type, sibling.etag, sibling.last_modified,
                                     coding)  # fmt: skip
                return _Chosen(sibling, fields, sibling.etag, None, looked)
    return _Chosen(version, version.fields, version.etag, None, looked)


def accepted_codings(value: str) -> frozenset[str]:
    """The content codings ``Accept-Encoding`` allows (lower case; ``q=0`` refuses one, ``*``
    stands for any other not named)."""
    allowed: set[str] = set()
    refused: set[str] = set()
    for item in value.split(","):
        match = _CODING.fullmatch(item)
        if match is None or not match.group(1):
            continue
        name = match.group(1).lower()
        try:
            weight = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        (allowed if weight > 0 else refused).add(name)
    if "*" in allowed:
        allowed |= {coding for coding, _ in PRECOMPRESSED} - refused
    return frozenset(allowed - refused)


def _failed_condition(request: FileRequest, etag: str, mtime: float, *, trusted: bool) -> int:
    """412, 304, or 0 when the answer is the file (RFC 9110 section 13.2.2)."""
    if request.if_match is not None:
        if not _etag_matches(request.if_match, etag, weak=False):
            return 412
    elif request.if_unmodified_since is not None:
        since = parse_http_date(request.if_unmodified_since)
        if since is not None and int(mtime) > since:
            return 412
    if not trusted:
        return 0
    if request.if_none_match is not None:
        return 304 if _etag_matches(request.if_none_match, etag, weak=True) else 0
    if request.if_modified_since is not None:
        since = parse_http_date(request.if_modified_since)
        if since is not None and int(mtime) <= since:
            return 304
    return 0


def _etag_matches(value: str, etag: str, *, weak: bool) -> bool:
    if value.strip() == "*":
        return True
    opaque = etag.strip('"')
    return any(tag == opaque and (weak or not is_weak) for is_weak, tag in _ETAG.findall(value))


def _if_range_holds(value: str | None, version: FileVersion, *, trusted: bool) -> bool:
    """The Range applies: no ``If-Range``, or one naming this version exactly."""
    if value is None:
        return True
    if not trusted:
        return False
    value = value.strip()
    if value.startswith(('"', "W/")):
        return _etag_matches(value, version.etag, weak=False)
    date = parse_http_date(value)
    return date is not None and int(version.mtime) == date


def byte_range(value: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of the one byte range ``value`` asks for in a file of ``size`` bytes;
    ``None`` when it cannot be satisfied (416); ``(-1, -1)`` when it is to be ignored (several
    ranges, another unit: the whole file)."""
    unit = value.partition("=")[0].strip().lower()
    if unit != "bytes" or "," in value:
        return (-1, -1)
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0 or size == 0:
            return None
        return max(0, size - int(last)), size
    start = int(first)
    stop = size if not last else min(int(last) + 1, size)
    if start >= size or (last and int(last) < start):
        return None
    return start, stop


