"""tls/bundle.py: the system's CAs plus devstack's, and the variables naming them."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from devstack.tls import bundle
from devstack.tls.ca import load_or_create_ca

SYSTEM = b"-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----"


def test_bundle_pem_is_the_system_then_devstacks_ca() -> None:
    pem = bundle.bundle_pem(SYSTEM, b"CA\n")
    assert pem == SYSTEM + b"\n# devstack local CA\nCA\n"
    assert bundle.bundle_pem(b"", b"CA\n") == b"# devstack local CA\nCA\n"


def test_trust_environment() -> None:
    env = bundle.trust_environment(Path("/h/tls/ca.crt"), Path("/h/tls/bundle.pem"))
    assert env == {
        "SSL_CERT_FILE": "/h/tls/bundle.pem",
        "REQUESTS_CA_BUNDLE": "/h/tls/bundle.pem",
        "CURL_CA_BUNDLE": "/h/tls/bundle.pem",
        "NODE_EXTRA_CA_CERTS": "/h/tls/ca.crt",
    }


def test_the_bundle_holds_the_system_and_devstacks_ca(tmp_path: Path) -> None:
    ca = load_or_create_ca()
    system = tmp_path / "system.pem"
    system.write_bytes(SYSTEM)
    path = bundle.write_bundle(ca.cert_path, system)
    assert path == ca.cert_path.with_name("bundle.pem")
    assert path.read_bytes() == bundle.bundle_pem(SYSTEM, ca.pem)
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_unchanged_bundle_is_not_rewritten(tmp_path: Path) -> None:
    ca = load_or_create_ca()
    system = tmp_path / "system.pem"
    system.write_bytes(SYSTEM)
    path = bundle.write_bundle(ca.cert_path, system)
    inode = path.stat().st_ino
    os.utime(path, (0, 0))
    bundle.write_bundle(ca.cert_path, system)
    assert (path.stat().st_ino, path.stat().st_mtime) == (inode, 0)


def test_the_bundle_follows_either_input(tmp_path: Path) -> None:
    ca = load_or_create_ca()
    system = tmp_path / "system.pem"
    system.write_bytes(SYSTEM)
    path = bundle.write_bundle(ca.cert_path, system)
    system.write_bytes(SYSTEM + b"\nanother")
    bundle.write_bundle(ca.cert_path, system)
    assert path.read_bytes().startswith(SYSTEM + b"\nanother\n")
    ca.cert_path.write_bytes(b"a new CA\n")  # what a re-created CA amounts to for the bundle
    bundle.write_bundle(ca.cert_path, system)
    assert path.read_bytes().endswith(b"# devstack local CA\na new CA\n")


def test_without_a_system_bundle_devstacks_ca_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = load_or_create_ca()
    monkeypatch.setattr(bundle, "system_ca_candidates", lambda: iter([tmp_path / "missing"]))
    path = bundle.write_bundle(ca.cert_path)
    assert path.read_bytes() == bundle.bundle_pem(b"", ca.pem)


def test_the_system_file_is_what_openssl_reports_first(monkeypatch: pytest.MonkeyPatch) -> None:
    reported = ssl.get_default_verify_paths().cafile
    if reported is None:
        pytest.skip("OpenSSL reports no CA file here")
    assert bundle.system_ca_file(exclude=Path("/nonexistent")) == Path(reported)


def test_the_bundle_never_contains_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Inside a service, $SSL_CERT_FILE names devstack's bundle: it is skipped."""
    ca = load_or_create_ca()
    system = tmp_path / "system.pem"
    system.write_bytes(SYSTEM)
    path = bundle.write_bundle(ca.cert_path, system)
    monkeypatch.setattr(bundle, "system_ca_candidates", lambda: iter([path, system]))
    assert bundle.system_ca_file(exclude=path) == system


def test_the_bundle_verifies_devstacks_certificates() -> None:
    """Python's ssl loads it: the system's CAs and devstack's."""
    ca = load_or_create_ca()
    path = bundle.write_bundle(ca.cert_path)
    context = ssl.create_default_context(cafile=str(path))
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert any(s.get("commonName") == ca.name for s in subjects)
    assert len(subjects) > 1 or bundle.system_ca_file(exclude=path) is None
