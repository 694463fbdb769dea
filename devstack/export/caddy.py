"""The production Caddyfile for the manifest's routes: what ``devstack up`` serves locally, as
Caddy serves it.

One site block for every host (``--domain``, default ``{$DOMAIN:localhost}``: Caddy reads the
``DOMAIN`` environment variable when it loads the file), then one per host route's host. Caddy's
automatic HTTPS and its 80 -> 443 redirect do what devstack's certificate and redirect do.

Inside a site, the routes sit in a ``route`` block in the order devstack tries them (longest
prefix first, a host's own routes before the common ones): Caddy keeps a ``route`` block's
order as written, where it would otherwise sort ``handle_path`` before named matchers. Each
route is one ``handle`` (a named matcher on ``/p`` and ``/p/*``: ``/p`` and below, never
``/px``), or a pair of ``handle_path`` blocks on ``/p/*`` and ``/p`` where the prefix is
stripped, with ``X-Forwarded-Prefix`` sent as devstack sends it. A static route is ``root`` and
``file_server`` with no listings, ``index.html`` only, every dotfile hidden, and a 405 (with
``Allow``) for methods other than GET and HEAD, as devstack serves files. A site with no
route for ``/`` ends with a 404, as devstack answers.

The comments name each route (``routes[2]: /api -> service simon``); ``devstack import caddy``
reads the service names back from them.
"""

from __future__ import annotations

import re
from pathlib import Path

from devstack.export.document import Document
from devstack.export.options import (
    ExportOptions,
    check_names,
    on_target,
    relative_to_manifest,
    upstream,
)
from devstack.export.sites import Site, SiteRoute, host_under, sites
from devstack.manifest.spec import StackSpec

DOMAIN_PLACEHOLDER = "{$DOMAIN:localhost}"
FORWARDED_PREFIX = "X-Forwarded-Prefix"
INDEX_FILE = "index.html"
WRITE_MATCHER = "not_get_or_head"
HIDDEN = ".*"
"""A pattern without a slash: Caddy hides every path segment it matches (``.git/config`` too)."""

READ_ONLY = (
    f"@{WRITE_MATCHER} not method GET HEAD",
    f'header @{WRITE_MATCHER} Allow "GET, HEAD"',
    f"respond @{WRITE_MATCHER} 405",
)
"""Files answer only GET and HEAD, as devstack's do (Caddy's file_server would serve a POST)."""

_QUOTE_NEEDED = re.compile(r'[\s"{}#]')
_NOT_MATCHER_CHARACTER = re.compile(r"[^A-Za-z0-9_]+")


def render(spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    check_names(spec, options)
    lines = [
        f"# Caddyfile for {spec.manifest_path.name}, made by `devstack export caddy`: the routes",
        "# `devstack up` serves, served by Caddy.",
    ]
    blocks: dict[str, list[str]] = {}
    for site in sites(spec):
        address = _address(site.host, options.domain)
        blocks[address] = _site_block(spec, options, address, site)
    for block in blocks.values():
        lines += ["", *block]
    return (Document("Caddyfile", "\n".join(lines) + "\n"),)


def _address(host: str | None, domain: str | None) -> str:
    if domain is not None:
        return domain if host is None else host_under(host, domain)
    if host is None:
        return DOMAIN_PLACEHOLDER
    return host_under(host, DOMAIN_PLACEHOLDER)


def _site_block(spec: StackSpec, options: ExportOptions, address: str, site: Site) -> list[str]:
    body: list[str] = []
    matchers: set[str] = set()
    for route in site.routes:
        static = None if route.static is None else relative_to_manifest(spec, route.static)
        body += [f"# {route.describe(static)}", *_handle(spec, options, route, matchers)]
    if not site.has_catch_all:
        body += ["# no route for /: devstack answers 404", "handle {", "\trespond 404", "}"]
    return [f"{address} {{", "\troute {", *_indent(body, 2), "\t}", "}"]


def _handle(spec: StackSpec, options: ExportOptions, route: SiteRoute,
            matchers: set[str]) -> list[str]:
    inner = _service(spec, options, route) if route.service else _files(spec, options, route)
    prefix = _token(route.prefix)
    if route.prefix == "/":
        return ["handle {", *_indent(inner), "}"]
    if route.strips:
        return [f"handle_path {_token(route.prefix + '/*')} {{", *_indent(inner), "}",
                f"handle_path {prefix} {{", *_indent(inner), "}"]
    name = _matcher_name(route, matchers)
    return [f"@{name} path {prefix} {_token(route.prefix + '/*')}",
            f"handle @{name} {{", *_indent(inner), "}"]


def _service(spec: StackSpec, options: ExportOptions, route: SiteRoute) -> list[str]:
    assert route.service is not None
    address = upstream(spec, options, route.service)
    if not (route.strip_prefix and route.prefix != "/"):
        return [f"reverse_proxy {_token(address)}"]
    return [f"reverse_proxy {_token(address)} {{",
            f"\theader_up {FORWARDED_PREFIX} {_token(route.prefix)}", "}"]


def _files(spec: StackSpec, options: ExportOptions, route: SiteRoute) -> list[str]:
    assert route.static is not None
    folder = on_target(spec, options, Path(route.static))
    return [f"root * {_token(str(folder))}", *READ_ONLY, "file_server {", f"\thide {HIDDEN}",
            f"\tindex {INDEX_FILE}", "}"]


def _matcher_name(route: SiteRoute, taken: set[str]) -> str:
    name = _NOT_MATCHER_CHARACTER.sub("_", route.prefix.strip("/")).strip("_") or "route"
    if name in taken:
        name = f"{name}_{route.index}"
    taken.add(name)
    return name


def _token(value: str) -> str:
    """A Caddyfile token: quoted when it holds spaces, quotes, braces or ``#``."""
    if not value or _QUOTE_NEEDED.search(value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return value


def _indent(lines: list[str], depth: int = 1) -> list[str]:
    return ["\t" * depth + line for line in lines]
