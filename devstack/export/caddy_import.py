"""``devstack import caddy``: the routes of a Caddyfile as a ``devstack.yaml``, with a
placeholder service for every upstream.

The subset read: site blocks (the first is the main site, for every host; each other one is a
host route: ``x.<main address>`` becomes ``x.localhost``), ``route`` blocks (flattened),
``handle`` with no matcher, a path (``/p``, ``/p/*``, ``/p*``) or a named ``path`` matcher,
``handle_path``, ``reverse_proxy`` (its first upstream; ``header_up X-Forwarded-Prefix`` is
what ``strip_prefix`` sends anyway), ``root`` with ``file_server`` (``hide`` and ``index``, and
a 405 for methods other than GET and HEAD, are what devstack does anyway; a ``handle`` that
keeps its prefix serves the folder of that name under ``root``), and a site's closing
``respond 404`` (devstack's own answer).
Everything else is listed as not mapped, with its line, both on stderr and at the top of the
manifest written: nothing is dropped silently.

Service names come from the comments ``devstack export caddy`` writes
(``# routes[2]: /api -> service simon``); without them, from the upstream's host when it is not
a loopback name (``api:8000`` -> ``api``), else from the route's first path segment, else
``service-<port>``. A host route that repeats a route of the main site is left out: devstack's
host routes fall back to the common ones by themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from devstack.errors import ManifestError
from devstack.export.caddyfile import Directive, parse

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", ""})
FORWARDED_PREFIX = "x-forwarded-prefix"
_ROUTE_COMMENT = re.compile(
    r"(?:routes\[\d+\]|the implicit route): (/.*?) -> service ([A-Za-z0-9][A-Za-z0-9_-]*)")
_NOT_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_-]+")
_HANDLERS = ("reverse_proxy", "file_server", "root")
READ_ONLY_MATCHER = ["not", "method", "GET", "HEAD"]


@dataclass(frozen=True)
class ImportedRoute:
    host: str | None
    path: str
    service: str | None = None
    static: str | None = None
    strip_prefix: bool = False

    @property
    def target(self) -> tuple[str, str | None, str | None, bool]:
        return (self.path, self.service, self.static, self.strip_prefix)


@dataclass(frozen=True)
class ImportResult:
    manifest: str
    unmapped: tuple[str, ...]
    """``Caddyfile:12: encode gzip: not mapped (...)``, one per line left out."""
    routes: tuple[ImportedRoute, ...]
    services: dict[str, str]
    """Service name -> the upstream it came from (``127.0.0.1:3000``)."""

    @property
    def summary(self) -> str:
        return (f"{len(self.services)} placeholder service(s), {len(self.routes)} route(s), "
                f"{len(self.unmapped)} line(s) not mapped")


@dataclass
class _Reader:
    path: Path
    root: str | None
    unmapped: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    """name -> upstream"""
    routes: list[ImportedRoute] = field(default_factory=list)
    read_only: set[str] = field(default_factory=set)
    """Matchers ``not method GET HEAD``: the 405 guard devstack's files have anyway."""

    def skip(self, directive: Directive, why: str) -> None:
        self.unmapped.append(f"{self.path.name}:{directive.line}: {directive.text}: not mapped "
                             f"({why})")


def import_caddyfile(text: str, path: Path, *, root: str | None = None) -> ImportResult:
    reader = _Reader(path, root)
    entries = parse(text, path)
    sites = [entry for entry in entries if _is_site(entry)]
    for entry in entries:
        if not _is_site(entry):
            what = "global options" if entry.name == "{" else "a snippet or a named route"
            reader.skip(entry, f"{what}: devstack has no equivalent")
    if not sites:
        raise ManifestError("no site block: expected at least one 'ADDRESS {' block with "
                            "handle, handle_path, reverse_proxy or file_server", path=path)
    addresses = [_address(reader, site) for site in sites]
    for site, address in zip(sites, addresses, strict=True):
        host = None if site is sites[0] else _local_host(address, addresses[0])
        for route in _site(reader, site, host):
            _add(reader, route)
    _drop_inherited(reader)
    manifest = _manifest_text(reader)
    return ImportResult(manifest, tuple(reader.unmapped), tuple(reader.routes),
                        dict(reader.services))


