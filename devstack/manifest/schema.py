"""The shape of ``devstack.yaml``: YAML nodes -> spec dataclasses (the loader's "defaults" step).

As each value is read, its type is checked, its default is filled in when it is absent or empty,
relative paths are resolved against the manifest's folder, and the line of its key is kept in
:class:`~devstack.manifest.nodes.Loading` for the checks that look across entries (in
``devstack.manifest.loader``). The typed readers of single nodes are in
:mod:`devstack.manifest.nodes`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devstack.manifest.nodes import (
    Loading,
    describe,
    is_null,
    join_key,
    line_of,
    read_boolean,
    read_choice,
    read_integer,
    read_key,
    read_mapping,
    read_optional,
    read_port,
    read_seconds,
    read_string,
    read_strings,
    read_url_path,
    tag_of,
    yaml_bool,
)
from devstack.manifest.spec import (
    DEFAULT_STOP_TIMEOUT_SECONDS,
    DEFAULT_WATCH,
    HealthSpec,
    ManifestKind,
    ProxySpec,
    ReloadMode,
    RestartPolicy,
    RouteSpec,
    ServiceSpec,
    StackSpec,
)

TOP_KEYS = ("services", "proxy", "routes")
PROXY_KEYS = ("port", "enabled", "bind", "http_port", "hosts", "wait_seconds",
              "upstream_timeout_seconds")
SERVICE_KEYS = ("command", "cwd", "port", "env", "env_file", "depends_on", "restart",
                "stop_timeout_seconds", "health", "watch", "watch_ignore", "reload",
                "live_reload", "image")
HEALTH_KEYS = ("path", "interval_seconds", "timeout_seconds")
ROUTE_KEYS = ("path", "host", "service", "static", "strip_prefix", "live_reload")

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HOST_NAME = re.compile(r"[a-z0-9*_-][a-z0-9*_.-]*")
_NO_STRINGS: tuple[str, ...] = ()

_restart = read_choice(RestartPolicy)
_reload = read_choice(ReloadMode)


def _globs(ld: Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """A glob or a list of globs, relative to the service's ``cwd``, gitignore-style."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    values = []
    for index, item in enumerate(items):
        item_key = f"{key}[{index}]"
        if not (isinstance(item, ScalarNode) and tag_of(item) == "str"):
            ld.error(key, line_of(item), "expected a glob such as '*.py' or a list of globs "
                     f"(relative to the service's cwd), got {describe(item)}")
            continue
        ld.lines[item_key] = line_of(item)
        glob = str(item.value)
        if not glob.strip():
            ld.error(key, line_of(item), "expected a glob such as '*.py', got an empty string")
        elif ".." in PurePosixPath(glob).parts:
            ld.error(key, line_of(item), f"{glob!r} leaves the service's folder; globs are "
                     "relative to its cwd: set cwd to a folder that holds all it watches")
        else:
            values.append(glob)
    return tuple(values) if len(values) == len(items) else None


