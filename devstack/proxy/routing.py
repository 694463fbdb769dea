"""The route table: which service or folder answers a (host, path). Pure: no I/O, no sockets.

Rules, in the order they decide:

0. ``/_devstack`` and everything below it (:data:`RESERVED_PREFIX`) is the proxy's own, on every
   allowed host, whatever the routes say: the live-reload script and its socket
   (:mod:`devstack.proxy.live`).
1. A route with a ``host`` beats every route without one (hosts match case-insensitively,
   without the port and without a trailing dot).
2. Among the routes left, the longest path prefix wins, whatever the order in the manifest.
   ``/api`` matches ``/api`` and ``/api/x``, never ``/apix``; ``/`` matches everything.
3. On a tie (same host, same prefix), a route written in the manifest beats an implicit one.

Implicit routes: every service answers at ``<name>.localhost`` (a host route with prefix ``/``).
Without any ``routes`` in the manifest (a Procfile), the ``web`` service (or else the first one)
also answers at ``/`` on every allowed host.

Paths are matched as :mod:`devstack.proxy.target` normalizes them (dot segments removed,
still percent-encoded but for unreserved characters; ``%2F`` is data, not a separator), and
route prefixes from the manifest are brought to the same form. What a service receives is the
path that was matched. :meth:`RouteTable.route` checks a request's target and Host and resolves
it: both lanes of the proxy ask it, so they decide alike.

Static routes are mounts: the URL path below the route's prefix names a file below the folder
(``path: /assets, static: public`` serves ``/assets/app.js`` from ``public/app.js``). Service
routes send the path unchanged unless ``strip_prefix`` is set, in which case the prefix is
removed (``/startup/x`` -> ``/x``) and sent along as ``X-Forwarded-Prefix``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from devstack.manifest.spec import StackSpec
from devstack.proxy.target import (
    BadRequest,
    RequestTarget,
    normalize_path,
    parse_host,
    parse_target,
)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
"""Hosts that always reach the proxy; together with ``*.localhost`` they are always allowed."""

DEFAULT_SERVICE_NAME = "web"

RESERVED_PREFIX = "/_devstack"
"""Paths the proxy answers itself on every allowed host, before any route."""


@dataclass(frozen=True)
class Target:
    """Where a matched request goes: at most one of ``service`` and ``static`` is set; neither
    for the proxy's own paths (:data:`RESERVED_PREFIX`)."""

    service: str | None = None
    static: Path | None = None
    strip_prefix: bool = False
    live_reload: bool = True
    """HTML pages answered here get the live-reload script (``live_reload`` of the route and,
    for a service, of the service)."""

    @property
    def is_reserved(self) -> bool:
        return self.service is None and self.static is None

    def describe(self) -> str:
        if self.service is not None:
            return f"service {self.service}"
        if self.static is not None:
            return f"files in {self.static}"
        return "devstack"


@dataclass(frozen=True)
class Route:
    host: str | None
    """Normalised host (lower case, no port), or ``None`` for any allowed host."""
    prefix: str
    """Normalised path prefix: starts with ``/``, no trailing slash unless it is ``/``."""
    target: Target
    is_implicit: bool = False
    line: int | None = None

    def matches_path(self, path: str) -> bool:
        prefix = self.prefix
        if prefix == "/":
            return True
        return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")

    def describe(self) -> dict[str, str | int | None]:
        return {
            "host": self.host,
            "path": self.prefix,
            "target": self.target.describe(),
            "strip_prefix": self.target.strip_prefix,
            "line": self.line,
        }


@dataclass(frozen=True)
class Match:
    """A resolved request: the route, and the path to send on (or to look up under the folder)."""

    route: Route
    path: str
    """For a service: the path to send upstream. For a static route: the path below its root."""
    stripped_prefix: str | None = None
    """The prefix removed from the path, when it was (``X-Forwarded-Prefix``)."""

    @property
    def target(self) -> Target:
        return self.route.target


class Routed(NamedTuple):
    """A request whose target and Host were checked, and where it goes (a tuple: one is made
    per request on the fast lane)."""

    target: RequestTarget
    host: str
    """The normalized host: the absolute form's authority when there was one, else Host's."""
    is_allowed: bool
    """The host is one the proxy serves (:func:`is_allowed_host`)."""
    match: Match | None
    """``None`` when nothing matches, the host is not allowed, or the target is ``*``."""

    @property
    def upstream_path(self) -> str:
        """The path and query a service receives: the normalized path that was matched (minus
        the prefix of a route that strips it) and the query as sent."""
        assert self.match is not None
        query = self.target.query
        return self.match.path if query is None else f"{self.match.path}?{query}"


@functools.lru_cache(maxsize=512)
def normalize_host(host: str) -> str:
    """``Example.LOCALHOST:8443`` -> ``example.localhost``; ``[::1]:8443`` -> ``[::1]``: the form
    :func:`devstack.proxy.target.parse_host` gives. A bare IPv6 address (from the manifest) is
    bracketed; a value that is not ``host[:port]`` comes back lower-cased, so it never equals
    a valid host."""
    value = host.strip()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"
    try:
        return parse_host(value)
    except BadRequest:
        return value.lower()


_PREFIX_SAFE = "/%:@!$&'()*+,;=-._~"
"""Left as they are when a manifest prefix is percent-encoded (``%`` keeps its escapes)."""


def normalize_prefix(path: str | None) -> str:
    """A manifest path in the form requests are matched in: ``/Café/`` -> ``/Caf%C3%A9``."""
    if not path or path == "/":
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    path = normalize_path(quote(path, safe=_PREFIX_SAFE))
    return path.rstrip("/") or "/"


