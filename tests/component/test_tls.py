"""A real TLS server on loopback with the ServerCertificate context, checked by real clients:
curl --cacert (never -k), openssl s_client with hostname verification, and Python ssl."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509

from devstack.tls import ca as tls
from devstack.tls import quick

BODY = b"hello over tls"
CLIENT_TIMEOUT_SECONDS = 10.0

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is not installed"
)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one HTTP request with BODY; clients that only handshake just go away."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + BODY)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(context: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A TLS server on ``host``, port 0; yields the port it got."""
    server = await asyncio.start_server(_answer, host, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def run(*command: str) -> tuple[int, str]:
    """Run a client to completion (killing it if it hangs); exit code and stdout+stderr."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def fetch(port: int, server_hostname: str, context: ssl.SSLContext) -> tuple[bytes, bytes]:
    """GET / over TLS from 127.0.0.1:port, naming ``server_hostname``; the peer's DER and body."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname),
        CLIENT_TIMEOUT_SECONDS,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), CLIENT_TIMEOUT_SECONDS)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return der, response.rpartition(b"\r\n\r\n")[2]


def curl(ca: tls.CertificateAuthority, url: str, resolve: Sequence[str] = ()) -> list[str]:
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--cacert",
        str(ca.cert_path),
    ]
    for entry in resolve:
        command += ["--resolve", entry]
    return [*command, "--write-out", "\n%{ssl_verify_result}", url]


@needs_curl
def test_curl_verifies_every_name_against_the_ca() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, ["api.localhost"])

    async def scenario() -> None:
        async with serving(server.context) as port:
            urls = {
                "localhost": curl(
                    ca, f"https://localhost:{port}/", [f"localhost:{port}:127.0.0.1"]
                ),
                "127.0.0.1": curl(ca, f"https://127.0.0.1:{port}/"),
                "api.localhost": curl(
                    ca, f"https://api.localhost:{port}/", [f"api.localhost:{port}:127.0.0.1"]
                ),
            }
            for name, command in urls.items():
                code, output = await run(*command)
                assert (code, output) == (0, f"{BODY.decode()}\n0"), name

            # Control: a name the certificate does not carry, and no --cacert, both fail.
            code, output = await run(
                *curl(ca, f"https://web.localhost:{port}/", [f"web.localhost:{port}:127.0.0.1"])
            )
            assert code == 60 and "web.localhost" in output
            code, _ = await run(
                "curl", "--silent", "--max-time", "10", f"https://127.0.0.1:{port}/"
            )
            assert code == 60

    asyncio.run(scenario())


@needs_curl
@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_curl_verifies_the_ipv6_loopback() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, [])

    async def scenario() -> None:
        async with serving(server.context, host="::1") as port:
            code, output = await run(*curl(ca, f"https://[::1]:{port}/"))
            assert (code, output) == (0, f"{BODY.decode()}\n0")

    asyncio.run(scenario())


@needs_openssl
def test_openssl_s_client_verifies_chain_and_hostname() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, ["api.localhost"])

    def s_client(port: int, name: str, *extra: str) -> list[str]:
        return [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
            "-verify_return_error", "-verify_hostname", name, "-CAfile", str(ca.cert_path),
            "-alpn", "h2,http/1.1", *extra,
        ]  # fmt: skip

    async def scenario() -> None:
        async with serving(server.context) as port:
            for name in ("localhost", "api.localhost"):
                code, output = await run(*s_client(port, name))
                assert code == 0, output
                assert "Verify return code: 0 (ok)" in output
                assert f"Verified peername: {name}" in output
                assert "ALPN protocol: http/1.1" in output
                assert "New, TLSv1.3," in output

            code, output = await run(*s_client(port, "localhost", "-tls1_2"))
            assert code == 0 and "New, TLSv1.2," in output, output

            code, output = await run(*s_client(port, "web.localhost"))
            assert code != 0 and "hostname mismatch" in output

    asyncio.run(scenario())


