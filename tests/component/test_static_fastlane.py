"""Static files on the fast lane (devstack/proxy/static/): answered in protocol callbacks, never
stale, precompressed siblings, large files streamed with back-pressure.

Raw HTTP/1.1 over verified TLS (one connection per client, as the test writes it), on uvloop;
the tests that take a ``lane`` run on both lanes and must give the same answers.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec
from devstack.proxy.live.script import SCRIPT_TAG
from devstack.proxy.server import Proxy
from devstack.proxy.static.cache import CACHED_FILE_MAX_BYTES, FILES, content_types
from devstack.proxy.static.lane import PIECE_BYTES
from tests.component.test_proxy_fastlane import Client, client, get
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    use_lane,
)
from tests.conditions import async_wait_until

SMALL = b"console.log('small');\n" * 50
MEDIUM = bytes(range(256)) * 1024  # 256 KiB: kept in memory, streamed in pieces
LARGE = os.urandom(CACHED_FILE_MAX_BYTES + 123_457)  # read from disk as it is sent
JS_TYPE = content_types().guess_type("app.js")[0]


@pytest.fixture(params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


@pytest.fixture
def fast() -> Iterator[str]:
    with use_lane("fast"):
        yield "fast"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    public.mkdir()
    (public / "app.js").write_bytes(SMALL)
    (public / "medium.bin").write_bytes(MEDIUM)
    (public / "large.bin").write_bytes(LARGE)
    (public / "index.html").write_bytes(b"<h1>home</h1>")
    (tmp_path / "outside.js.br").write_bytes(b"outside")
    return tmp_path


@asynccontextmanager
async def proxy_for(site: Path) -> AsyncIterator[Proxy]:
    spec = make_spec(site, {"api": 1}, (RouteSpec(path="/", static=Path("public")),))
    async with running_proxy(spec, StandInDirectory({"api": 1})) as proxy:
        yield proxy


def handovers(proxy: Proxy) -> int:
    return proxy.fast_lane.handovers if proxy.fast_lane is not None else -1


async def fetch(c: Client, path: str, *extra: str, method: str = "GET") -> tuple[
    int, dict[str, str], bytes
]:  # fmt: skip
    await c.send(get(path, *extra, method=method))
    return await c.response(is_head=method == "HEAD")


def test_plain_file_requests_never_leave_the_fast_lane(site: Path, fast: str) -> None:
    async def main() -> None:
        async with proxy_for(site) as proxy, client(proxy) as c:
            status, headers, body = await fetch(c, "/app.js")
            assert (status, body) == (200, SMALL)
            assert headers["content-type"] == JS_TYPE
            assert headers["cache-control"] == "no-cache"
            assert headers["vary"] == "Accept-Encoding"
            etag = headers["etag"]
            assert (await fetch(c, "/app.js", f"If-None-Match: {etag}"))[0] == 304
            status, headers, body = await fetch(c, "/app.js", "Range: bytes=-5")
            assert (status, body) == (206, SMALL[-5:])
            size = len(SMALL)
            assert headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"
            assert (await fetch(c, "/app.js", "Range: bytes=99999-"))[0] == 416
            status, headers, _ = await fetch(c, "/large.bin", method="HEAD")
            assert (status, int(headers["content-length"])) == (200, len(LARGE))
            for path, expected in (("/medium.bin", MEDIUM), ("/large.bin", LARGE), ("/", None)):
                status, _, body = await fetch(c, path)
                assert status == 200 and (expected is None or body == expected), path
            assert handovers(proxy) == 0
            # Pipelined: two answers in order on one connection, still on the fast lane.
            await c.send(get("/app.js") + get("/medium.bin", "Range: bytes=10-19"))
            assert (await c.response())[2] == SMALL
            assert (await c.response())[2] == MEDIUM[10:20]
            assert handovers(proxy) == 0
            # What the fast lane leaves to the full proxy: other methods, missing files.
            status, headers, _ = await fetch(c, "/app.js", method="DELETE")
            assert (status, headers["allow"]) == (405, "GET, HEAD")
            assert handovers(proxy) == 1

    asyncio.run(main())


def test_conditions_and_ranges_follow_rfc_9110(site: Path, lane: str) -> None:
    # An hour old: a large file modified moments ago is never answered 304 (see the next test).
    an_hour_ago = os.stat(site / "public" / "large.bin").st_mtime - 3600
    os.utime(site / "public" / "large.bin", (an_hour_ago, an_hour_ago))

    async def main() -> None:
        async with proxy_for(site) as proxy, client(proxy) as c:
            for path, content in (("/app.js", SMALL), ("/large.bin", LARGE)):
                _, headers, _ = await fetch(c, path, method="HEAD")
                etag, modified = headers["etag"], headers["last-modified"]
                size = len(content)
                cases = [
                    (("If-Match: \"other\"",), 412, b""),
                    ((f"If-Match: {etag}", f"If-None-Match: {etag}"), 304, b""),
                    ((f"If-None-Match: W/{etag}, \"x\"",), 304, b""),
                    (("If-None-Match: \"x\"", f"If-Modified-Since: {modified}"), 200, content),
                    (("Range: bytes=0-0,5-6",), 200, content),  # several ranges: the whole
                    (("Range: bytes=3-9", "If-Range: \"old\""), 200, content),
                    (("Range: bytes=3-9", f"If-Range: {etag}"), 206, content[3:10]),
                    ((f"Range: bytes={size - 2}-{size + 50}",), 206, content[-2:]),
                    (("Range: bytes=9-3",), 416, b""),
                    (("Range: bytes=-0",), 416, b""),
                ]
                for extra, status, body in cases:
                    got_status, got_headers, got_body = await fetch(c, path, *extra)
                    assert (got_status, got_body == body) == (status, True), (path, extra)
                    if status == 416:
                        assert got_headers["content-range"] == f"bytes */{size}"

    asyncio.run(main())


def test_an_edit_is_served_at_once_even_in_the_same_millisecond(site: Path, lane: str) -> None:
    """Two same-size versions of a file written between two requests, faster than the file
    system's clock ticks: the second request gets the second version, with another ETag."""

    async def main() -> None:
        target = site / "public" / "app.js"
        async with proxy_for(site) as proxy, client(proxy) as c:
            for _ in range(2):  # and again, after the proxy has answered with an edited file
                first = os.urandom(600)
                target.write_bytes(first)
                _, headers, body = await fetch(c, "/app.js")
                assert body == first
                second = os.urandom(600)
                target.write_bytes(second)  # same size, and (most likely) the same mtime
                asked = f"If-None-Match: {headers['etag']}"
                status, headers2, body = await fetch(c, "/app.js", asked)
                assert (status, body) == (200, second), "the edit is served, not a 304 or old bytes"
                assert headers2["etag"] != headers["etag"]
            # A file quiet for a while is remembered; changed, it is read again.
            old = os.stat(target).st_mtime - 3600
            os.utime(target, (old, old))
            assert (await fetch(c, "/app.js"))[2] == second
            target.write_bytes(b"x" * 600)
            os.utime(target, (old + 1, old + 1))
            assert (await fetch(c, "/app.js"))[2] == b"x" * 600

    asyncio.run(main())