class RouteTable:
    """Routes sorted for lookup; build one with :meth:`from_spec` (or from routes in a test)."""

    def __init__(self, routes: Iterable[Route], *, extra_hosts: Iterable[str] = ()) -> None:
        order = sorted(routes, key=lambda r: (r.host is None, -len(r.prefix), r.is_implicit))
        self.routes: tuple[Route, ...] = tuple(order)
        by_host: dict[str, list[Route]] = {}
        for route in order:
            if route.host is not None:
                by_host.setdefault(route.host, []).append(route)
        self._by_host = {host: tuple(rs) for host, rs in by_host.items()}
        self._any_host = tuple(r for r in order if r.host is None)
        self.allowed_hosts: frozenset[str] = frozenset(
            {normalize_host(h) for h in extra_hosts} | set(self._by_host)
        )
        self._resolve_host = functools.lru_cache(maxsize=1024)(self._resolve_uncached)
        """``(normalized host, path) -> Match``, cached: matches are immutable, and the same
        paths come again and again."""

    def route(self, method: str, target: str, host: str | None) -> Routed:
        """Check the request-target and the Host header (``None`` when missing or repeated)
        and resolve the request. Raises :class:`devstack.proxy.target.BadRequest` for what
        the proxy refuses (400, 405, 414)."""
        checked = parse_target(method, target)
        if host is None:
            raise BadRequest(400, "the request needs exactly one Host header")
        name = parse_host(host)
        if checked.host is not None:
            name = checked.host  # the absolute form's authority wins (RFC 9112 section 3.2.2)
        if not self.is_allowed(name):
            return Routed(checked, name, False, None)
        match = None if checked.is_asterisk else self._resolve_host(name, checked.path)
        return Routed(checked, name, True, match)

    def is_allowed(self, name: str) -> bool:
        """``name`` (a normalized host) is one the proxy serves: see :func:`is_allowed_host`."""
        return name in LOOPBACK_NAMES or name.endswith(".localhost") or name in self.allowed_hosts

    @classmethod
    def from_spec(cls, spec: StackSpec) -> RouteTable:
        routes = [
            Route(
                host=normalize_host(r.host) if r.host else None,
                prefix=normalize_prefix(r.path),
                target=Target(
                    service=r.service,
                    static=_absolute(spec, r.static) if r.static is not None else None,
                    strip_prefix=r.strip_prefix,
                    live_reload=r.live_reload
                    and (r.service is None or spec.services[r.service].live_reload),
                ),
                line=r.line,
            )
            for r in spec.routes
        ]
        routes += [
            Route(
                host=f"{name}.localhost",
                prefix="/",
                target=Target(service=name, live_reload=service.live_reload),
                is_implicit=True,
            )
            for name, service in spec.services.items()
        ]
        if not spec.routes and spec.services:
            default = DEFAULT_SERVICE_NAME if DEFAULT_SERVICE_NAME in spec.services else None
            default = default or next(iter(spec.services))
            target = Target(service=default, live_reload=spec.services[default].live_reload)
            routes.append(Route(host=None, prefix="/", target=target, is_implicit=True))
        return cls(routes, extra_hosts=spec.proxy.hosts)

    def resolve(self, host: str, path: str) -> Match | None:
        """The route for a request to ``host`` (a Host header, port allowed) and ``path``
        (normalized by :func:`devstack.proxy.target.normalize_path`, without the query), or
        ``None`` when nothing matches."""
        return self._resolve_host(normalize_host(host), path)

    def _resolve_uncached(self, name: str, path: str) -> Match | None:
        if _RESERVED_ROUTE.matches_path(path):
            return Match(_RESERVED_ROUTE, path)
        for route in self._by_host.get(name, ()):
            if route.matches_path(path):
                return _match(route, path)
        for route in self._any_host:
            if route.matches_path(path):
                return _match(route, path)
        return None

    def describe(self) -> list[dict[str, str | int | None]]:
        """The routes in the order they are tried, for the 404 page and ``devstack routes``."""
        return [route.describe() for route in self.routes]


_RESERVED_ROUTE = Route(host=None, prefix=RESERVED_PREFIX, target=Target(), is_implicit=True)


def _match(route: Route, path: str) -> Match:
    strip = route.target.static is not None or route.target.strip_prefix
    if not strip or route.prefix == "/":
        return Match(route, path)
    rest = path[len(route.prefix) :] or "/"
    return Match(route, rest, stripped_prefix=route.prefix)


def _absolute(spec: StackSpec, folder: Path) -> Path:
    return folder if folder.is_absolute() else spec.root / folder


def certificate_hosts(spec: StackSpec) -> list[str]:
    """Every name the proxy's certificate must cover, without duplicates, in a stable order."""
    names = ["localhost", "127.0.0.1", "::1"]
    names += [f"{name}.localhost".lower() for name in spec.services]
    names += [normalize_host(r.host) for r in spec.routes if r.host]
    names += [normalize_host(h).strip("[]") for h in spec.proxy.hosts]
    return list(dict.fromkeys(names))


def is_allowed_host(host: str, table: RouteTable) -> bool:
    """True for loopback names, ``*.localhost``, route hosts and ``proxy.hosts`` entries.

    Anything else is refused before it reaches a service: a page on another site can point its
    own DNS name at 127.0.0.1 (DNS rebinding), but it cannot make the browser send our names.
    """
    try:
        name = parse_host(host)
    except BadRequest:
        return False
    return table.is_allowed(name)
