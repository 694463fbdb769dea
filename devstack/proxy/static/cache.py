"""What the proxy remembers of static files between requests, and why it is never stale.

Every request stats the file its path named last time (one ``stat``, symlinks followed by the
kernel). The remembered answer is used only while that gives the same file, unchanged: the same
device and inode (so a retargeted symlink or a replaced folder is located afresh, with every
rule of :mod:`.locate`) and the same size and modification time in nanoseconds. Anything else
reads the file again.

A file's identity alone cannot tell two edits apart when they fall in the same tick of the
file system's clock (a few milliseconds on ext4, two seconds on FAT) and keep its size: the
second edit would look unchanged. So, as git does with "racily clean" files, a file modified
less than :data:`RACY_SECONDS` before it is read is never kept: it is read from disk on every
request until it has been quiet that long. Small files' ETags are a hash of their bytes, so
even two same-size edits in one tick get two ETags.

Memory: the bytes of files up to :data:`CACHED_FILE_MAX_BYTES` are kept, at most
:data:`CACHE_MAX_BYTES` in all, the least recently used dropped first; at most
:data:`CACHE_MAX_ENTRIES` files are remembered. Larger files are read from disk in chunks as
they are sent. One cache serves the whole process (both lanes of every proxy in it).

Answers are remembered too, by the exact request head that asked (:meth:`FileCache.recall`):
the same bytes to the same proxy are the same request, decided by the same rules, so while
every file the decision rested on is the same (the file, and each precompressed sibling looked
for: there or not, and which) the answer is written again without parsing or deciding anything.
At most :data:`MEMO_MAX_ENTRIES` of them, for heads up to :data:`MEMO_MAX_HEAD_BYTES`; they hold
no bytes of their own beyond the head: their bodies are the kept files', and go with them.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
import os
import time
from collections import OrderedDict
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple
from urllib.parse import quote, unquote

from devstack.proxy.httpdate import format_http_date
from devstack.proxy.static.locate import Found, Located, locate

CACHED_FILE_MAX_BYTES = 1024 * 1024
"""Files up to this size are kept in memory (and get an ETag from their bytes)."""
CACHE_MAX_BYTES = 32 * 1024 * 1024
"""The bytes of all kept files together, at most."""
CACHE_MAX_ENTRIES = 4096
"""Files remembered at most (with or without their bytes)."""
MEMO_MAX_ENTRIES = 1024
"""Answers remembered by request head, at most."""
MEMO_MAX_HEAD_BYTES = 2048
"""Request heads longer than this are never remembered."""
RACY_SECONDS = 3.0
"""A file modified less than this long ago is read again on every request (more than any file
system's timestamp granularity: FAT's is two seconds)."""

FALLBACK_CONTENT_TYPE = "application/octet-stream"

Identity = tuple[int, int, int, int]


@functools.cache
def content_types() -> mimetypes.MimeTypes:
    """Types by extension; ``x.js.gz`` is ``application/gzip`` (not JavaScript in gzip), as
    aiohttp and Caddy serve it: a precompressed sibling asked for by name is a compressed file.

    Made at the first file served: making it reads the system's ``mime.types`` (about 7 ms),
    which the proxy's start need not wait for."""
    types = mimetypes.MimeTypes()
    types.encodings_map.clear()
    types.add_type("application/gzip", ".gz")
    types.add_type("application/x-brotli", ".br")
    return types
"""Device, inode, size and modification time in nanoseconds: a file as it is."""
Basis = tuple[tuple[str, Identity | None], ...]
"""What an answer was decided on: paths and the file each held (``None``: nothing there)."""
CacheKey = tuple[Path, str]


