"""The local certificate authority, the proxy's leaf certificate and the SSL contexts built on them.

Layout under :func:`devstack_home` (folders 0700, every file holding a key 0600)::

    tls/ca.crt              the CA certificate (what users trust; ``devstack ca`` prints its path)
    tls/ca.key              its private key, made once and never silently replaced
    tls/certs/<digest>.pem  a cached leaf: key + certificate, one file per (CA, host set)
    tls/certs/<digest>.json its record, for the quick start (:mod:`devstack.tls.leaves`)

The CA is ECDSA P-256, valid for ten years. A leaf names every host explicitly in its
subjectAltName (no wildcards under ``localhost``), is ECDSA P-256 with the serverAuth usage and is
valid for :data:`LEAF_VALIDITY` (90 days). It is renewed when less than a third of that is left, or
when the host set changes, by loading the new chain into the *same* :class:`ssl.SSLContext`: new
handshakes get the new certificate, the server keeps running.

What needs no cryptography lives in modules of its own, re-exported here: the host names
(:mod:`devstack.tls.hosts`), the server context (:mod:`devstack.tls.context`) and the cache's
layout (:mod:`devstack.tls.leaves`), so that :mod:`devstack.tls.quick` can serve a cached leaf
before cryptography is loaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The ``X as X`` imports are re-exports: callers keep importing them from here.
from devstack.errors import TLSError
from devstack.tls import leaves, pki, private
from devstack.tls.context import ALPN_PROTOCOLS as ALPN_PROTOCOLS
from devstack.tls.context import SESSION_TICKETS as SESSION_TICKETS
from devstack.tls.context import TLS12_CIPHERS as TLS12_CIPHERS
from devstack.tls.context import server_context as server_context
from devstack.tls.home import CA_CERT_NAME, CA_KEY_NAME, tls_dir
from devstack.tls.hosts import BASE_HOSTS as BASE_HOSTS
from devstack.tls.hosts import normalize_host as normalize_host
from devstack.tls.hosts import normalize_hosts as normalize_hosts
from devstack.tls.leaves import RENEW_FRACTION as RENEW_FRACTION
from devstack.tls.leaves import Clock as Clock
from devstack.tls.leaves import utc_now as utc_now

logger = logging.getLogger(__name__)

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=90)
"""Well under the 397 days browsers accept; renewal is automatic, so short is cheap."""
BACKDATE = dt.timedelta(minutes=5)
"""notBefore lies a little in the past, so a client whose clock lags slightly still accepts it."""


# --- the certificate authority ------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    """devstack's local CA as loaded from disk."""

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate = field(repr=False, compare=False)
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lowercase hex."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:16]

    @property
    def name(self) -> str:
        """The CA's common name, as trust stores and browsers show it."""
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else self.certificate.subject.rfc4514_string()

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc


def load_or_create_ca(home: Path | None = None, *, clock: Clock = utc_now) -> CertificateAuthority:
    """Load the CA from ``home`` (default :func:`devstack_home`), creating it on first use.

    A certificate whose key is missing, unreadable or not its own is a :class:`TLSError`: a new CA
    would silently invalidate every trust store the old one was installed in.
    """
    folder = private.private_dir(tls_dir(home))
    cert_path, key_path = folder / CA_CERT_NAME, folder / CA_KEY_NAME
    if not cert_path.exists():
        with private.locked(folder):
            if not cert_path.exists():
                _create_ca(cert_path, key_path, clock())
    ca = _load_ca(cert_path, key_path)
    if ca.not_after <= clock():
        raise _expired(ca)
    return ca


def ca_cert_path(home: Path | None = None) -> Path:
    """The CA certificate's path (for ``devstack ca``); creates the CA if there is none yet."""
    return load_or_create_ca(home).cert_path


def _create_ca(cert_path: Path, key_path: Path, now: dt.datetime) -> None:
    if key_path.exists():
        # Only a creation interrupted between the two renames leaves a key without its
        # certificate; nothing can trust a certificate that never existed. Keep it, aside.
        aside = key_path.with_name(f"{key_path.name}.orphan-{now:%Y%m%dT%H%M%S}")
        logger.warning("found CA key %s without its certificate; moved it to %s", key_path, aside)
        key_path.rename(aside)
    key = ec.generate_private_key(ec.SECP256R1())
    who = f"{private.user_name()}@{socket.gethostname()}"
    name = pki.name(f"devstack local CA ({who})", "devstack local development CA", unit=who)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = pki.certificate(
        subject=name,
        issuer=name,
        public_key=key.public_key(),
        signing_key=key,
        not_before=now - BACKDATE,
        not_after=now + CA_VALIDITY,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (pki.key_usage(cert_sign=True), True),
            (ski, False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        ],
    )
    # The key goes first: the certificate's presence is what says "a CA exists".
    private.write_private(key_path, pki.key_pem(key))
    private.write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    logger.info("created the local CA %r in %s", f"devstack local CA ({who})", cert_path.parent)