def _is_site(entry: Directive) -> bool:
    return entry.block is not None and entry.name != "{" and not entry.name.startswith(("(", "&("))


def _address(reader: _Reader, site: Directive) -> str:
    addresses = [a.rstrip(",") for a in [site.name, *site.args] if a.rstrip(",")]
    if len(addresses) > 1:
        reader.skip(site, f"only its first address ({addresses[0]}) is read")
    address = re.sub(r"^[a-z]+://", "", addresses[0])
    return address.split("/", 1)[0]


def _without_port(address: str) -> str:
    head, sep, tail = address.rpartition(":")
    return head if sep and tail.isdigit() else address


def _local_host(address: str, main: str) -> str:
    host, main_host = _without_port(address).lower(), _without_port(main).lower()
    if host.endswith("." + main_host):
        return host[: -len(main_host)] + "localhost"
    return host


def _site(reader: _Reader, site: Directive, host: str | None) -> list[ImportedRoute]:
    routes: list[ImportedRoute] = []
    matchers: dict[str, Directive] = {}
    loose: list[Directive] = []
    for directive in _flattened(site.block or []):
        if directive.name.startswith("@"):
            _matcher(reader, directive, matchers)
        elif directive.name in ("handle", "handle_path"):
            route = _handle(reader, directive, host, matchers)
            if route is not None:
                routes.append(route)
        elif directive.name in _HANDLERS:
            loose.append(directive)
        else:
            reader.skip(directive, "outside the subset devstack reads")
    routes += _loose(reader, loose, host)
    return routes


def _loose(reader: _Reader, loose: list[Directive], host: str | None) -> list[ImportedRoute]:
    """Handlers written straight in the site: each ``reverse_proxy [/p/*] UPSTREAM`` is a route
    of its own; ``root`` and ``file_server`` together serve ``/``."""
    routes = []
    for proxy in (d for d in loose if d.name == "reverse_proxy"):
        matcher = proxy.args[0] if proxy.args and proxy.args[0].startswith("/") else "/"
        prefix = _prefix([matcher])
        if prefix is None:
            reader.skip(proxy, "its path is not a prefix")
            continue
        route = _body(reader, [proxy], host, prefix, strip=False, comments=proxy.comments)
        if route is not None:
            routes.append(route)
    files = [d for d in loose if d.name != "reverse_proxy"]
    if files:
        route = _body(reader, files, host, "/", strip=False, comments=files[0].comments)
        if route is not None:
            routes.append(route)
    return routes


def _flattened(directives: list[Directive]) -> list[Directive]:
    flat: list[Directive] = []
    for directive in directives:
        if directive.name == "route" and not directive.args and directive.block is not None:
            flat += _flattened(directive.block)
        else:
            flat.append(directive)
    return flat


def _matcher(reader: _Reader, directive: Directive, matchers: dict[str, Directive]) -> None:
    """A path matcher, kept as a directive whose arguments are its paths."""
    name = directive.name[1:]
    if directive.args == READ_ONLY_MATCHER:
        reader.read_only.add(name)
        return
    if directive.block is None and directive.args[:1] == ["path"]:
        paths = directive.args[1:]
    elif directive.block is not None and all(d.name == "path" for d in directive.block):
        paths = [p for d in directive.block for p in d.args]
    else:
        reader.skip(directive, "only path matchers map to routes")
        return
    matchers[name] = Directive(name, paths, directive.line, comments=directive.comments)