def _watch(ld: Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """``false`` (never reloaded by an edit), ``true`` (everything), or globs."""
    if isinstance(node, ScalarNode) and tag_of(node) == "bool":
        return DEFAULT_WATCH if yaml_bool(node) else ()
    if isinstance(node, ScalarNode) and tag_of(node) != "str":
        ld.error(key, line_of(node), "expected a glob such as '*.py', a list of globs "
                 f"(relative to the service's cwd) or false, got {describe(node)}")
        return None
    return _globs(ld, node, key)


def _env(ld: Loading, node: Node, key: str) -> dict[str, str] | None:
    """Numbers stay as written (``1.10`` is not ``1.1``); true and false are lower-cased."""
    entries = read_mapping(ld, node, key, None)
    if entries is None:
        return None
    env = {}
    for name, (_, value) in entries.items():
        if not name or "=" in name:
            ld.error(join_key(key, name), line_of(value), "expected a variable name without '='")
        elif isinstance(value, ScalarNode) and tag_of(value) in ("str", "int", "float"):
            env[name] = str(value.value)
        elif isinstance(value, ScalarNode) and tag_of(value) == "bool":
            text = str(value.value)
            env[name] = text.lower() if text.lower() in ("true", "false") else text
        else:
            ld.error(join_key(key, name), line_of(value), "expected a string, number or boolean "
                     f"(write \"\" for an empty value), got {describe(value)}")
    return env


def _health(ld: Loading, node: Node, key: str) -> HealthSpec | None:
    if isinstance(node, ScalarNode) and tag_of(node) == "bool":
        return HealthSpec(enabled=bool(yaml_bool(node)))
    if isinstance(node, ScalarNode) and tag_of(node) == "str" and node.value in ("tcp", "none"):
        return HealthSpec(enabled=node.value == "tcp")
    if isinstance(node, ScalarNode) and tag_of(node) == "str" and node.value.startswith("/"):
        return HealthSpec(path=node.value)
    if not isinstance(node, MappingNode):
        ld.error(key, line_of(node), "expected a path starting with '/', 'tcp', 'none', false "
                 f"or a mapping with {', '.join(HEALTH_KEYS)}, got {describe(node)}")
        return None
    entries = read_mapping(ld, node, key, HEALTH_KEYS)
    if entries is None:
        return None
    path = read_optional(ld, entries, key, "path", read_url_path)
    defaults = HealthSpec()
    return HealthSpec(
        path=path,
        interval_seconds=read_key(ld, entries, key, "interval_seconds", read_seconds,
                              defaults.interval_seconds),
        timeout_seconds=read_key(ld, entries, key, "timeout_seconds", read_seconds,
                             defaults.timeout_seconds),
    )


def _host(ld: Loading, key: str, line: int | None, host: str) -> str:
    if not _HOST_NAME.fullmatch(host.lower()):
        ld.error(key, line, "expected a host name such as 'app.localhost' "
                 f"(no scheme, port or path), got string {host!r}")
    return host.lower()


# --- the sections of devstack.yaml ------------------------------------------------------------


def nodes_to_spec(root: MappingNode, ld: Loading) -> StackSpec:
    """The manifest's top-level mapping -> StackSpec; problems are left in ``ld``."""
    top = read_mapping(ld, root, "", TOP_KEYS) or {}
    services: dict[str, ServiceSpec] = {}
    if "services" not in top:
        if "services" not in ld.guessed:
            ld.error("services", line_of(root),
                     "required key is missing; list the services to run under 'services:'")
    else:
        entries = read_mapping(ld, top["services"][1], "services", None)
        if entries == {}:
            ld.error("services", line_of(top["services"][0]),
                     "no services defined; add at least one under 'services:'")
        ld.declared.extend(entries or {})
        for name, (knode, vnode) in (entries or {}).items():
            service = _service(ld, name, knode, vnode)
            if service is not None:
                services[name] = service
    proxy = read_key(ld, top, "", "proxy", _proxy, ProxySpec())
    routes = []
    node = top["routes"][1] if "routes" in top else None
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            route = _route(ld, f"routes[{index}]", item)
            if route is not None:
                routes.append(route)
    elif node is not None and not is_null(node):
        ld.error("routes", line_of(node), f"expected a list of routes, got {describe(node)}")
    return StackSpec(ld.root / ld.shown.name, services, proxy, tuple(routes), ManifestKind.YAML)


def _service(ld: Loading, name: str, knode: Node, node: Node) -> ServiceSpec | None:
    key = f"services.{name}"
    line = line_of(knode)
    if not _SERVICE_NAME.fullmatch(name):
        ld.error(key, line, "invalid service name; use letters, digits, '_' and '-', "
                 "starting with a letter or digit")
    if isinstance(node, ScalarNode) and not is_null(node):
        ld.error(key, line, f"expected a mapping with at least 'command', got {describe(node)}")
        return None
    entries = read_mapping(ld, node, key, SERVICE_KEYS)
    if entries is None:
        return None
    command = read_key(ld, entries, key, "command", read_string, "")
    if not command.strip() and join_key(key, "command") not in ld.guessed:
        problem = "is empty" if "command" in entries else "is missing"
        ld.error(join_key(key, "command"), ld.line(join_key(key, "command")) or line,
                 f"{problem}; give the shell command that starts the service")
    env_files = read_key(ld, entries, key, "env_file", read_strings, _NO_STRINGS)
    return ServiceSpec(
        name=name,
        command=command,
        cwd=ld.root / Path(read_key(ld, entries, key, "cwd", read_string, "")).expanduser(),
        port=read_optional(ld, entries, key, "port", read_port),
        env=read_key(ld, entries, key, "env", _env, {}),
        env_files=tuple(ld.root / Path(file).expanduser() for file in env_files),
        depends_on=tuple(dict.fromkeys(read_key(ld, entries, key, "depends_on", read_strings,
                                            _NO_STRINGS))),
        restart=read_key(ld, entries, key, "restart", _restart, RestartPolicy.ON_FAILURE),
        stop_timeout_seconds=read_key(ld, entries, key, "stop_timeout_seconds", read_seconds,
                                  DEFAULT_STOP_TIMEOUT_SECONDS),
        health=read_key(ld, entries, key, "health", _health, HealthSpec()),
        watch=read_key(ld, entries, key, "watch", _watch, DEFAULT_WATCH),
        watch_ignore=read_key(ld, entries, key, "watch_ignore", _globs, _NO_STRINGS),
        reload=read_key(ld, entries, key, "reload", _reload, ReloadMode.RESTART),
        live_reload=read_key(ld, entries, key, "live_reload", read_boolean, True),
        image=read_optional(ld, entries, key, "image", read_string),
        line=line,
    )


def _read_proxy_port(ld: Loading, node: Node, key: str) -> int | None:
    """A port number, or 0: a free port picked when the proxy binds (like ``--port 0``)."""
    port = read_integer(ld, node, key)
    if port is not None and not 0 <= port <= 65535:
        ld.error(key, line_of(node), f"expected a port number from 1 to 65535 (or 0: any free "
                 f"port), got {port}")
        return None
    return port


def _proxy(ld: Loading, node: Node, key: str) -> ProxySpec | None:
    entries = read_mapping(ld, node, key, PROXY_KEYS)
    if entries is None:
        return None
    defaults = ProxySpec()
    bind = read_key(ld, entries, key, "bind", read_strings, defaults.bind)
    for index, address in enumerate(bind):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ld.error("proxy.bind", ld.line(f"proxy.bind[{index}]"),
                     f"expected an IP address such as 127.0.0.1 or ::1, got string {address!r}")
            continue
        if not ip.is_loopback:
            ld.warn("proxy.bind", ld.line(f"proxy.bind[{index}]"),
                    f"{address} is not a loopback address: other machines that can reach this "
                    "one can reach the stack too; keep the default (127.0.0.1, ::1) unless "
                    "you mean to share it")
    if not bind:
        ld.error("proxy.bind", ld.line("proxy.bind"), "expected at least one address")
    hosts = read_key(ld, entries, key, "hosts", read_strings, _NO_STRINGS)
    return ProxySpec(
        port=read_key(ld, entries, key, "port", _read_proxy_port, defaults.port),
        enabled=read_key(ld, entries, key, "enabled", read_boolean, defaults.enabled),
        bind=bind,
        http_port=read_optional(ld, entries, key, "http_port", read_port),
        hosts=tuple(_host(ld, "proxy.hosts", ld.line(f"proxy.hosts[{index}]"), host)
                    for index, host in enumerate(hosts)),
        wait_seconds=read_key(ld, entries, key, "wait_seconds", read_seconds,
                              defaults.wait_seconds),
        upstream_timeout_seconds=read_key(ld, entries, key, "upstream_timeout_seconds",
                                          read_seconds, defaults.upstream_timeout_seconds),
    )


def _route(ld: Loading, key: str, node: Node) -> RouteSpec | None:
    ld.lines[key] = line = line_of(node)
    entries = read_mapping(ld, node, key, ROUTE_KEYS)
    if entries is None:
        return None
    path = read_optional(ld, entries, key, "path", read_url_path)
    host = read_optional(ld, entries, key, "host", read_string)
    service = read_optional(ld, entries, key, "service", read_string)
    static = read_optional(ld, entries, key, "static", read_string)
    if (service is None) == (static is None):
        got = "both" if service is not None else "neither"
        ld.error(key, line, f"expected exactly one of 'service' or 'static', got {got}")
    if path is None and host is None:
        ld.error(key, line, "expected 'path', 'host' or both, to say which requests it takes")
    strip_prefix = read_key(ld, entries, key, "strip_prefix", read_boolean, False)
    if strip_prefix and path is None:
        ld.warn(join_key(key, "strip_prefix"), ld.line(join_key(key, "strip_prefix")),
                "has no effect without 'path'")
    return RouteSpec(
        path=None if path is None else path.rstrip("/") or "/",
        host=None if host is None else _host(ld, join_key(key, "host"),
                                             ld.line(join_key(key, "host")), host),
        service=service,
        static=None if static is None else ld.root / Path(static).expanduser(),
        strip_prefix=strip_prefix,
        live_reload=read_key(ld, entries, key, "live_reload", read_boolean, True),
        line=line,
    )
