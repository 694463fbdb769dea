"""Static routes through the proxy: files, caching headers, ranges, and nothing outside, the same
on both lanes (the fast lane answers GET and HEAD for files it finds; the full proxy the rest)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec
from devstack.proxy.live.script import SCRIPT_HTML
from devstack.tls.ca import ca_cert_path
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    use_lane,
    verified_client,
)


@pytest.fixture(autouse=True, params=LANES)
def lane(request: pytest.FixtureRequest) -> Iterator[str]:
    with use_lane(request.param):
        yield request.param


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A stack folder: public/ (served) beside secrets that must never be served."""
    public = tmp_path / "public"
    (public / "docs").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "app.js").write_text("console.log('hi')\n" * 100)
    (public / "style.css").write_text("body{}")
    (public / "docs" / "index.html").write_text("<h1>docs</h1>")
    (public / "docs" / "guide.txt").write_text("0123456789")
    (public / ".env").write_text("SECRET=1")
    (public / ".git").mkdir()
    (public / ".git" / "config").write_text("[core]")
    (public / "nodir").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    (public / "escape").symlink_to(tmp_path / "secret.txt")
    (public / "escape-dir").symlink_to(tmp_path)
    (public / "inside").symlink_to(public / "style.css")
    return tmp_path


def serve(site: Path, scenario: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        routes = (
            RouteSpec(path="/", static=Path("public")),
            RouteSpec(path="/assets", static=site / "public"),
        )
        spec = make_spec(site, {"api": 1}, routes)
        async with running_proxy(spec, StandInDirectory({"api": 1})) as proxy:
            await scenario(proxy.url)

    asyncio.run(main())


def test_files_folders_and_content_types(site: Path) -> None:
    async def scenario(url: str) -> None:
        async with verified_client() as client:
            for path, body, kind in [
                ("/", "<h1>home</h1>", "text/html"),
                ("/index.html", "<h1>home</h1>", "text/html"),
                ("/style.css", "body{}", "text/css"),
                ("/docs/", "<h1>docs</h1>", "text/html"),
                ("/assets/style.css", "body{}", "text/css"),
                ("/assets/docs/guide.txt", "0123456789", "text/plain"),
                ("/inside", "body{}", None),
            ]:
                async with client.get(url + path) as resp:
                    assert resp.status == 200, path
                    if kind == "text/html":  # pages get the live-reload script (test_live_reload)
                        body += SCRIPT_HTML
                    assert await resp.text() == body
                    if kind:
                        assert resp.content_type == kind, path
            async with client.get(f"{url}/docs?x=1", allow_redirects=False) as resp:
                assert resp.status == 308
                assert resp.headers["Location"] == "/docs/?x=1"
            async with client.get(f"{url}/nodir/") as resp:
                assert resp.status == 404  # a folder without index.html: no listing
            async with client.post(f"{url}/style.css") as resp:
                assert resp.status == 405

    serve(site, scenario)


def test_conditional_requests_ranges_and_head(site: Path) -> None:
    async def scenario(url: str) -> None:
        async with verified_client() as client:
            async with client.get(f"{url}/docs/guide.txt") as resp:
                etag = resp.headers["ETag"]
                modified = resp.headers["Last-Modified"]
            async with client.get(f"{url}/docs/guide.txt", headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304
            headers = {"If-Modified-Since": modified}
            async with client.get(f"{url}/docs/guide.txt", headers=headers) as resp:
                assert resp.status == 304
            async with client.get(f"{url}/docs/guide.txt", headers={"Range": "bytes=2-5"}) as resp:
                assert resp.status == 206
                assert await resp.read() == b"2345"
                assert resp.headers["Content-Range"] == "bytes 2-5/10"
            async with client.head(f"{url}/app.js") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(len("console.log('hi')\n") * 100)
                assert await resp.read() == b""

    serve(site, scenario)


def test_files_are_revalidated_every_time_so_an_edit_is_never_hidden_by_a_cache(
    site: Path,
) -> None:
    """Without Cache-Control a browser may reuse a file by heuristic freshness (RFC 9111
    section 4.2.2, from Last-Modified): a page reloaded after an edit would get the old
    stylesheet or script. ``no-cache``: always asked again, a 304 while it is unchanged."""

    async def scenario(url: str) -> None:
        async with verified_client() as client:
            for path, headers in [
                ("/style.css", {}),
                ("/", {}),
                ("/docs/guide.txt", {"Range": "bytes=2-5"}),
            ]:
                async with client.get(url + path, headers=headers) as resp:
                    assert resp.status in (200, 206), path
                    assert resp.headers.get("Cache-Control") == "no-cache", path
                    etag = resp.headers["ETag"]
                async with client.get(url + path, headers={"If-None-Match": etag}) as resp:
                    assert resp.status == 304, path
                    assert resp.headers.get("Cache-Control") == "no-cache", path

    serve(site, scenario)


TRAVERSALS = [
    # (path as sent, status): 400 for a path climbing above / or holding bytes a path may not
    # (devstack/proxy/target.py), 404 for anything the static rules refuse or do not find.
    ("/.env", 404),
    ("/.git/config", 404),
    ("/docs/../.env", 404),
    ("/%2e%2e/secret.txt", 400),
    ("/..%2fsecret.txt", 404),
    ("/docs/..%2f..%2fsecret.txt", 404),
    ("/%2e%2e%2fsecret.txt", 404),
    ("/%252e%252e/secret.txt", 404),
    ("/assets/../secret.txt", 404),
    ("/assets/%2e%2e/secret.txt", 404),
    ("/assets/../../secret.txt", 400),
    ("/escape", 404),
    ("/escape-dir/secret.txt", 404),
    ("/docs/%00", 404),
    ("/docs%2fguide.txt", 404),
    ("/docs\\..\\..\\secret.txt", 400),
]


def test_nothing_outside_the_root_and_no_dotfiles(site: Path) -> None:
    async def scenario(url: str) -> None:
        port = url.rsplit(":", 1)[1]
        for path, expected in TRAVERSALS:
            # curl with --path-as-is sends the path exactly as written (no dot-segment removal).
            result = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "--path-as-is", "--cacert", str(ca_cert_path()),
                 "-w", "\n%{http_code}", f"https://localhost:{port}{path}"],
                capture_output=True, text=True, timeout=10, check=True,
            )  # fmt: skip
            body, _, status = result.stdout.rpartition("\n")
            assert status == str(expected), f"{path} answered {status}"
            assert "top secret" not in body and "SECRET" not in body and "[core]" not in body

    serve(site, scenario)
