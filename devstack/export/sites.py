"""The routes of a manifest grouped by host, each group in the order devstack's proxy tries
them (``devstack.proxy.routing``): a host's own routes first, longest prefix first, then the
routes for every host, longest prefix first. A ``Site`` is what becomes one Caddy site block or
one Ingress rule.

Implicit routes: a manifest without ``routes`` sends ``/`` to ``web`` (or its first service), as
devstack does. The ``<name>.localhost`` host every service answers at under devstack is a
convenience of the laptop and is not exported.

Host names: ``x.localhost`` becomes ``x.<domain>`` under ``--domain`` (``localhost`` becomes the
domain itself); other names stay as written, with the domain's port when it has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from devstack.manifest.spec import RouteSpec, StackSpec

DEFAULT_SERVICE_NAME = "web"
LOCAL_SUFFIX = ".localhost"
LOCAL_NAME = "localhost"


@dataclass(frozen=True)
class SiteRoute:
    prefix: str
    """Starts with ``/``; no trailing slash unless it is ``/``."""
    service: str | None
    static: Path | None
    strip_prefix: bool
    index: int | None
    """Its place in the manifest's ``routes`` (``None``: the implicit route to ``/``)."""
    host: str | None = None

    @property
    def strips(self) -> bool:
        """The prefix is taken off the path: a static route's (files are found below it), or
        a service route's with ``strip_prefix``; never ``/``'s."""
        return self.prefix != "/" and (self.static is not None or self.strip_prefix)

    def describe(self, static: str | None = None) -> str:
        """``routes[2]: /api -> service simon``; ``static``: the folder as it should be shown."""
        where = f"routes[{self.index}]" if self.index is not None else "the implicit route"
        what = f"service {self.service}" if self.service else f"files in {static or self.static}"
        strip = ", prefix stripped" if self.strip_prefix and self.service else ""
        return f"{where}: {self.prefix} -> {what}{strip}"


@dataclass(frozen=True)
class Site:
    host: str | None
    """The manifest's host (lower case), or ``None``: every host."""
    routes: tuple[SiteRoute, ...]

    @property
    def has_catch_all(self) -> bool:
        return any(route.prefix == "/" for route in self.routes)


def site_routes(spec: StackSpec) -> list[SiteRoute]:
    routes = [_site_route(index, route) for index, route in enumerate(spec.routes)]
    if not spec.routes and spec.services:
        default = DEFAULT_SERVICE_NAME if DEFAULT_SERVICE_NAME in spec.services else \
            next(iter(spec.services))
        routes.append(SiteRoute("/", default, None, False, None))
    return routes


def sites(spec: StackSpec) -> tuple[Site, ...]:
    """The site for every host first (with no routes when there are none: every request to it
    gets a 404, as under devstack), then one per host route's host, in the manifest's order."""
    routes = site_routes(spec)
    common = _longest_first(r for r in routes if r.host is None)
    found = [Site(None, common)]
    hosts = dict.fromkeys(r.host for r in routes if r.host is not None)
    for host in hosts:
        own = _longest_first(r for r in routes if r.host == host)
        found.append(Site(host, _reachable(own + common)))
    return tuple(found)


def _reachable(routes: tuple[SiteRoute, ...]) -> tuple[SiteRoute, ...]:
    """Up to the first route for ``/``: nothing after it is ever tried."""
    for position, route in enumerate(routes):
        if route.prefix == "/":
            return routes[: position + 1]
    return routes


def _site_route(index: int, route: RouteSpec) -> SiteRoute:
    return SiteRoute(
        prefix=route.path or "/",
        service=route.service,
        static=route.static,
        strip_prefix=route.strip_prefix,
        index=index,
        host=route.host,
    )


def _longest_first(routes: Iterable[SiteRoute]) -> tuple[SiteRoute, ...]:
    # sorted() is stable: on equal prefixes the manifest's order stays (the loader refuses two
    # routes with the same host and path anyway).
    return tuple(sorted(routes, key=lambda r: -len(r.prefix)))


def host_under(host: str, domain: str, *, keep_port: bool = True) -> str:
    """``host`` as it is named in production under ``domain`` (see the module's docstring)."""
    name, _, port = domain.rpartition(":") if _has_port(domain) else (domain, "", "")
    suffix = f":{port}" if port and keep_port else ""
    if host == LOCAL_NAME:
        return f"{name}{suffix}"
    if host.endswith(LOCAL_SUFFIX):
        return f"{host[: -len(LOCAL_SUFFIX)]}.{name}{suffix}"
    return f"{host}{suffix}"


def _has_port(domain: str) -> bool:
    head, sep, tail = domain.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")
