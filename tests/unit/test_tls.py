"""The local CA and leaf certificates, parsed back with cryptography; handshakes in memory."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.errors import TLSError
from devstack.manifest.spec import ProxySpec, ServiceSpec, StackSpec
from devstack.proxy.routing import certificate_hosts
from devstack.tls import ca as tls
from devstack.tls import home
from tests.conditions import async_wait_until

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def handshake(
    server: ssl.SSLContext,
    *,
    hostname: str = "localhost",
    client: ssl.SSLContext | None = None,
) -> ssl.SSLObject:
    """Run a TLS handshake between ``server`` and a client entirely in memory; the client side."""
    if client is None:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE  # fake-clock certificates may lie in the future
        client.set_alpn_protocols(["h2", "http/1.1"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {client_side: False, server_side: False}
    for _ in range(10):
        for side in (client_side, server_side):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_side
    raise AssertionError("the in-memory handshake did not finish")


def served_certificate(server: ssl.SSLContext) -> x509.Certificate:
    der = handshake(server).getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def san(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName), [
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    ]


# --- where the home is --------------------------------------------------------------------------


def test_devstack_home_honours_the_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path / "here"))
    assert home.devstack_home() == tmp_path / "here"
    assert not (tmp_path / "here").exists()


def test_devstack_home_follows_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DEVSTACK_HOME")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert home.devstack_home() == tmp_path / "xdg" / "devstack"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert home.devstack_home() == tmp_path / ".local" / "share" / "devstack"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert home.devstack_home() == tmp_path / ".local" / "share" / "devstack"


def test_devstack_home_on_macos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEVSTACK_HOME")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home.devstack_home() == tmp_path / "Library" / "Application Support" / "devstack"


# --- the CA -------------------------------------------------------------------------------------


def test_ca_is_an_ecdsa_p256_ca_for_ten_years(devstack_home: Path) -> None:
    clock = FakeClock()
    ca = tls.load_or_create_ca(clock=clock)
    cert = ca.certificate

    assert ca.cert_path == devstack_home / "tls" / "ca.crt"
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(common_name, str)
    assert common_name.startswith("devstack local CA (") and "@" in common_name
    assert ca.name == common_name

    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3650) <= validity <= dt.timedelta(days=3651)
    assert cert.not_valid_before_utc <= START < cert.not_valid_after_utc


def test_ca_key_is_private_in_a_private_folder(devstack_home: Path) -> None:
    ca = tls.load_or_create_ca()
    assert mode(ca.key_path.parent) == 0o700
    assert mode(ca.key_path) == 0o600
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    assert key.public_key() == ca.certificate.public_key()


def test_ca_is_reused_across_loads(devstack_home: Path) -> None:
    first = tls.load_or_create_ca()
    cert_bytes, key_bytes = first.cert_path.read_bytes(), first.key_path.read_bytes()
    again = tls.load_or_create_ca(devstack_home)
    assert again.fingerprint == first.fingerprint
    assert first.cert_path.read_bytes() == cert_bytes
    assert first.key_path.read_bytes() == key_bytes
    assert tls.ca_cert_path() == first.cert_path


def _remove_key(ca: tls.CertificateAuthority) -> None:
    ca.key_path.unlink()


def _corrupt_key(ca: tls.CertificateAuthority) -> None:
    ca.key_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")


def _foreign_key(ca: tls.CertificateAuthority) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    ca.key_path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _corrupt_cert(ca: tls.CertificateAuthority) -> None:
    ca.cert_path.write_text("garbage")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_remove_key, "is missing"),
        (_corrupt_key, "cannot read the local CA key"),
        (_foreign_key, "does not belong to"),
        (_corrupt_cert, "cannot read the local CA certificate"),
    ],
)
def test_a_damaged_ca_is_an_error_never_a_new_ca(damage: object, said: str) -> None:
    ca = tls.load_or_create_ca()
    assert callable(damage)
    damage(ca)
    cert_before = ca.cert_path.read_bytes()

    with pytest.raises(TLSError) as caught:
        tls.load_or_create_ca()

    message = str(caught.value)
    assert said in message
    assert str(ca.cert_path) in message and "restore" in message and "trust the new CA" in message
    assert ca.cert_path.read_bytes() == cert_before
    assert caught.value.exit_code == 6


def test_a_key_without_certificate_is_set_aside(devstack_home: Path) -> None:
    folder = devstack_home / "tls"
    folder.mkdir(mode=0o700)
    (folder / "ca.key").write_bytes(b"left by an interrupted creation")
    ca = tls.load_or_create_ca()
    aside = list(folder.glob("ca.key.orphan-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"left by an interrupted creation"
    assert ca.key_path.read_bytes() != b"left by an interrupted creation"


def test_loose_modes_are_tightened(devstack_home: Path) -> None:
    ca = tls.load_or_create_ca()
    ca.cert_path.parent.chmod(0o755)
    ca.key_path.chmod(0o644)
    tls.load_or_create_ca()
    assert mode(ca.cert_path.parent) == 0o700
    assert mode(ca.key_path) == 0o600


def test_an_expired_ca_is_an_error() -> None:
    tls.load_or_create_ca(clock=FakeClock())
    with pytest.raises(TLSError, match="expired"):
        tls.load_or_create_ca(clock=FakeClock(START + dt.timedelta(days=3700)))


# --- hosts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("App.Test.", "app.test"),
        ("[::1]", "::1"),
        ("0:0::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("*.app.test", "*.app.test"),
        ("api.localhost", "api.localhost"),
    ],
)
def test_hosts_are_normalized(given: str, expected: str) -> None:
    assert tls.normalize_host(given) == expected


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("*.localhost", "wildcards under localhost"),
        ("*.app.localhost", "wildcards under localhost"),
        ("*.test", "wildcards"),
        ("has space.test", "not a valid DNS name"),
        ("app.test:8443", "not a valid DNS name"),
        ("-bad.test", "not a valid DNS name"),
        ("", "not a valid DNS name"),
    ],
)
def test_bad_hosts_are_refused_by_name(given: str, said: str) -> None:
    with pytest.raises(TLSError, match=said) as caught:
        tls.normalize_host(given)
    assert repr(given) in str(caught.value)


def test_the_routing_host_list_is_accepted_as_is(tmp_path: Path) -> None:
    spec = StackSpec(
        manifest_path=tmp_path / "devstack.yaml",
        services={
            "web": ServiceSpec(name="web", command="x", cwd=tmp_path),
            "api": ServiceSpec(name="api", command="x", cwd=tmp_path),
        },
        proxy=ProxySpec(hosts=("Shop.Test", "[::1]")),
    )
    server = tls.ServerCertificate(tls.load_or_create_ca(), certificate_hosts(spec))
    assert server.hosts == (
        "localhost",
        "127.0.0.1",
        "::1",
        "api.localhost",
        "shop.test",
        "web.localhost",
    )


# --- the leaf -----------------------------------------------------------------------------------


def test_leaf_names_every_host_explicitly() -> None:
    ca = tls.load_or_create_ca()
    server = tls.ServerCertificate(ca, ["web.localhost", "api.localhost", "shop.test"])
    dns, ips = san(server.certificate)
    assert dns == ["localhost", "api.localhost", "shop.test", "web.localhost"]
    assert ips == ["127.0.0.1", "::1"]
    assert all("*" not in name for name in dns)
    assert [ipaddress.ip_address(ip).is_loopback for ip in ips] == [True, True]


def test_leaf_is_a_p256_server_certificate_from_the_ca() -> None:
    clock = FakeClock()
    ca = tls.load_or_create_ca(clock=clock)
    cert = tls.ServerCertificate(ca, [], clock=clock).certificate

    cert.verify_directly_issued_by(ca.certificate)
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity <= dt.timedelta(days=397)
    assert dt.timedelta(days=90) <= validity <= dt.timedelta(days=91)
    assert cert.not_valid_before_utc <= START < cert.not_valid_after_utc


def test_leaf_is_cached_privately_and_reused_without_making_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = tls.load_or_create_ca()
    first = tls.ServerCertificate(ca, ["api.localhost"])
    assert mode(first.path) == 0o600 and mode(first.path.parent) == 0o700

    def no_keys(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm start made a key")

    monkeypatch.setattr(ec, "generate_private_key", no_keys)
    again = tls.ServerCertificate(tls.load_or_create_ca(), ["API.localhost", "api.localhost"])
    assert again.certificate.serial_number == first.certificate.serial_number
    assert served_certificate(again.context).serial_number == first.certificate.serial_number


def test_leaf_cache_is_keyed_by_the_host_set() -> None:
    ca = tls.load_or_create_ca()
    api = tls.ServerCertificate(ca, ["api.localhost"])
    web = tls.ServerCertificate(ca, ["web.localhost"])
    assert api.path != web.path
    assert san(web.certificate)[0] == ["localhost", "web.localhost"]


def test_an_unusable_cached_leaf_is_reissued() -> None:
    ca = tls.load_or_create_ca()
    first = tls.ServerCertificate(ca, ["api.localhost"])
    first.path.write_text("garbage")
    again = tls.ServerCertificate(ca, ["api.localhost"])
    assert again.certificate.serial_number != first.certificate.serial_number
    again.certificate.verify_directly_issued_by(ca.certificate)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_context_is_tls12_or_newer_with_http11_alpn() -> None:
    server = tls.ServerCertificate(tls.load_or_create_ca(), [])
    assert server.context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert handshake(server.context).selected_alpn_protocol() == "http/1.1"

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_PROTOCOL|unsupported protocol"):
        handshake(server.context, client=old)


# --- renewal ------------------------------------------------------------------------------------


def test_renewal_is_due_with_a_third_of_the_validity_left_and_reloads_the_same_context() -> None:
    clock = FakeClock()
    ca = tls.load_or_create_ca(clock=clock)
    server = tls.ServerCertificate(ca, ["api.localhost"], clock=clock)
    context, first = server.context, server.certificate

    clock.advance(days=59)
    assert not server.renew_if_needed()
    assert served_certificate(context).serial_number == first.serial_number

    clock.advance(days=2)
    assert server.renew_if_needed()
    assert server.context is context
    assert server.certificate.serial_number != first.serial_number
    assert served_certificate(context).serial_number == server.certificate.serial_number
    assert server.certificate.not_valid_before_utc <= clock.now
    assert san(server.certificate) == san(first)
    assert not server.renew_if_needed()


def test_a_renewed_leaf_replaces_the_cached_one() -> None:
    clock = FakeClock()
    ca = tls.load_or_create_ca(clock=clock)
    server = tls.ServerCertificate(ca, [], clock=clock)
    clock.advance(days=70)
    assert server.renew_if_needed()
    again = tls.ServerCertificate(ca, [], clock=clock)
    assert again.certificate.serial_number == server.certificate.serial_number


def test_a_cached_leaf_due_for_renewal_is_not_reused() -> None:
    clock = FakeClock()
    ca = tls.load_or_create_ca(clock=clock)
    first = tls.ServerCertificate(ca, [], clock=clock)
    clock.advance(days=65)
    again = tls.ServerCertificate(ca, [], clock=clock)
    assert again.certificate.serial_number != first.certificate.serial_number


def test_keep_renewed_renews_in_the_background() -> None:
    clock = FakeClock()
    server = tls.ServerCertificate(tls.load_or_create_ca(clock=clock), [], clock=clock)
    first = server.certificate.serial_number

    async def scenario() -> None:
        task = asyncio.create_task(server.keep_renewed(check_every_seconds=0.01))
        try:
            clock.advance(days=80)
            await async_wait_until(
                lambda: served_certificate(server.context).serial_number != first,
                timeout=5,
                message="keep_renewed to load a renewed certificate",
            )
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


# --- the client side ----------------------------------------------------------------------------


def test_client_context_trusts_only_devstacks_ca_and_checks_names() -> None:
    ca = tls.load_or_create_ca()
    client = tls.client_context()
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
    assert client.get_ca_certs(binary_form=True) == [
        ca.certificate.public_bytes(serialization.Encoding.DER)
    ]
    server = tls.ServerCertificate(ca, ["api.localhost"])
    for name in ("localhost", "127.0.0.1", "::1", "api.localhost"):
        handshake(server.context, hostname=name, client=client)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server.context, hostname="web.localhost", client=client)


def test_keep_renewed_survives_a_failed_renewal(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    server = tls.ServerCertificate(tls.load_or_create_ca(clock=clock), [], clock=clock)
    clock.advance(days=3651)  # past the CA's own expiry: renewing must fail, loudly

    with pytest.raises(TLSError, match="expired"):
        server.renew_if_needed()

    async def scenario() -> None:
        task = asyncio.create_task(server.keep_renewed(check_every_seconds=0.01))
        try:
            await async_wait_until(
                lambda: "could not renew the TLS certificate" in caplog.text,
                timeout=5,
                message="keep_renewed to log the failed renewal",
            )
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
