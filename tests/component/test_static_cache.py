"""The static files' cache (devstack/proxy/static/cache.py) on a real folder: what it keeps, its
memory bound, and that a change on disk is always seen; and the pure rules of answer.py (byte
ranges, Accept-Encoding)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.proxy.static.answer import accepted_codings, byte_range
from devstack.proxy.static.cache import (
    CACHED_FILE_MAX_BYTES,
    MEMO_MAX_ENTRIES,
    FileCache,
    FileVersion,
    Recalled,
)
from devstack.proxy.static.locate import Found

AN_HOUR_AGO = -3600.0


def write(path: Path, content: bytes, *, age: float = AN_HOUR_AGO) -> None:
    """Write ``content``; with ``age``, date the file that far back (a quiet file)."""
    path.write_bytes(content)
    if age:
        stat = os.stat(path)
        os.utime(path, (stat.st_atime + age, stat.st_mtime + age))


def version(found: FileVersion | Found) -> FileVersion:
    assert isinstance(found, FileVersion), found
    return found


def test_a_quiet_file_is_read_once_and_a_change_is_read_again(tmp_path: Path) -> None:
    cache = FileCache()
    write(tmp_path / "a.css", b"a" * 100)
    assert version(cache.get(tmp_path, "/a.css")).content == b"a" * 100
    assert version(cache.get(tmp_path, "/a.css")).content == b"a" * 100
    assert cache.reads == 1
    write(tmp_path / "a.css", b"b" * 101)  # same inode, new size
    assert version(cache.get(tmp_path, "/a.css")).content == b"b" * 101
    replacement = tmp_path / "a.css.tmp"
    write(replacement, b"c" * 101)
    replacement.replace(tmp_path / "a.css")  # an editor's atomic save: another inode
    assert version(cache.get(tmp_path, "/a.css")).content == b"c" * 101
    assert cache.reads == 3
    (tmp_path / "a.css").unlink()
    assert cache.get(tmp_path, "/a.css") is Found.NOTHING
    assert cache.kept_bytes == 0


def test_a_file_modified_moments_ago_is_read_on_every_request(tmp_path: Path) -> None:
    cache = FileCache()
    write(tmp_path / "a.js", b"1" * 50, age=0)
    first = version(cache.get(tmp_path, "/a.js"))
    stat = os.stat(tmp_path / "a.js")
    (tmp_path / "a.js").write_bytes(b"2" * 50)
    os.utime(tmp_path / "a.js", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same tick
    second = version(cache.get(tmp_path, "/a.js"))
    assert second.content == b"2" * 50 and cache.reads == 2
    assert second.etag != first.etag, "same size, same mtime, other bytes: another ETag"
    assert cache.kept_bytes == 0, "nothing racy is kept"


def test_memory_is_bounded_and_the_least_recently_used_goes_first(tmp_path: Path) -> None:
    cache = FileCache(max_bytes=3000, max_entries=10)
    for name in "abcde":
        write(tmp_path / name, name.encode() * 1000)
    for name in "abc":
        cache.get(tmp_path, "/" + name)
    cache.get(tmp_path, "/a")  # a is now the most recently used
    cache.get(tmp_path, "/d")  # over the bound: b goes
    assert cache.kept_bytes == 3000
    reads = cache.reads
    for name in "acd":
        cache.get(tmp_path, "/" + name)
    assert cache.reads == reads, "a, c and d were kept"
    cache.get(tmp_path, "/b")
    assert cache.reads == reads + 1 and cache.kept_bytes <= 3000
    few = FileCache(max_entries=2)
    for name in "abcde":
        few.get(tmp_path, "/" + name)
    assert few.kept_bytes == 2000


def test_a_large_file_is_remembered_but_not_kept(tmp_path: Path) -> None:
    cache = FileCache()
    write(tmp_path / "big.bin", b"\0" * (CACHED_FILE_MAX_BYTES + 1))
    found = version(cache.get(tmp_path, "/big.bin"))
    assert found.content is None and cache.kept_bytes == 0
    fd = found.open()
    assert fd is not None
    os.close(fd)
    write(tmp_path / "big.bin", b"\1" * (CACHED_FILE_MAX_BYTES + 2))
    assert found.open() is None, "a changed file is not the version that was answered"


def test_refusals_come_from_the_rules_not_the_cache(tmp_path: Path) -> None:
    cache = FileCache()
    (tmp_path / "docs").mkdir()
    write(tmp_path / "docs" / "index.html", b"<p>docs</p>")
    write(tmp_path / ".env", b"SECRET=1")
    assert version(cache.get(tmp_path, "/docs/")).located.relative == "/docs/index.html"
    assert cache.get(tmp_path, "/docs") is Found.FOLDER_WITHOUT_SLASH
    assert cache.get(tmp_path, "/.env") is Found.NOTHING
    assert cache.get(tmp_path, "/docs%2Findex.html") is Found.NOTHING


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-4", (0, 5)),
        ("bytes=5-", (5, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=-30", (0, 10)),
        ("bytes=8-100", (8, 10)),
        ("bytes=10-", None),
        ("bytes=4-2", None),
        ("bytes=-0", None),
        ("bytes=x-y", None),
        ("bytes=0-1,4-5", (-1, -1)),
        ("items=0-4", (-1, -1)),
    ],
)
def test_byte_ranges(value: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(value, 10) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip, deflate, br", {"gzip", "deflate", "br"}),
        ("br;q=0, gzip;q=0.8", {"gzip"}),
        ("*", {"br", "gzip", "*"}),
        ("*;q=0.5, gzip;q=0", {"br", "*"}),
        ("GZIP", {"gzip"}),
        ("", set()),
    ],
)
def test_accepted_codings(value: str, expected: set[str]) -> None:
    assert accepted_codings(value) == expected


def test_remembered_answers_are_bounded_and_go_with_the_files_they_carry(tmp_path: Path) -> None:
    cache = FileCache(max_bytes=2000)
    for name in "abc":
        write(tmp_path / name, name.encode() * 1000)
    a = version(cache.get(tmp_path, "/a"))
    basis = ((a.located.path, a.identity),)
    assert a.content is not None
    answer = Recalled(b"HTTP/1.1 200 OK\r\n", a.content, False)
    cache.remember("proxy", b"GET /a HTTP/1.1\r\n\r\n", a, basis, answer)
    assert cache.recall("proxy", b"GET /a HTTP/1.1\r\n\r\n") == answer
    assert cache.recall("another proxy", b"GET /a HTTP/1.1\r\n\r\n") is None
    for head in range(MEMO_MAX_ENTRIES + 10):
        cache.remember("proxy", b"GET /a?%d HTTP/1.1\r\n\r\n" % head, a, basis, answer)
    assert cache.remembered == MEMO_MAX_ENTRIES
    cache.get(tmp_path, "/b")
    cache.get(tmp_path, "/c")  # a is dropped: its answers too, and their hold on its bytes
    assert cache.remembered == 0
    assert cache.recall("proxy", b"GET /a?5 HTTP/1.1\r\n\r\n") is None
