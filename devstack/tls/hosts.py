"""The host names a leaf certificate is issued for, normalized: plain ``ipaddress`` and IDNA, no
cryptography, so the quick start (:mod:`devstack.tls.quick`) can match a cached leaf to the hosts
asked for without loading :mod:`devstack.tls.ca`."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable

from devstack.errors import TLSError

BASE_HOSTS = ("localhost", "127.0.0.1", "::1")

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalize_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """:data:`BASE_HOSTS` first, then the other hosts, lowercased, deduplicated and sorted."""
    extra = {normalize_host(h) for h in hosts} - set(BASE_HOSTS)
    return (*BASE_HOSTS, *sorted(extra))


def normalize_host(host: str) -> str:
    """One SAN entry: an IP address in canonical form or a lowercase ASCII (IDNA) DNS name."""
    text = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    try:
        name = text.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise TLSError(
            f"host {host!r} is not a valid DNS name ({exc}); fix it in proxy.hosts"
        ) from exc
    labels = name.split(".")
    wildcard = labels[0] == "*"
    if wildcard and (len(labels) < 3 or labels[-1] == "localhost"):
        raise TLSError(
            f"host {host!r}: wildcards under localhost or a top-level domain are not accepted by "
            f"browsers; list each name (for example app.localhost) in proxy.hosts instead"
        )
    checked = labels[1:] if wildcard else labels
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in checked):
        raise TLSError(f"host {host!r} is not a valid DNS name; use letters, digits, '-' and '.'")
    return name
