"""The quick start: a cached leaf served with the ``ssl`` module alone, its record, every reason
to step aside for the full path, and the full check that follows; handshakes in memory."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.errors import TLSError
from devstack.tls import ca as tls
from devstack.tls import leaves, quick
from tests.unit.test_tls import FakeClock, handshake, mode, served_certificate

HOSTS = ["api.localhost"]


def issued(clock: tls.Clock = tls.utc_now) -> tls.ServerCertificate:
    return tls.ServerCertificate(tls.load_or_create_ca(clock=clock), HOSTS, clock=clock)


def replace_the_ca(ca_path: Path) -> tls.CertificateAuthority:
    """Start over with a new CA in the same place, as a user who deleted the old one does."""
    ca_path.unlink()
    ca_path.with_name("ca.key").unlink()
    return tls.load_or_create_ca()


def rewrite_record(pem: Path, **fields: object) -> None:
    path = leaves.record_path(pem)
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_the_cached_leaf_is_served_and_verifies_with_the_ca() -> None:
    server = issued()
    cached = quick.cached_server_context(["API.localhost", "localhost"])
    assert cached is not None
    assert cached.hosts == server.hosts and cached.path == server.path
    assert cached.ca_path == tls.load_or_create_ca().cert_path
    assert cached.fingerprint == server.fingerprint and cached.renew_at == server.renew_at

    client = tls.client_context()
    for name in ("localhost", "127.0.0.1", "::1", "api.localhost"):
        handshake(cached.context, hostname=name, client=client)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(cached.context, hostname="web.localhost", client=client)


def test_the_quick_context_is_the_servers_context() -> None:
    issued()
    cached = quick.cached_server_context(HOSTS)
    assert cached is not None
    context = cached.context
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.num_tickets == tls.SESSION_TICKETS
    assert context.options == tls.server_context().options
    assert handshake(context).selected_alpn_protocol() == "http/1.1"


def test_the_record_says_what_the_certificate_says() -> None:
    server = issued()
    ca = tls.load_or_create_ca()
    record = leaves.read_record(server.path)
    assert record == leaves.LeafRecord(
        hosts=server.hosts,
        not_before=server.certificate.not_valid_before_utc,
        not_after=server.certificate.not_valid_after_utc,
        renew_at=server.renew_at,
        ca_fingerprint=ca.fingerprint,
        fingerprint=server.fingerprint,
    )
    assert mode(leaves.record_path(server.path)) == 0o600
    # The quick start's fingerprints are cryptography's: DER bytes, hashed alike.
    assert leaves.pem_fingerprint(ca.cert_path.read_text()) == ca.fingerprint
    assert leaves.pem_fingerprint(server.path.read_text()) == server.fingerprint


def test_a_renewed_leaf_gets_a_new_record() -> None:
    clock = FakeClock()
    server = issued(clock)
    clock.advance(days=61)
    assert server.renew_if_needed()
    record = leaves.read_record(server.path)
    assert record is not None and record.fingerprint == server.fingerprint
    assert quick.cached_server_context(HOSTS, clock=clock) is not None


def test_a_leaf_cached_without_a_record_gets_one_on_the_full_path() -> None:
    server = issued()
    leaves.record_path(server.path).unlink()
    assert quick.cached_server_context(HOSTS) is None
    again = issued()
    assert again.fingerprint == server.fingerprint  # reused, not reissued
    assert quick.cached_server_context(HOSTS) is not None


def _no_record(server: tls.ServerCertificate) -> None:
    leaves.record_path(server.path).unlink()


def _corrupt_record(server: tls.ServerCertificate) -> None:
    leaves.record_path(server.path).write_text('{"version": 1, "hosts": ')


def _another_version(server: tls.ServerCertificate) -> None:
    rewrite_record(server.path, version=leaves.RECORD_VERSION + 1)


def _record_of_another_ca(server: tls.ServerCertificate) -> None:
    rewrite_record(server.path, ca_fingerprint="0" * 64)


def _record_of_another_leaf(server: tls.ServerCertificate) -> None:
    rewrite_record(server.path, fingerprint="0" * 64)


def _record_of_other_hosts(server: tls.ServerCertificate) -> None:
    rewrite_record(server.path, hosts=[*server.hosts, "web.localhost"])


def _damaged_leaf(server: tls.ServerCertificate) -> None:
    server.path.write_text("garbage")


def _ca_replaced(server: tls.ServerCertificate) -> None:
    replace_the_ca(tls.load_or_create_ca().cert_path)


def _ca_key_missing(server: tls.ServerCertificate) -> None:
    tls.load_or_create_ca().key_path.unlink()


def _no_ca(server: tls.ServerCertificate) -> None:
    tls.load_or_create_ca().cert_path.unlink()


@pytest.mark.parametrize(
    "damage",
    [
        _no_record,
        _corrupt_record,
        _another_version,
        _record_of_another_ca,
        _record_of_another_leaf,
        _record_of_other_hosts,
        _damaged_leaf,
        _ca_replaced,
        _ca_key_missing,
        _no_ca,
    ],
)
def test_anything_amiss_leaves_it_to_the_full_path(
    damage: Callable[[tls.ServerCertificate], None],
) -> None:
    server = issued()
    assert quick.cached_server_context(HOSTS) is not None
    damage(server)
    assert quick.cached_server_context(HOSTS) is None


def test_other_hosts_are_left_to_the_full_path() -> None:
    issued()
    assert quick.cached_server_context(["web.localhost"]) is None
    assert quick.cached_server_context([]) is None


def test_a_leaf_due_for_renewal_or_not_yet_valid_is_left_to_the_full_path() -> None:
    clock = FakeClock()
    server = issued(clock)
    assert quick.cached_server_context(HOSTS, clock=clock) is not None
    clock.now = server.renew_at - dt.timedelta(seconds=1)
    assert quick.cached_server_context(HOSTS, clock=clock) is not None
    clock.now = server.renew_at
    assert quick.cached_server_context(HOSTS, clock=clock) is None
    clock.now = server.certificate.not_valid_before_utc - dt.timedelta(seconds=1)
    assert quick.cached_server_context(HOSTS, clock=clock) is None


def test_an_explicit_home_is_used(tmp_path: Path) -> None:
    tls.ServerCertificate(tls.load_or_create_ca(tmp_path), HOSTS)
    assert quick.cached_server_context(HOSTS) is None  # DEVSTACK_HOME has no CA
    cached = quick.cached_server_context(HOSTS, tmp_path)
    assert cached is not None and cached.ca_path.is_relative_to(tmp_path)
    assert cached.verify().context is cached.context


def test_verify_keeps_the_leaf_and_the_context_without_reloading() -> None:
    server = issued()
    cached = quick.cached_server_context(HOSTS)
    assert cached is not None
    reloads: list[Callable[[], None]] = []
    verified = cached.verify(reload_with=reloads.append)
    assert verified.context is cached.context and verified.fingerprint == server.fingerprint
    assert verified.hosts == cached.hosts and not reloads


def test_verify_after_the_ca_was_replaced_serves_a_leaf_of_the_new_ca() -> None:
    issued()
    cached = quick.cached_server_context(HOSTS)
    assert cached is not None
    handshake(cached.context, hostname="api.localhost", client=tls.client_context())

    new_ca = replace_the_ca(cached.ca_path)
    reloads: list[Callable[[], None]] = []
    verified = cached.verify(reload_with=reloads.append)
    assert verified.context is cached.context and verified.fingerprint != cached.fingerprint
    verified.certificate.verify_directly_issued_by(new_ca.certificate)
    assert len(reloads) == 1
    reloads[0]()  # as the loop would run it

    client = tls.client_context()  # trusts the new CA only
    handshake(cached.context, hostname="api.localhost", client=client)
    assert served_certificate(cached.context) == verified.certificate


def test_verify_reloads_inline_by_default() -> None:
    issued()
    cached = quick.cached_server_context(HOSTS)
    assert cached is not None
    replace_the_ca(cached.ca_path)
    verified = cached.verify()
    assert served_certificate(cached.context) == verified.certificate


def test_verify_fails_as_the_full_path_would() -> None:
    issued()
    cached = quick.cached_server_context(HOSTS)
    assert cached is not None
    cached.ca_path.with_name("ca.key").write_text("garbage")
    with pytest.raises(TLSError, match="cannot read the local CA key"):
        cached.verify()


QUICK_START = """
import sys
from devstack.tls import quick
cached = quick.cached_server_context(["api.localhost"])
assert cached is not None, "no quick start"
assert "cryptography" not in sys.modules, sorted(m for m in sys.modules if "cryptography" in m)
cached.verify()
assert "cryptography" in sys.modules
"""


def test_the_quick_start_never_imports_cryptography() -> None:
    issued()  # DEVSTACK_HOME (a temporary folder) is inherited by the child
    result = subprocess.run(
        [sys.executable, "-c", QUICK_START], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