def test_a_retargeted_symlink_is_followed_and_still_checked(site: Path, lane: str) -> None:
    async def main() -> None:
        public = site / "public"
        link = public / "current.js"
        link.symlink_to(public / "app.js")
        (site / "secret.js").write_text("top secret")
        async with proxy_for(site) as proxy, client(proxy) as c:
            assert (await fetch(c, "/current.js"))[2] == SMALL
            link.unlink()
            link.symlink_to(public / "index.html")
            assert (await fetch(c, "/current.js"))[2].startswith(b"<h1>home</h1>")
            link.unlink()
            link.symlink_to(site / "secret.js")
            status, _, body = await fetch(c, "/current.js")
            assert status == 404 and b"secret" not in body
            (public / "app.js").unlink()
            assert (await fetch(c, "/app.js"))[0] == 404

    asyncio.run(main())


def test_precompressed_siblings_are_served_to_clients_that_accept_them(
    site: Path, lane: str
) -> None:
    async def main() -> None:
        public = site / "public"
        app_gz = gzip.compress(SMALL, mtime=0)  # one copy: gzip's header holds the time
        (public / "app.js.br").write_bytes(b"brotli bytes")
        (public / "app.js.gz").write_bytes(app_gz)
        (public / "medium.bin.gz").symlink_to(site / "outside.js.br")  # leaves the folder
        (public / "index.html.gz").write_bytes(gzip.compress(b"<h1>home</h1>"))
        (public / "stale.js").write_bytes(b"edited")
        (public / "stale.js.gz").write_bytes(gzip.compress(b"before the edit"))
        an_hour_ago = os.stat(public / "stale.js").st_mtime - 3600
        os.utime(public / "stale.js.gz", (an_hour_ago, an_hour_ago))
        (public / "x%41.js").write_bytes(b"x%41")
        (public / "xA.js.br").write_bytes(b"not x%41's sibling")
        async with proxy_for(site) as proxy, client(proxy) as c:
            _, plain, _ = await fetch(c, "/app.js")
            for accept, encoding, body in [
                ("br, gzip", "br", b"brotli bytes"),
                ("gzip;q=0.5, br;q=0", "gzip", app_gz),
                ("*", "br", b"brotli bytes"),
                ("*, br;q=0", "gzip", app_gz),
                ("identity", None, SMALL),
                ("gzip;q=0", None, SMALL),
            ]:
                status, headers, got = await fetch(c, "/app.js", f"Accept-Encoding: {accept}")
                assert (status, got) == (200, body), accept
                assert headers.get("content-encoding") == encoding, accept
                assert headers["content-type"] == JS_TYPE, accept
                assert headers["vary"] == "Accept-Encoding", accept
                if encoding is not None:
                    etag = headers["etag"]
                    assert etag != plain["etag"], "a compressed copy has its own ETag"
                    status, _, _ = await fetch(c, "/app.js", f"Accept-Encoding: {accept}",
                                               f"If-None-Match: {etag}")  # fmt: skip
                    assert status == 304
            status, headers, got = await fetch(c, "/app.js", "Accept-Encoding: br",
                                               "Range: bytes=0-3")  # fmt: skip
            assert (status, got, headers.get("content-encoding")) == (206, SMALL[:4], None)
            status, headers, _ = await fetch(c, "/medium.bin", "Accept-Encoding: gzip")
            assert "content-encoding" not in headers, "a sibling out of the folder is not used"
            for path, body in (("/stale.js", b"edited"), ("/x%2541.js", b"x%41")):
                _, headers, got = await fetch(c, path, "Accept-Encoding: gzip, br")
                assert (got, headers.get("content-encoding")) == (body, None), path
            # A live page is sent with its script, not compressed.
            _, headers, got = await fetch(c, "/", "Accept-Encoding: gzip")
            assert got == b"<h1>home</h1>" + SCRIPT_TAG and "content-encoding" not in headers
            # Asked for by name, a sibling is a compressed file.
            _, headers, got = await fetch(c, "/app.js.gz")
            assert headers["content-type"] == "application/gzip" and got == app_gz
            assert "content-encoding" not in headers

    asyncio.run(main())


