"""The cache of leaf certificates as far as it can be read without cryptography: where a leaf
for a (CA, host set) pair lives, and the record written beside it.

::

    tls/certs/<digest>.pem   key + certificate (written by :mod:`devstack.tls.ca`)
    tls/certs/<digest>.json  its :class:`LeafRecord`: hosts, validity, renewal instant, the CA's
                             and the leaf's fingerprints

The record is what the quick start (:mod:`devstack.tls.quick`) checks instead of parsing the
certificate: the ``ssl`` module loads a chain but cannot say what is in it. It is written after
the PEM, so a record and a PEM that disagree (a crash between the two writes, or two processes
racing) are told apart by the leaf's fingerprint and the quick start steps aside.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.tls import private
from devstack.tls.home import LEAF_DIR_NAME

Clock = Callable[[], dt.datetime]

RENEW_FRACTION = 3
"""A leaf is renewed once less than 1/RENEW_FRACTION of its validity is left."""
RECORD_VERSION = 1
"""Bumped whenever a record's meaning changes: a record of another version is not trusted."""

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def renew_at(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """When a leaf valid from ``not_before`` to ``not_after`` is due for renewal."""
    return not_after - (not_after - not_before) / RENEW_FRACTION


def cache_path(tls_folder: Path, ca_fingerprint: str, hosts: Sequence[str]) -> Path:
    """The cached leaf for ``hosts`` (normalized) issued by the CA with ``ca_fingerprint``: a
    new CA or another host set is another file, never a stale one."""
    key = "\n".join([ca_fingerprint, *hosts]).encode()
    return tls_folder / LEAF_DIR_NAME / f"{hashlib.sha256(key).hexdigest()[:24]}.pem"


def record_path(pem: Path) -> Path:
    return pem.with_suffix(".json")


def pem_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate in ``pem``, lowercase hex: what cryptography's
    ``Certificate.fingerprint(SHA256())`` says of it (both hash the DER bytes). ValueError when
    ``pem`` holds no readable certificate."""
    start = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, start)
    if start < 0 or end < 0:
        raise ValueError("no certificate in the PEM text")
    der = ssl.PEM_cert_to_DER_cert(pem[start : end + len(_PEM_END)])  # binascii.Error: ValueError
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class LeafRecord:
    """What the quick start needs to know of a cached leaf without parsing it."""

    hosts: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    renew_at: dt.datetime
    ca_fingerprint: str
    fingerprint: str
    """SHA-256 of the leaf's DER, lowercase hex: ties the record to one PEM."""

    def usable(self, hosts: Sequence[str], ca_fingerprint: str, now: dt.datetime) -> bool:
        """For exactly ``hosts``, from this CA, and neither too early nor due for renewal."""
        return (
            self.hosts == tuple(hosts)
            and self.ca_fingerprint == ca_fingerprint
            and self.not_before <= now < self.renew_at
        )

    def to_json(self) -> bytes:
        fields = {
            "version": RECORD_VERSION,
            "hosts": list(self.hosts),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "renew_at": self.renew_at.isoformat(),
            "ca_fingerprint": self.ca_fingerprint,
            "fingerprint": self.fingerprint,
        }
        return json.dumps(fields, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> LeafRecord:
        """The record ``data`` holds; ValueError for anything but a whole record of this version."""
        try:
            fields = json.loads(data)
            if fields["version"] != RECORD_VERSION:
                raise ValueError(f"record version {fields['version']!r}")
            hosts = fields["hosts"]
            if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
                raise ValueError("hosts is not a list of names")
            return cls(
                hosts=tuple(hosts),
                not_before=_instant(fields["not_before"]),
                not_after=_instant(fields["not_after"]),
                renew_at=_instant(fields["renew_at"]),
                ca_fingerprint=_hex(fields["ca_fingerprint"]),
                fingerprint=_hex(fields["fingerprint"]),
            )
        except (KeyError, TypeError, UnicodeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"not a leaf record: {exc!r}") from exc


def write_record(pem: Path, record: LeafRecord) -> None:
    """Write ``record`` beside ``pem``, atomically and privately (after the PEM itself)."""
    private.write_private(record_path(pem), record.to_json())


def read_record(pem: Path) -> LeafRecord | None:
    """The record beside ``pem``; None when there is none or it cannot be trusted."""
    try:
        return LeafRecord.from_json(record_path(pem).read_bytes())
    except (OSError, ValueError):
        return None


def _instant(text: object) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO 8601 instant")
    instant = dt.datetime.fromisoformat(text)
    if instant.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return instant


def _hex(text: object) -> str:
    if not isinstance(text, str) or len(text) != 64 or text.strip("0123456789abcdef"):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint")
    return text