class FileVersion:
    """One file as read at one moment: who it is, its validators and, when small, its bytes."""

    __slots__ = ("content", "content_type", "etag", "fields", "identity", "is_racy", "key",
                 "last_modified", "located", "memos", "mtime", "size")  # fmt: skip

    def __init__(self, key: CacheKey, located: Located, stat: os.stat_result,
                 content: bytes | None, *, is_racy: bool) -> None:  # fmt: skip
        self.key = key
        self.located = located
        self.identity: Identity = identity_of(stat)
        self.memos: list[tuple[object, bytes]] = []
        """The remembered answers that carry this version (they go when it goes)."""
        self.size = stat.st_size
        self.mtime = stat.st_mtime
        self.content = content
        """The whole file, or ``None`` when it is larger than :data:`CACHED_FILE_MAX_BYTES`."""
        self.is_racy = is_racy
        """Modified less than :data:`RACY_SECONDS` before it was read."""
        if content is not None:
            digest = hashlib.blake2b(content, digest_size=8).hexdigest()
            self.etag = f'"{stat.st_size:x}-{digest}"'
        else:
            self.etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        self.last_modified = format_http_date(stat.st_mtime)
        kind = content_types().guess_type(located.relative)[0] or FALLBACK_CONTENT_TYPE
        self.content_type = kind
        self.fields = file_fields(kind, self.etag, self.last_modified)
        """The header lines every answer with this file's bytes carries (:func:`file_fields`)."""

    @property
    def is_html(self) -> bool:
        return self.content_type == "text/html"

    def open(self) -> int | None:
        """A descriptor of this very file (to read a large one in pieces), or ``None`` when the
        path now holds another file or a changed one. The caller closes it."""
        try:
            fd = os.open(self.located.resolved, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        if identity_of(os.fstat(fd)) != self.identity:
            os.close(fd)
            return None
        return fd


def identity_of(stat: os.stat_result) -> Identity:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def identity_at(path: str) -> Identity | None:
    """What ``path`` holds now (symlinks followed), or ``None`` when nothing is there."""
    try:
        return identity_of(os.stat(path))
    except OSError:
        return None


class Recalled(NamedTuple):
    """An answer to write again: the head up to Content-Length (no Date, Server, Connection
    or final blank line), the body, and whether the connection closes after it."""

    head: bytes
    body: bytes | memoryview
    close: bool


class _Memo(NamedTuple):
    version: FileVersion
    """The file (or sibling) whose bytes or validators the answer carries."""
    basis: Basis
    answer: Recalled


def file_fields(content_type: str, etag: str, last_modified: str, encoding: str = "") -> bytes:
    """Header lines (each ending in CRLF) of a file's answer, before Content-Length: what it is,
    its validators, and ``Cache-Control: no-cache`` (revalidated each time, never reused by
    heuristic freshness, RFC 9111 section 4.2.2). ``Vary: Accept-Encoding`` on every one: a
    precompressed sibling may appear beside any file."""
    lines = [f"Content-Type: {content_type}\r\n"]
    if encoding:
        lines.append(f"Content-Encoding: {encoding}\r\n")
    lines.append(f"ETag: {etag}\r\nLast-Modified: {last_modified}\r\nCache-Control: no-cache\r\n"
                 "Accept-Ranges: bytes\r\nVary: Accept-Encoding\r\n")  # fmt: skip
    return "".join(lines).encode("latin-1")


class FileCache:
    """Static files by (folder, request path), checked against the disk on every lookup.

    Lookups read the disk inline, on the event loop: a ``stat`` (and, on a change, reading a
    file of at most :data:`CACHED_FILE_MAX_BYTES`) from the page cache takes microseconds, less
    than a hop to an executor thread would."""

    def __init__(self, *, max_bytes: int = CACHE_MAX_BYTES,
                 max_entries: int = CACHE_MAX_ENTRIES) -> None:  # fmt: skip
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, FileVersion] = OrderedDict()
        self._memos: OrderedDict[tuple[object, bytes], _Memo] = OrderedDict()
        self.kept_bytes = 0
        """The bytes of files held now (at most ``max_bytes``)."""
        self.reads = 0
        """Files read from disk so far (for tests and diagnostics)."""
        self.recalls = 0
        """Answers written again from memory so far (for tests and diagnostics)."""

    def get(self, root: Path, path: str) -> FileVersion | Found:
        """The file ``path`` (a request path below the route's prefix, normalized, still
        percent-encoded) names under ``root``, as it is on disk now."""
        key: CacheKey = (root, path)
        known = self._entries.get(key)
        if known is not None:
            try:
                stat = os.stat(known.located.path)
            except OSError:
                stat = None
            if stat is not None and known.identity[:2] == (stat.st_dev, stat.st_ino):
                if not known.is_racy and known.identity[2:] == (stat.st_size, stat.st_mtime_ns):
                    self._entries.move_to_end(key)
                    return known
                return self._read(key, known.located)  # the same file, changed (or racy)
            self._forget(key)
        if "%2F" in path:  # an encoded slash is never a separator (normalized escapes: upper case)
            return Found.NOTHING
        located = locate(root, unquote(path, errors="surrogateescape"))
        if isinstance(located, Found):
            return located
        return self._read(key, located)

    def sibling(self, root: Path, version: FileVersion,
                extension: str) -> tuple[FileVersion | None, Identity | None]:  # fmt: skip
        """``version``'s precompressed sibling (its path plus ``extension``) when it is a file
        under ``root`` by the same rules (never a symlink leaving it) and not older than
        ``version`` (an edited file whose sibling was not made again: out of date), else
        ``None``; and what the sibling's path holds (``None``: nothing)."""
        held = identity_at(version.located.path + extension)
        if held is None:  # most files have no sibling: say so without resolving anything
            return None, None
        # The sibling's path in the form requests arrive in (percent-encoded), so that it is
        # decoded back to exactly this name.
        path = quote(version.located.relative + extension, safe="/", errors="surrogateescape")
        found = self.get(root, path)
        if isinstance(found, Found) or found.identity[3] < version.identity[3]:
            return None, held
        return found, found.identity

    def recall(self, scope: object, head: bytes) -> Recalled | None:
        """The answer remembered for ``head`` (a whole request head) sent to ``scope`` (the
        proxy's route table), if every file it rested on is still as it was."""
        key = (scope, head)
        memo = self._memos.get(key)
        if memo is None:
            return None
        version = memo.version
        if self._entries.get(version.key) is not version or any(
            identity_at(path) != held for path, held in memo.basis
        ):
            self._drop_memo(key)
            return None
        self._entries.move_to_end(version.key)
        self.recalls += 1
        return memo.answer

    @property
    def remembered(self) -> int:
        """How many answers are remembered now (at most :data:`MEMO_MAX_ENTRIES`)."""
        return len(self._memos)

    def remember(self, scope: object, head: bytes, version: FileVersion, basis: Basis,
                 answer: Recalled) -> None:  # fmt: skip
        """Remember ``answer`` to ``head`` sent to ``scope``: it carries ``version`` (which
        this cache holds) and was decided on ``basis``."""
        if len(head) > MEMO_MAX_HEAD_BYTES or self._entries.get(version.key) is not version:
            return
        key = (scope, head)
        self._drop_memo(key)
        self._memos[key] = _Memo(version, basis, answer)
        version.memos.append(key)
        while len(self._memos) > MEMO_MAX_ENTRIES:
            self._drop_memo(next(iter(self._memos)))

    def _drop_memo(self, key: tuple[object, bytes]) -> None:
        memo = self._memos.pop(key, None)
        if memo is not None:
            memo.version.memos.remove(key)

    def _read(self, key: CacheKey, located: Located) -> FileVersion | Found:
        """Read the file (its bytes when small) and remember it unless it is racy."""
        self._forget(key)
        try:
            # Non-blocking: were the file swapped for a FIFO meanwhile, opening it must not hang.
            fd = os.open(located.resolved, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return Found.NOTHING
        with open(fd, "rb", closefd=True) as file:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                return Found.NOTHING
            content = None
            if stat.st_size <= CACHED_FILE_MAX_BYTES:
                content = file.read(CACHED_FILE_MAX_BYTES + 1)
        self.reads += 1
        is_racy = time.time() - stat.st_mtime < RACY_SECONDS
        if content is not None and len(content) != stat.st_size:
            is_racy = True  # written to while read: the next request reads it again
        version = FileVersion(key, located, stat, content, is_racy=is_racy)
        if is_racy and content is not None:
            # Remember where it is, not its bytes: the next request reads it again.
            self._keep(key, FileVersion(key, located, stat, None, is_racy=True))
        else:
            self._keep(key, version)
        return version

    def _keep(self, key: CacheKey, version: FileVersion) -> None:
        self._entries[key] = version
        if version.content is not None:
            self.kept_bytes += len(version.content)
        while self.kept_bytes > self.max_bytes or len(self._entries) > self.max_entries:
            _, dropped = self._entries.popitem(last=False)
            self._dropped(dropped)

    def _forget(self, key: CacheKey) -> None:
        dropped = self._entries.pop(key, None)
        if dropped is not None:
            self._dropped(dropped)

    def _dropped(self, version: FileVersion) -> None:
        if version.content is not None:
            self.kept_bytes -= len(version.content)
        for key in version.memos:
            self._memos.pop(key, None)
        version.memos.clear()


FILES = FileCache()
"""The process's cache, shared by both lanes of the proxy."""