def _expired(ca: CertificateAuthority) -> TLSError:
    return TLSError(
        f"the local CA {ca.cert_path} expired on {ca.not_after:%Y-%m-%d}; move the folder "
        f"{ca.cert_path.parent} away so a new CA is made, then trust the new one again"
    )


def _load_ca(cert_path: Path, key_path: Path) -> CertificateAuthority:
    start_over = (
        f"restore {key_path} from a backup, or start over with a new CA: remove (or untrust) "
        f"the old one, delete {cert_path}, run devstack again and trust the new CA"
    )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TLSError(
            f"cannot read the local CA certificate {cert_path}: {exc}; {start_over}"
        ) from exc
    if not key_path.exists():
        raise TLSError(
            f"the local CA certificate {cert_path} exists but its key {key_path} is missing; "
            + start_over
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TLSError(f"cannot read the local CA key {key_path}: {exc}; {start_over}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not pki.same_public_key(key, cert):
        raise TLSError(
            f"the key {key_path} does not belong to the CA certificate {cert_path}; {start_over}"
        )
    private.tighten(key_path, 0o600)
    return CertificateAuthority(
        cert_path=cert_path, key_path=key_path, certificate=cert, private_key=key
    )


# --- the leaf certificate -----------------------------------------------------------------------


class ServerCertificate:
    """The proxy's leaf certificate and the one server :class:`ssl.SSLContext` that serves it.

    ``clock`` must return aware UTC datetimes; tests inject one to drive renewal.

    ``context`` is a server context to serve from instead of a new :func:`server_context`: the
    quick start's (:mod:`devstack.tls.quick`), already serving the leaf whose SHA-256 is
    ``serving``. The chain is then loaded into it only if the certificate settled on here is
    another, through ``reload_with`` when given: from a worker thread, pass the event loop's
    ``call_soon_threadsafe``, since OpenSSL does not guard a context whose certificate is being
    replaced against a handshake starting on another thread.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        hosts: Sequence[str],
        *,
        clock: Clock = utc_now,
        context: ssl.SSLContext | None = None,
        serving: str | None = None,
        reload_with: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._ca = ca
        self._clock = clock
        self._hosts = normalize_hosts(hosts)
        self._context = context if context is not None else server_context()
        self._certificate, self._path = self._load_or_issue(self._hosts)
        if serving != self.fingerprint:
            load = functools.partial(self._context.load_cert_chain, self._path)
            if reload_with is None:
                load()
            else:
                reload_with(load)

    @property
    def context(self) -> ssl.SSLContext:
        """:func:`server_context` with this certificate; the same object for the whole run."""
        return self._context

    @property
    def hosts(self) -> tuple[str, ...]:
        return self._hosts

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, lowercase hex (as :func:`leaves.pem_fingerprint`)."""
        return self._certificate.fingerprint(hashes.SHA256()).hex()

    @property
    def path(self) -> Path:
        """The cached PEM file (key and certificate) currently loaded into :attr:`context`."""
        return self._path

    @property
    def renew_at(self) -> dt.datetime:
        """When the current certificate is due for renewal."""
        return _renew_at(self._certificate)

    def renew_if_needed(self) -> bool:
        """Reissue the leaf and reload it into :attr:`context` if it is due; True if it was."""
        if self._clock() < self.renew_at:
            return False
        self._issue_and_load("renewed")
        return True

    async def keep_renewed(self, check_every_seconds: float = 3600) -> None:
        """Renew the certificate whenever it is due, until cancelled.

        Checks at least every ``check_every_seconds`` (the monotonic clock stops while a laptop
        sleeps, so waiting for the due date in one sleep could oversleep it). A failed renewal
        is logged and retried: the current certificate still has a third of its life left.
        """
        while True:
            due_in = (self.renew_at - self._clock()).total_seconds()
            await asyncio.sleep(max(0.0, min(check_every_seconds, due_in)))
            try:
                # Inline, not in an executor: an EC P-256 key and a signature take about a
                # millisecond, and the files written are a few hundred bytes.
                self.renew_if_needed()
            except (TLSError, OSError, ssl.SSLError) as exc:
                logger.warning("could not renew the TLS certificate (will retry): %s", exc)
                await asyncio.sleep(check_every_seconds)

    def _issue_and_load(self, verb: str) -> None:
        path = self._cache_path(self._hosts)
        with private.locked(path.parent):
            certificate = _issue_leaf(self._ca, self._hosts, self._clock(), path)
        self._context.load_cert_chain(path)
        self._certificate, self._path = certificate, path
        logger.info("%s the TLS certificate; valid until %s", verb, certificate.not_valid_after_utc)

    def _load_or_issue(self, hosts: tuple[str, ...]) -> tuple[x509.Certificate, Path]:
        """The cached leaf for ``hosts`` if usable (a warm start makes no key), else a new one."""
        path = self._cache_path(hosts)
        cached = self._load_cached(path, hosts)
        if cached is None:
            with private.locked(path.parent):
                cached = self._load_cached(path, hosts)  # another process may have just made it
                if cached is None:
                    cached = _issue_leaf(self._ca, hosts, self._clock(), path)
                    logger.info("issued a TLS certificate for %s", ", ".join(hosts))
                    return cached, path
        _remember(self._ca, hosts, cached, path)  # a leaf cached before records were written
        return cached, path

    def _cache_path(self, hosts: tuple[str, ...]) -> Path:
        path = leaves.cache_path(self._ca.cert_path.parent, self._ca.fingerprint, hosts)
        private.private_dir(path.parent)
        return path

    def _load_cached(self, path: Path, hosts: tuple[str, ...]) -> x509.Certificate | None:
        """The cached leaf if it is usable as is: ours, for exactly these hosts, not due."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            cert = x509.load_pem_x509_certificate(data)
            key = serialization.load_pem_private_key(data, password=None)
            cert.verify_directly_issued_by(self._ca.certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            logger.info("ignoring unusable cached certificate %s: %s", path, exc)
            return None
        now = self._clock()
        usable = (
            isinstance(key, ec.EllipticCurvePrivateKey)
            and pki.same_public_key(key, cert)
            and _san_hosts(cert) == set(hosts)
            and cert.not_valid_before_utc <= now < _renew_at(cert)
        )
        return cert if usable else None


def _issue_leaf(
    ca: CertificateAuthority, hosts: Sequence[str], now: dt.datetime, path: Path
) -> x509.Certificate:
    if ca.not_after <= now:
        raise _expired(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = pki.certificate(
        subject=pki.name(hosts[0], "devstack development certificate"),
        issuer=ca.certificate.subject,
        public_key=key.public_key(),
        signing_key=ca.private_key,
        not_before=now - BACKDATE,
        not_after=min(now + LEAF_VALIDITY, ca.not_after),
        extensions=[
            (x509.SubjectAlternativeName(list(_general_names(hosts))), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (pki.key_usage(cert_sign=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False),
        ],
    )
    # One file holding key and certificate: replaced in one rename, so a reader never pairs a
    # new certificate with an old key.
    private.write_private(path, pki.key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
    _remember(ca, hosts, cert, path)
    return cert


def _remember(
    ca: CertificateAuthority, hosts: Sequence[str], cert: x509.Certificate, path: Path
) -> None:
    """Write the leaf's record beside it unless the one there says the same already. Not
    fatal: without a record the next start only takes the slow path."""
    record = leaves.LeafRecord(
        hosts=tuple(hosts),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        renew_at=_renew_at(cert),
        ca_fingerprint=ca.fingerprint,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )
    if leaves.read_record(path) == record:
        return
    try:
        leaves.write_record(path, record)
    except TLSError as exc:
        logger.info("could not write the certificate's record (the next start is slower): %s", exc)


def _general_names(hosts: Iterable[str]) -> Iterator[x509.GeneralName]:
    for host in hosts:
        try:
            yield x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            yield x509.DNSName(host)


def _san_hosts(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return ips | set(san.get_values_for_type(x509.DNSName))


def _renew_at(cert: x509.Certificate) -> dt.datetime:
    return leaves.renew_at(cert.not_valid_before_utc, cert.not_valid_after_utc)


# --- client side --------------------------------------------------------------------------------


def client_context(home: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts devstack's CA and nothing else, verifying host names."""
    ca = load_or_create_ca(home)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca.cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