def _handle(reader: _Reader, directive: Directive, host: str | None,
            matchers: dict[str, Directive]) -> ImportedRoute | None:
    matcher = directive.args[0] if directive.args else None
    comments = directive.comments
    if len(directive.args) > 1:
        reader.skip(directive, "one matcher expected")
        return None
    if matcher is None:
        paths = ["/"]
    elif matcher.startswith("@"):
        if matcher[1:] not in matchers:
            reader.skip(directive, f"matcher {matcher} is not a path matcher defined before it")
            return None
        paths = matchers[matcher[1:]].args
        comments = matchers[matcher[1:]].comments + comments
    else:
        paths = [matcher]
    prefix = _prefix(paths)
    if prefix is None:
        reader.skip(directive, f"paths {' '.join(paths)} are not one prefix (/p and /p/*)")
        return None
    if directive.name == "handle_path" and prefix == "/":
        reader.skip(directive, "handle_path needs a path prefix")
        return None
    return _body(reader, directive.block or [], host, prefix,
                 strip=directive.name == "handle_path", comments=comments)


def _prefix(paths: list[str]) -> str | None:
    """``/p`` for paths that all name the prefix ``/p`` (``/p``, ``/p/*``, ``/p*``)."""
    found = {path.removesuffix("*").rstrip("/") or "/" for path in paths}
    if len(found) != 1 or not next(iter(found)).startswith("/"):
        return None
    return found.pop()


def _body(reader: _Reader, body: list[Directive], host: str | None, prefix: str, *,
          strip: bool, comments: list[str]) -> ImportedRoute | None:
    proxy = next((d for d in body if d.name == "reverse_proxy"), None)
    root = next((d for d in body if d.name == "root"), None)
    files = next((d for d in body if d.name == "file_server"), None)
    for directive in body:
        if directive.name.startswith("@"):
            _matcher(reader, directive, {})
        elif directive not in (proxy, root, files) and not _is_default_404(directive) \
                and not _is_read_only_guard(reader, directive):
            reader.skip(directive, "outside the subset devstack reads")
    if proxy is not None:
        for extra in (root, files):
            if extra is not None:
                reader.skip(extra, "this block already proxies")
        return _proxied(reader, proxy, host, prefix, strip, comments)
    if files is not None and root is not None:
        return _served(reader, root, files, host, prefix, strip)
    alone = files if files is not None else root
    if alone is not None:
        reader.skip(alone, "file_server needs a root (and a root a file_server)")
    return None


def _is_default_404(directive: Directive) -> bool:
    return directive.name == "respond" and directive.args == ["404"]


def _is_read_only_guard(reader: _Reader, directive: Directive) -> bool:
    """``header @m Allow ...`` and ``respond @m 405`` under a ``not method GET HEAD`` matcher."""
    return (directive.name in ("header", "respond") and bool(directive.args)
            and directive.args[0][1:] in reader.read_only)


def _proxied(reader: _Reader, proxy: Directive, host: str | None, prefix: str, strip: bool,
             comments: list[str]) -> ImportedRoute | None:
    args = list(proxy.args)
    if args and (args[0].startswith("/") or args[0].startswith("@") or args[0] == "*"):
        args = args[1:]  # its own matcher: the handle's path says the same
    if not args:
        reader.skip(proxy, "no upstream")
        return None
    if len(args) > 1:
        reader.skip(proxy, f"only its first upstream ({args[0]}) is used")
    for sub in proxy.block or []:
        if not (sub.name == "header_up" and sub.args[:1] and sub.args[0].lower()
                == FORWARDED_PREFIX):
            reader.skip(sub, "reverse_proxy options are not mapped")
    upstream = re.sub(r"^[a-z]+://", "", args[0])
    name = _service_name(reader, upstream, prefix, comments)
    return ImportedRoute(host, prefix, service=name, strip_prefix=strip)