@needs_openssl
def test_tls_1_1_is_refused() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, [])

    async def scenario() -> None:
        async with serving(server.context) as port:
            # SECLEVEL=0 lets this client offer TLS 1.1 at all; the refusal must be the server's.
            old = ["-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", str(ca.cert_path)]
            connect = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *old]
            code, output = await run(*connect, "-tls1_1")
            assert code != 0 and "Cipher is (NONE)" in output, output
            code, output = await run(*connect, "-tls1_2")
            assert code == 0 and "New, TLSv1.2," in output, output

    asyncio.run(scenario())


def test_python_client_context_verifies_every_name_over_loopback() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, ["api.localhost", "shop.test"])
    client = tls.client_context()

    async def scenario() -> None:
        async with serving(server.context) as port:
            for name in ("localhost", "127.0.0.1", "::1", "api.localhost", "shop.test"):
                der, body = await fetch(port, name, client)
                assert body == BODY, name
                assert x509.load_der_x509_certificate(der) == server.certificate
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                await fetch(port, "web.localhost", client)
            with pytest.raises(ssl.SSLCertVerificationError):
                await fetch(port, "localhost", ssl.create_default_context())

    asyncio.run(scenario())


def test_a_renewed_certificate_is_served_without_restarting(devstack_home: Path) -> None:
    """Issue a leaf 70 days in the past (20 days left: due), renew it now, and see the running
    server hand the new one to the next handshake."""
    now = dt.datetime.now(dt.UTC)
    clock_at = [now - dt.timedelta(days=70)]
    ca = tls.load_or_create_ca(clock=lambda: now - dt.timedelta(days=71))
    server = tls.ServerCertificate(ca, ["api.localhost"], clock=lambda: clock_at[0])
    old = server.certificate
    client = tls.client_context()

    async def scenario() -> None:
        async with serving(server.context) as port:
            der, body = await fetch(port, "api.localhost", client)
            assert x509.load_der_x509_certificate(der) == old and body == BODY

            clock_at[0] = now
            assert server.renew_if_needed()

            der, body = await fetch(port, "api.localhost", client)
            served = x509.load_der_x509_certificate(der)
            assert served == server.certificate and served.serial_number != old.serial_number
            assert served.not_valid_after_utc > old.not_valid_after_utc
            assert body == BODY

    asyncio.run(scenario())


@needs_curl
def test_the_quick_start_serves_then_verify_swaps_in_a_leaf_of_a_new_ca() -> None:
    """Serve the cached leaf from the quick start (curl and Python verify it against the CA);
    replace the CA, run the full check in a worker thread as the proxy does, and see the next
    handshake get a leaf of the new CA from the same context, the server never restarted."""
    ca = tls.load_or_create_ca()
    tls.ServerCertificate(ca, ["api.localhost"])
    cached = quick.cached_server_context(["api.localhost"])
    assert cached is not None

    async def scenario() -> None:
        async with serving(cached.context) as port:
            code, output = await run(*curl(ca, f"https://127.0.0.1:{port}/"))
            assert (code, output) == (0, f"{BODY.decode()}\n0")
            der, body = await fetch(port, "api.localhost", tls.client_context())
            assert hashlib.sha256(der).hexdigest() == cached.fingerprint and body == BODY

            ca.cert_path.unlink()
            ca.key_path.unlink()
            loop = asyncio.get_running_loop()
            # The reload is queued on the loop before the thread's result: it has run by now.
            verified = await asyncio.to_thread(cached.verify, reload_with=loop.call_soon_threadsafe)
            new_ca = tls.load_or_create_ca()
            assert new_ca.fingerprint != ca.fingerprint

            der, body = await fetch(port, "api.localhost", tls.client_context())
            served = x509.load_der_x509_certificate(der)
            assert served == verified.certificate and body == BODY
            served.verify_directly_issued_by(new_ca.certificate)

    asyncio.run(scenario())
