"""`devstack trust` on an account where Chromium never ran, then real headless Chromium.

The HOME is a fresh temporary folder (no ``~/.pki``), and ``$DEVSTACK_TRUST_SYSTEM_DIR`` points
the system store at a temporary folder, so the machine's trust store is never touched. A TLS
server on a loopback port serves a page with a leaf from devstack's CA. Chromium, run under that
HOME, gets a certificate error before ``devstack trust``, loads the page after it, and gets the
error again after ``devstack trust --uninstall``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.tls import trust
from devstack.tls.ca import CertificateAuthority, ServerCertificate, load_or_create_ca
from tests.e2e import browser
from tests.e2e.conftest import DevstackRunner

pytestmark = pytest.mark.skipif(
    not browser.is_available(),
    reason="needs Debian's chromium and certutil from libnss3-tools (.ci/run installs them)",
)

PAGE_TEXT = "served with a devstack certificate"
UNTRUSTED = "net::ERR_CERT_AUTHORITY_INVALID"


class Site:
    """An HTTPS server on a free loopback port that answers every request with one page."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self.requests = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0, ssl=self._context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"https://localhost:{port}/"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = f"<!doctype html><title>devstack</title><p>{PAGE_TEXT}</p>".encode()
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # a browser that rejects the certificate hangs up during the handshake
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def visit(site: Site, *, home: Path, profile: Path) -> str | None:
    """Load the site in Chromium run under ``home``: None when the page showed, else the error."""
    async with (
        site.serving() as url,
        browser.open_page("about:blank", home=home, profile=profile) as page,
    ):
        error = await page.navigate(url)
        if error is not None:
            return error
        await page.wait_for(
            f"document.body !== null && document.body.innerText.includes({PAGE_TEXT!r})",
            message="the page's text, served over TLS by the test's server",
        )
        assert await page.evaluate("location.href") == url
        return None


def real_anchors() -> set[Path]:
    return {
        path
        for folder, *_ in trust.LINUX_ANCHOR_FOLDERS
        if folder.is_dir()
        for path in folder.glob("devstack-*.crt")
    }


@pytest.fixture
def ca() -> Iterator[CertificateAuthority]:
    """devstack's CA in this test's DEVSTACK_HOME, the one `devstack trust` will load too."""
    before = real_anchors()
    yield load_or_create_ca()
    assert real_anchors() == before, "a test changed the machine's own trust store"


def test_trust_on_a_fresh_account_makes_chromium_accept_the_certificate(
    devstack: DevstackRunner, ca: CertificateAuthority, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    devstack.env.update(HOME=str(home), DEVSTACK_TRUST_SYSTEM_DIR=str(anchors))
    site = Site(ServerCertificate(ca, ["localhost"]).context)
    nssdb = home / ".pki" / "nssdb"

    before = asyncio.run(visit(site, home=tmp_path / "never-trusted", profile=tmp_path / "p0"))
    assert before == UNTRUSTED
    assert not (home / ".pki").exists()

    trusted = devstack.run("trust")

    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert f"installed        Chromium NSS database {nssdb}: made the database" in trusted.stdout
    assert (nssdb / "cert9.db").is_file()
    assert oct(nssdb.stat().st_mode & 0o777) == oct(0o700)
    assert [p.name for p in anchors.iterdir()] == [f"devstack-{ca.short_fingerprint}.crt"]

    assert asyncio.run(visit(site, home=home, profile=tmp_path / "p1")) is None
    assert site.requests >= 1

    removed = devstack.run("trust", "--uninstall")

    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"removed          Chromium NSS database {nssdb}" in removed.stdout
    assert list(anchors.iterdir()) == []
    assert asyncio.run(visit(site, home=home, profile=tmp_path / "p2")) == UNTRUSTED