def _service_name(reader: _Reader, upstream: str, prefix: str, comments: list[str]) -> str:
    for comment in comments:
        match = _ROUTE_COMMENT.search(comment)
        if match and match.group(1) == prefix:
            name = match.group(2)
            break
    else:
        name = next((n for n, u in reader.services.items() if u == upstream), "")
        host = _without_port(upstream).strip("[]").lower()
        segment = prefix.strip("/").split("/", 1)[0]
        port = upstream.rpartition(":")[2]
        if not name:
            raw = segment if host in LOOPBACK else host.split(".", 1)[0]
            name = _NOT_NAME_CHARACTER.sub("-", raw).strip("-_") or f"service-{port}"
    reader.services.setdefault(name, upstream)
    return name


def _served(reader: _Reader, root: Directive, files: Directive, host: str | None,
            prefix: str, strip: bool) -> ImportedRoute | None:
    """A static route: devstack mounts its folder at the prefix, so a ``handle`` that keeps
    the prefix serves the folder of that name under ``root``."""
    args = root.args[1:] if root.args[:1] == ["*"] else root.args
    if len(args) != 1:
        reader.skip(root, "expected 'root * DIR'")
        return None
    if files.args:
        reader.skip(files, "file_server arguments are not mapped (devstack never lists folders)")
    for sub in files.block or []:
        if sub.name == "browse":
            reader.skip(sub, "devstack never lists folders")
        elif sub.name not in ("hide", "index"):
            reader.skip(sub, "file_server options are not mapped")
    folder = args[0] if strip or prefix == "/" else \
        str(PurePosixPath(args[0]) / prefix.lstrip("/"))
    return ImportedRoute(host, prefix, static=_static_folder(reader, folder))


def _static_folder(reader: _Reader, folder: str) -> str:
    if reader.root is not None:
        try:
            relative = PurePosixPath(folder).relative_to(PurePosixPath(reader.root))
        except ValueError:
            return folder
        return relative.as_posix() or "."
    return folder


def _add(reader: _Reader, route: ImportedRoute) -> None:
    for existing in reader.routes:
        if (existing.host, existing.path) == (route.host, route.path):
            if existing != route:
                reader.unmapped.append(f"{reader.path.name}: {route.path}: a second, different "
                                       "route for the same host and path: not mapped")
            return
    reader.routes.append(route)


def _drop_inherited(reader: _Reader) -> None:
    common = {r.target for r in reader.routes if r.host is None}
    reader.routes = [r for r in reader.routes if r.host is None or r.target not in common]


def _manifest_text(reader: _Reader) -> str:
    lines = [f"# devstack.yaml from {reader.path.name}, made by `devstack import caddy`.",
             "# The routes are the Caddyfile's; each service is a placeholder: give it its",
             "# command (and cwd), then run `devstack check`."]
    if reader.unmapped:
        lines.append("# Not mapped:")
        lines += [f"#   {line}" for line in reader.unmapped]
    lines.append("services:")
    for name, upstream in reader.services.items():
        lines.append(f"  {name}:")
        placeholder = f'echo "{name}: its command is still to be written in devstack.yaml"'
        lines.append(f"    command: {json.dumps(placeholder + ' && exit 1')}")
        port = upstream.rpartition(":")[2]
        if port.isdigit() and _without_port(upstream).strip("[]").lower() in LOOPBACK:
            lines.append(f"    port: {int(port)}")
        else:
            lines.append(f"    # upstream in the Caddyfile: {upstream}")
    if reader.routes:
        lines.append("routes:")
    for route in reader.routes:
        entries: list[tuple[str, str | bool | None]] = []
        if route.host is not None:
            entries.append(("host", route.host))
        if route.host is None or route.path != "/":
            entries.append(("path", route.path))
        if route.service is not None:
            entries.append(("service", route.service))
        else:
            entries.append(("static", route.static))
        if route.strip_prefix:
            entries.append(("strip_prefix", True))
        for position, (key, value) in enumerate(entries):
            lead = "  - " if position == 0 else "    "
            lines.append(f"{lead}{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"
