"""Trust for what the stack runs: devstack's CA added to the system's, in the variables the common
runtimes read, so a service calling a peer through the proxy verifies it with nothing set by hand.

- ``SSL_CERT_FILE`` (OpenSSL, so Python's ``ssl``, Ruby, PHP...), ``REQUESTS_CA_BUNDLE`` (Python's
  requests) and ``CURL_CA_BUNDLE`` (curl) name one file replacing the default trust, so they get
  :data:`BUNDLE_NAME`: the system's CAs followed by devstack's, beside the CA (``tls/bundle.pem``);
- ``NODE_EXTRA_CA_CERTS`` is *added* to Node's built-in CAs, so it names devstack's CA alone.

The bundle is rewritten (atomically) only when its content would change: when the system's CAs or
devstack's CA change, never on a start where neither did.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

from devstack.tls import private

logger = logging.getLogger(__name__)

BUNDLE_NAME = "bundle.pem"
BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
NODE_VARIABLE = "NODE_EXTRA_CA_CERTS"
SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine, Arch
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
    Path("/etc/ssl/ca-bundle.pem"),  # openSUSE
    Path("/etc/ssl/cert.pem"),  # macOS, the BSDs
)
"""Where distributions keep their CA bundle, tried after what OpenSSL itself reports."""


def trust_environment(ca_cert: Path, bundle: Path) -> dict[str, str]:
    """The variables that make the common runtimes trust devstack's CA besides the system's."""
    env = dict.fromkeys(BUNDLE_VARIABLES, str(bundle))
    env[NODE_VARIABLE] = str(ca_cert)
    return env


def bundle_pem(system: bytes, ca: bytes) -> bytes:
    """The system's CA certificates, then devstack's."""
    if system and not system.endswith(b"\n"):
        system += b"\n"
    return system + b"# devstack local CA\n" + ca


def system_ca_candidates() -> Iterator[Path]:
    """The files that may hold the system's CAs, best first: what OpenSSL reports (which honours
    ``$SSL_CERT_FILE``), the distributions' usual places, then certifi's if it is installed."""
    paths = ssl.get_default_verify_paths()
    for name in (paths.cafile, paths.openssl_cafile):
        if name:
            yield Path(name)
    yield from SYSTEM_BUNDLES
    try:
        import certifi  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    yield Path(certifi.where())


def system_ca_file(exclude: Path) -> Path | None:
    """The first candidate that is a non-empty file and not ``exclude`` (devstack's own bundle,
    which ``$SSL_CERT_FILE`` names inside a service: a bundle must not contain itself)."""
    for path in system_ca_candidates():
        try:
            if path.is_file() and path.stat().st_size > 0 and not _same_file(path, exclude):
                return path
        except OSError:
            continue
    return None


def write_bundle(ca_cert: Path, system: Path | None = None) -> Path:
    """Make sure :data:`BUNDLE_NAME` beside ``ca_cert`` holds the system's CAs (``system``, default
    :func:`system_ca_file`) and ``ca_cert``; rewritten only when that content changed."""
    bundle = ca_cert.with_name(BUNDLE_NAME)
    if system is None:
        system = system_ca_file(exclude=bundle)
    system_pem = b""
    if system is None:
        logger.warning("found no system CA bundle; %s trusts devstack's CA alone", bundle)
    else:
        try:
            system_pem = system.read_bytes()
        except OSError as exc:
            logger.warning("cannot read the system CA bundle %s (%s); left out", system, exc)
    wanted = bundle_pem(system_pem, ca_cert.read_bytes())
    try:
        unchanged = bundle.read_bytes() == wanted
    except OSError:
        unchanged = False
    if not unchanged:
        private.write_private(bundle, wanted, mode=0o644)
        logger.info("wrote the CA bundle %s", bundle)
    return bundle


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
