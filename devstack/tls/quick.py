"""The quick start: serve the cached leaf with the ``ssl`` module alone, check it fully later.

Loading :mod:`devstack.tls.ca` imports cryptography, tens of milliseconds of CPU that compete
with the services starting, only to find, on almost every start, that the leaf cached for these
hosts is fine as it is. :func:`cached_server_context` decides that from the leaf's record
(:mod:`devstack.tls.leaves`) and the CA certificate's fingerprint, and loads the chain into a
:func:`server_context`; :meth:`QuickCertificate.verify` runs the full check later (in a thread),
and swaps the certificate in the same context should it settle on another one.

What the quick start takes on trust until then is what only cryptography can check: that the
leaf's signature verifies with the CA, and that the CA's key belongs to its certificate. Both
files are devstack's own, in an owner-only folder; the record ties the PEM (by its
fingerprint) to a CA (by the CA certificate's fingerprint) and a host set, and OpenSSL checks
that the key in the PEM belongs to its certificate as it loads the chain.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.tls import leaves
from devstack.tls.context import server_context
from devstack.tls.home import CA_CERT_NAME, CA_KEY_NAME, devstack_home, tls_dir
from devstack.tls.hosts import normalize_hosts
from devstack.tls.leaves import Clock, LeafRecord, utc_now

if TYPE_CHECKING:
    from devstack.tls.ca import ServerCertificate

logger = logging.getLogger(__name__)


class QuickCertificate:
    """A cached leaf served from :attr:`context` without cryptography, until :meth:`verify`."""

    def __init__(
        self,
        context: ssl.SSLContext,
        record: LeafRecord,
        *,
        home: Path,
        ca_path: Path,
        path: Path,
        clock: Clock,
    ) -> None:
        self._context = context
        self._record = record
        self._home = home
        self._ca_path = ca_path
        self._path = path
        self._clock = clock

    @property
    def context(self) -> ssl.SSLContext:
        """:func:`server_context` with the cached leaf; the one to serve from for the whole run
        (:meth:`verify` loads any other certificate into this same object)."""
        return self._context

    @property
    def hosts(self) -> tuple[str, ...]:
        """The normalized hosts, as :attr:`ServerCertificate.hosts` has them."""
        return self._record.hosts

    @property
    def ca_path(self) -> Path:
        return self._ca_path

    @property
    def path(self) -> Path:
        """The cached PEM file (key and certificate) loaded into :attr:`context`."""
        return self._path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf's DER, lowercase hex."""
        return self._record.fingerprint

    @property
    def renew_at(self) -> dt.datetime:
        """When the cached leaf is due for renewal (the full path then issues another)."""
        return self._record.renew_at

    def verify(
        self, *, reload_with: Callable[[Callable[[], None]], object] | None = None
    ) -> ServerCertificate:
        """The full check, as a start without the quick path makes it: load the CA (its key
        included), check the cached leaf with cryptography, issue a new one if it falls short.
        The :class:`ServerCertificate` returned serves from :attr:`context` (its
        ``keep_renewed`` renews into it); its certificate is loaded into that context only if
        it is not the one served already, through ``reload_with`` when given (from a worker
        thread, the event loop's ``call_soon_threadsafe``: see :class:`ServerCertificate`).

        Imports cryptography. Raises :class:`TLSError` where the slow path would have (a CA
        whose key is gone, damaged or not its own; an expired CA).
        """
        from devstack.tls.ca import ServerCertificate, load_or_create_ca

        authority = load_or_create_ca(self._home, clock=self._clock)
        return ServerCertificate(
            authority,
            self.hosts,
            clock=self._clock,
            context=self._context,
            serving=self.fingerprint,
            reload_with=reload_with,
        )


def cached_server_context(
    hosts: Iterable[str], home: Path | None = None, *, clock: Clock = utc_now
) -> QuickCertificate | None:
    """The cached leaf for ``hosts`` loaded into a new :func:`server_context`, or None when the
    full path must decide (no CA yet, no record, another host set, due for renewal, another CA,
    anything unreadable). Never imports cryptography, never writes.

    ``home`` is as for :func:`~devstack.tls.ca.load_or_create_ca`. Hosts that are not valid
    names raise :class:`TLSError`, as the full path would.
    """
    wanted = normalize_hosts(hosts)
    home = home if home is not None else devstack_home()
    folder = tls_dir(home)
    ca_path = folder / CA_CERT_NAME
    try:
        ca_fingerprint = leaves.pem_fingerprint(ca_path.read_text(encoding="ascii"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not (folder / CA_KEY_NAME).is_file():
        return None  # the full path explains what to do about it
    path = leaves.cache_path(folder, ca_fingerprint, wanted)
    record = leaves.read_record(path)
    if record is None or not record.usable(wanted, ca_fingerprint, clock()):
        return None
    context = _load(path, record)
    if context is None:
        return None
    return QuickCertificate(context, record, home=home, ca_path=ca_path, path=path, clock=clock)


def _load(path: Path, record: LeafRecord) -> ssl.SSLContext | None:
    """A server context serving the PEM at ``path`` if it holds the leaf ``record`` describes.

    Another process may renew the leaf between the check and the load (one rename): the
    context then serves the newer leaf, as valid for the same CA and hosts, and
    :meth:`QuickCertificate.verify` merely loads it once more.
    """
    try:
        if leaves.pem_fingerprint(path.read_text(encoding="ascii")) != record.fingerprint:
            return None
        context = server_context()
        context.load_cert_chain(path)
    except (OSError, ValueError, ssl.SSLError) as exc:
        logger.debug("the cached certificate %s is not for the quick start: %s", path, exc)
        return None
    return context