def test_connection_close_is_answered_then_closed_on_the_fast_lane(site: Path, fast: str) -> None:
    async def main() -> None:
        async with proxy_for(site) as proxy, client(proxy) as c:
            status, headers, body = await fetch(c, "/medium.bin", "Connection: close")
            assert (status, body, headers["connection"]) == (200, MEDIUM, "close")
            assert await c.reader.read() == b"", "the proxy closed the connection"
            assert handovers(proxy) == 0

    asyncio.run(main())


def test_a_large_file_waits_for_a_client_that_does_not_read(site: Path, fast: str) -> None:
    """Back-pressure: the proxy writes a piece at a time while the client takes them, and holds
    no more than a piece or two in its buffers for a client that stopped reading."""
    big = site / "public" / "big.bin"
    big.write_bytes(b"\0" * (24 * 1024 * 1024))

    async def main() -> None:
        async with proxy_for(site) as proxy, client(proxy) as c:
            c.writer.transport.pause_reading()
            await c.send(get("/big.bin"))
            lane = proxy.fast_lane
            assert lane is not None

            def paused() -> bool:
                return any(path.is_writing_paused for path in lane.connections)

            await async_wait_until(paused, message="the proxy to pause writing to the client")
            (path,) = lane.connections
            assert path.transport.get_write_buffer_size() <= 3 * PIECE_BYTES  # and TLS framing
            c.writer.transport.resume_reading()
            head = await c.reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: %d" % (24 * 1024 * 1024) in head
            received = 0
            while received < 24 * 1024 * 1024:
                chunk = await c.reader.read(1 << 20)
                assert chunk, "the whole file arrives"
                received += len(chunk)
            assert (await fetch(c, "/app.js"))[2] == SMALL, "the connection goes on"

    asyncio.run(main())


