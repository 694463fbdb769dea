"""Which headers cross the proxy, in both directions, for both lanes. Pure: no I/O.

The rules, each written once:

- **Hop-by-hop** headers (:data:`HOP_BY_HOP`) describe one connection and never cross the proxy,
  in either direction; nor does any header that a ``Connection`` header names
  (:func:`named_in_connection`).
- **X-Forwarded-*** (:data:`X_FORWARDED`) are the proxy's alone: what a client sends is dropped,
  never trusted or appended to, and the proxy sets ``X-Forwarded-For`` (the client's address),
  ``-Proto`` (``https``), ``-Host`` (the Host the client asked for) and ``-Prefix`` (the path
  prefix a route stripped, when it did). The standard ``Forwarded`` (RFC 7239), which some
  frameworks read first (Rack 3), says the same things: a client's is dropped too, and the
  proxy sets none (``X-Forwarded-*`` is what services read).
- ``Expect`` is answered by the proxy itself (``100 Continue`` when it starts reading the body),
  so it is not passed on.
- Everything else passes in order, repeats kept apart (two ``Set-Cookie`` stay two).

The full proxy works on ``str`` headers (:func:`request_headers`, :func:`response_headers`), the
fast lane and the upstream connection on raw ``bytes`` (:func:`request_headers_bytes`,
:func:`response_headers_bytes`). Both forms run the same code on the same names: the ``bytes``
sets are derived from the ``str`` ones once, at import, so the fast lane decodes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import AnyStr

HOP_BY_HOP = frozenset(
    {
        # RFC 9110 section 7.6.1: Connection and the fields it is known to carry.
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        # Hop-by-hop since RFC 2616 section 13.5.1; still removed by Caddy, nginx and Go.
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
    }
)
"""Headers that describe one connection and never cross the proxy (RFC 9110 section 7.6.1),
in lower case; any header named in ``Connection`` is dropped as well."""

X_FORWARDED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix")
"""Set by the proxy alone, in this order: values a client sends are dropped."""

FORWARDED_PROTO = "https"
"""What ``X-Forwarded-Proto`` says: the proxy serves HTTPS only."""

NOT_FORWARDED = HOP_BY_HOP | {name.lower() for name in X_FORWARDED} | {"expect", "forwarded"}
"""Request headers (lower case) a service never receives from the client."""

CONNECTION = "connection"


def _as_bytes(names: Iterable[str]) -> frozenset[bytes]:
    return frozenset(name.encode("ascii") for name in names)


HOP_BY_HOP_BYTES = _as_bytes(HOP_BY_HOP)
NOT_FORWARDED_BYTES = _as_bytes(NOT_FORWARDED)
_X_FORWARDED_BYTES = tuple(name.encode("ascii") for name in X_FORWARDED)
_FORWARDED_PROTO_BYTES = FORWARDED_PROTO.encode("ascii")
_CONNECTION_BYTES = CONNECTION.encode("ascii")

_OWS = " \t"
"""Optional whitespace around list elements (RFC 9110 section 5.6.3): spaces and tabs only,
so ``str`` and ``bytes`` values are trimmed alike."""
_OWS_BYTES = _OWS.encode("ascii")


def named_in_connection(values: Iterable[AnyStr]) -> frozenset[AnyStr]:
    """The header names the ``Connection`` header values list, in lower case: hop-by-hop for
    this hop (RFC 9110 section 7.6.1). ``str`` or ``bytes``, as the values are."""
    named: frozenset[AnyStr] = frozenset()
    for value in values:
        named = named | _listed(value)
    return named


@functools.lru_cache(maxsize=256)
def _listed(value: AnyStr) -> frozenset[AnyStr]:
    """The names one ``Connection`` value lists (cached: clients send the same few values)."""
    if isinstance(value, bytes):
        tokens = [token.strip(_OWS_BYTES).lower() for token in value.split(b",")]
    else:
        tokens = [token.strip(_OWS).lower() for token in value.split(",")]
    return frozenset(token for token in tokens if token)


def request_headers(
    headers: Iterable[tuple[str, str]], *, client: str, host: str, prefix: str | None
) -> list[tuple[str, str]]:
    """The request headers a service receives: the client's own (Host included) minus
    hop-by-hop ones, ``Expect``, ``Forwarded`` and any ``X-Forwarded-*``, then the proxy's
    ``X-Forwarded-*`` (an empty ``client`` or ``host`` is left out)."""
    kept = _kept(headers, NOT_FORWARDED, CONNECTION)
    _add_forwarded(kept, X_FORWARDED, (client, FORWARDED_PROTO, host, prefix))
    return kept


def request_headers_bytes(
    headers: Iterable[tuple[bytes, bytes]], *, client: bytes, host: bytes, prefix: bytes | None
) -> list[tuple[bytes, bytes]]:
    """:func:`request_headers` on a raw head."""
    kept = _kept(headers, NOT_FORWARDED_BYTES, _CONNECTION_BYTES)
    _add_forwarded(kept, _X_FORWARDED_BYTES, (client, _FORWARDED_PROTO_BYTES, host, prefix))
    return kept


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A service's response headers as the client receives them: hop-by-hop ones (and those
    its ``Connection`` header names) removed, every other one kept, in order."""
    return _kept(headers, HOP_BY_HOP, CONNECTION)


def response_headers_bytes(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`response_headers` on a raw head."""
    return _kept(headers, HOP_BY_HOP_BYTES, _CONNECTION_BYTES)


def _kept(
    headers: Iterable[tuple[AnyStr, AnyStr]], drop: frozenset[AnyStr], connection: AnyStr
) -> list[tuple[AnyStr, AnyStr]]:
    """``headers`` minus the names in ``drop`` (lower case, ``connection`` among them) and the
    names the ``Connection`` values list. One pass; a second only when ``Connection`` is there."""
    kept: list[tuple[AnyStr, AnyStr]] = []
    listed: list[AnyStr] = []
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            if lower == connection:
                listed.append(value)
            continue
        kept.append((name, value))
    if listed:
        named = named_in_connection(listed)
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return kept


def _add_forwarded(
    headers: list[tuple[AnyStr, AnyStr]],
    names: tuple[AnyStr, ...],
    values: tuple[AnyStr, AnyStr, AnyStr, AnyStr | None],
) -> None:
    """Append the proxy's ``X-Forwarded-*`` to ``headers``, leaving out empty values."""
    client, proto, host, prefix = values
    if client:
        headers.append((names[0], client))
    headers.append((names[1], proto))
    if host:
        headers.append((names[2], host))
    if prefix:
        headers.append((names[3], prefix))
