"""Static files under attack, on both lanes: every traversal form, symlinks out of the folder,
a precompressed sibling that is a symlink out of it, hidden files, folders without an index,
methods other than GET and HEAD. Whatever the request, nothing outside the folder and nothing
hidden is ever served: the secret planted beside the folder never appears in an answer.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

import pytest

from tests.component.test_front_door import FrontDoor, connect, front_door
from tests.reliability.raw import get

SECRET = b"SECRET-4242"


def plant(tmp_path: Path) -> None:
    """Beside ``public/`` (the static root of ``front_door``): a secret, and ways to reach it."""
    public = tmp_path / "public"
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret.txt.gz").write_bytes(gzip.compress(SECRET))
    os.symlink(tmp_path / "secret.txt", public / "link.txt")
    os.symlink(tmp_path, public / "up")
    (public / "app.js").write_text("console.log('app')")
    os.symlink(tmp_path / "secret.txt.gz", public / "app.js.gz")
    (public / "style.css").write_text("body{}")
    os.symlink(tmp_path / "secret.txt", public / "style.css.br")
    (public / ".env").write_bytes(SECRET)
    (public / ".git").mkdir()
    (public / ".git" / "config").write_bytes(SECRET)
    (public / "docs" / ".hidden").write_bytes(SECRET)
    os.symlink(public / ".env", public / "env.txt")  # a visible name for a hidden file
    (public / "empty").mkdir()
    (public / "empty" / "data.json").write_text("{}")


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/docs/../../secret.txt",
    "/docs/%2e%2e/%2e%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/docs/..%2f..%2fsecret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/secret.txt%00.html",
    "//secret.txt",
    "/./../secret.txt",
    "/link.txt",
    "/up/secret.txt",
    "/.env",
    "/.git/config",
    "/%2eenv",
    "/%2egit/config",
    "/docs/.hidden",
    "/env.txt",
    "/empty/",
]


async def answer(door: FrontDoor, request: bytes) -> tuple[int, bytes]:
    async with connect(door) as client:
        await client.send(request.replace(b"{host}", door.host.encode()))
        got = await client.answer()
        return got.status, got.body


def test_nothing_outside_the_folder_or_hidden_is_served(tmp_path: Path, lane: str) -> None:
    (tmp_path / "public").mkdir(parents=True, exist_ok=True)

    async def main() -> dict[str, int]:
        leaked = {}
        async with front_door(tmp_path) as door:
            plant(tmp_path)
            for path in TRAVERSALS:
                status, body = await answer(door, get(target=path.encode()))
                if SECRET in body or status < 400:
                    leaked[path] = status
            assert door.forwarded == b""
        return leaked

    assert asyncio.run(main()) == {}


@pytest.mark.parametrize(("path", "encoding"), [("/app.js", "gzip"), ("/style.css", "br")])
def test_a_precompressed_sibling_that_leaves_the_folder_is_never_used(
    tmp_path: Path, lane: str, path: str, encoding: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            plant(tmp_path)
            request = get(b"Accept-Encoding: gzip, br", target=path.encode())
            async with connect(door) as client:
                await client.send(request.replace(b"{host}", door.host.encode()))
                got = await client.answer()
            assert got.status == 200
            assert got.headers.get("content-encoding") is None, "the symlinked sibling was sent"
            assert SECRET not in got.body and SECRET not in gzip_safe(got.body)

    asyncio.run(main())


def gzip_safe(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except OSError:
        return b""


def test_a_folder_without_an_index_is_not_listed(tmp_path: Path, lane: str) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            plant(tmp_path)
            status, body = await answer(door, get(target=b"/empty/"))
            assert status == 404
            assert b"data.json" not in body

    asyncio.run(main())


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE"])
def test_files_accept_only_get_and_head(tmp_path: Path, lane: str, method: bytes) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door:
            request = get(b"Content-Length: 0", line=method + b" /index.html HTTP/1.1")
            async with connect(door) as client:
                await client.send(request.replace(b"{host}", door.host.encode()))
                got = await client.answer()
            assert got.status == 405, got.status
            assert got.headers["allow"] == "GET, HEAD"
            assert b"home" not in got.body
            assert door.forwarded == b""

    asyncio.run(main())