def test_an_answer_is_given_again_only_while_every_file_it_rested_on_is_the_same(
    site: Path, fast: str
) -> None:
    """The fast lane remembers answers by request head (devstack/proxy/static/cache.py): the
    same request to a quiet file is answered again from memory, and any change to the file, a
    sibling appearing or going, or a symlink retargeted, is decided afresh."""
    public = site / "public"
    an_hour_ago = os.stat(public / "app.js").st_mtime - 3600

    def quiet(path: Path, age: float = 0.0) -> None:
        os.utime(path, (an_hour_ago + age, an_hour_ago + age))

    quiet(public / "app.js")
    link = public / "current.js"
    link.symlink_to(public / "app.js")
    (site / "secret.js").write_text("top secret")

    async def main() -> None:
        files = FILES
        async with proxy_for(site) as proxy, client(proxy) as c:
            accept = "Accept-Encoding: gzip, br"
            assert (await fetch(c, "/app.js", accept))[2] == SMALL
            before = files.recalls
            assert (await fetch(c, "/app.js", accept))[2] == SMALL
            assert files.recalls == before + 1, "the same request, answered from memory"
            # A sibling appears: the request is decided again.
            sibling = gzip.compress(SMALL, mtime=0)  # gzip's header holds the time: one copy
            (public / "app.js.gz").write_bytes(sibling)
            _, headers, body = await fetch(c, "/app.js", accept)
            assert headers.get("content-encoding") == "gzip" and body == sibling
            (public / "app.js.gz").unlink()
            _, headers, body = await fetch(c, "/app.js", accept)
            assert "content-encoding" not in headers and body == SMALL
            # The file changes without changing size, an hour later than before.
            (public / "app.js").write_bytes(SMALL.upper())
            quiet(public / "app.js", 1.0)
            assert (await fetch(c, "/app.js", accept))[2] == SMALL.upper()
            # A symlink retargeted, inside the folder then out of it.
            assert (await fetch(c, "/current.js"))[2] == SMALL.upper()
            assert (await fetch(c, "/current.js"))[2] == SMALL.upper()
            link.unlink()
            link.symlink_to(public / "index.html")
            quiet(public / "index.html")
            assert (await fetch(c, "/current.js"))[2] == b"<h1>home</h1>"
            link.unlink()
            link.symlink_to(site / "secret.js")
            status, _, body = await fetch(c, "/current.js")
            assert status == 404 and b"secret" not in body
            (public / "app.js").unlink()
            assert (await fetch(c, "/app.js", accept))[0] == 404

    asyncio.run(main())


def test_answers_are_remembered_per_proxy(tmp_path: Path, fast: str) -> None:
    """The same request bytes to two proxies with other routes are two requests."""
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write = tmp_path / name / "same.txt"
        write.write_text(name)
        os.utime(write, (1e9, 1e9))

    async def main() -> None:
        specs = [
            make_spec(tmp_path, {"api": 1}, (RouteSpec(path="/", static=Path(name)),))
            for name in ("one", "two")
        ]
        async with (
            running_proxy(specs[0], StandInDirectory({"api": 1})) as one,
            running_proxy(specs[1], StandInDirectory({"api": 1})) as two,
        ):
            for _ in range(2):
                for proxy, expected in ((one, b"one"), (two, b"two")):
                    async with client(proxy) as c:
                        assert (await fetch(c, "/same.txt"))[2] == expected

    asyncio.run(main())
