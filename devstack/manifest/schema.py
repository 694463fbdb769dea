"""The shape of ``devstack.yaml``: YAML nodes -> spec dataclasses (the loader's "defaults" step).

As each value is read, its type is checked, its default is filled in when it is absent or empty,
relative paths are resolved against the manifest's folder, and the line of its key is kept in
:class:`Loading` for the checks that look across entries (in ``devstack.manifest.loader``).
Problems are collected rather than raised, so that one pass reports them all.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devstack.errors import ManifestError, ManifestErrors
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
                "live_reload")
HEALTH_KEYS = ("path", "interval_seconds", "timeout_seconds")
ROUTE_KEYS = ("path", "host", "service", "static", "strip_prefix", "live_reload")

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HOST_NAME = re.compile(r"[a-z0-9*_-][a-z0-9*_.-]*")
_YAML_TAG = "tag:yaml.org,2002:"
_KINDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
          "timestamp": "date"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_NO_STRINGS: tuple[str, ...] = ()

T = TypeVar("T")
E = TypeVar("E", bound=enum.StrEnum)
Entries = Mapping[str, tuple[Node, Node]]
"""A mapping's entries by name: (key node, value node)."""


@dataclass
class Loading:
    """What one load has learned so far: problems, warnings, and the line of every key."""

    shown: Path
    """The manifest's path as given, for messages."""
    root: Path
    """The manifest's folder, absolute: relative paths start here."""
    errors: list[ManifestError] = field(default_factory=list)
    notes: list[ManifestError] = field(default_factory=list)
    """Warnings, kept as errors that are not raised."""
    lines: dict[str, int] = field(default_factory=dict)
    """Line of each dotted key (``services.web.port``) and list item (``services.web.watch[1]``)."""
    declared: list[str] = field(default_factory=list)
    """Every service name in the manifest, even invalid ones, so references to them still work."""
    guessed: set[str] = field(default_factory=set)
    """Keys offered as "did you mean": not reported missing as well."""

    def error(self, key: str | None, line: int | None, message: str) -> None:
        self.errors.append(ManifestError(message, path=self.shown, line=line, key=key))

    def warn(self, key: str | None, line: int | None, message: str) -> None:
        self.notes.append(ManifestError(message, path=self.shown, line=line, key=key))

    @property
    def warnings(self) -> tuple[str, ...]:
        """The warnings, sorted by line, each formatted like an error."""
        return tuple(note.format() for note in sorted(self.notes, key=lambda n: n.line or 0))

    def line(self, key: str) -> int | None:
        return self.lines.get(key)

    def raise_errors(self) -> None:
        """Raise what was found: one ManifestError, or ManifestErrors sorted by line."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ManifestErrors(sorted(self.errors, key=lambda e: e.line or 0))


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and _tag(node) == "null"


def describe(node: Node) -> str:
    """``string 'abc'``, ``integer 5``, ``boolean true``, ``null``, ``a list``, ``a mapping``."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = _tag(node)
    if tag == "null":
        return "null"
    if tag in ("str", "timestamp"):
        return f"{_KINDS[tag]} {node.value!r}"
    if tag in _KINDS:
        return f"{_KINDS[tag]} {node.value}"
    return f"a value tagged {node.tag} ({node.value!r})"


def suggestion(word: str, choices: Sequence[str], plural: str) -> str:
    """``did you mean 'x'?`` when a choice is close, else the list of choices."""
    close = _close(word, choices)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{plural} are {', '.join(choices)}" if choices else f"there are no {plural}"


def _close(word: str, choices: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


def _tag(node: Node) -> str:
    return str(node.tag).removeprefix(_YAML_TAG)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --- typed reading of nodes -------------------------------------------------------------------


def _mapping(ld: Loading, node: Node, key: str, allowed: Sequence[str] | None) -> Entries | None:
    """The entries of a mapping node (null reads as empty); records each key's line and reports
    duplicate keys and, unless ``allowed`` is None, unknown ones. ``<<: *anchor`` merges work."""
    if is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        ld.error(key, line_of(node), f"expected a mapping, got {describe(node)}")
        return None
    first_lines: dict[str, int] = {}
    for knode, _ in node.value:
        name = knode.value if isinstance(knode, ScalarNode) and knode.value != "<<" else None
        if name in first_lines:
            ld.error(_join(key, name), line_of(knode),
                     f"duplicate key (first on line {first_lines[name]})")
        elif name is not None:
            first_lines[name] = line_of(knode)
    try:
        _CONSTRUCTOR.flatten_mapping(node)
    except yaml.MarkedYAMLError as exc:
        ld.error(key, line_of(node), f"cannot merge: {exc.problem}")
        return None
    entries: dict[str, tuple[Node, Node]] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode):
            ld.error(key, line_of(knode), f"expected a plain name as key, got {describe(knode)}")
            continue
        name = str(knode.value)
        if allowed is not None and name not in allowed and not _is_extension(key, name):
            hint = suggestion(name, allowed, "valid keys")
            ld.error(_join(key, name), line_of(knode), f"unknown key; {hint}")
            ld.guessed.update(_join(key, close) for close in _close(name, allowed))
            continue
        ld.lines[_join(key, name)] = line_of(knode)
        entries[name] = (knode, vnode)
    return entries


def _is_extension(key: str, name: str) -> bool:
    """Top-level ``x-...`` keys are ignored (as in Compose files): a home for YAML anchors."""
    return not key and name.startswith("x-")


def _optional(
    ld: Loading,
    entries: Entries,
    key: str,
    name: str,
    read: Callable[[Loading, Node, str], T | None],
) -> T | None:
    """Read entry ``name`` with ``read``: None when it is absent, empty or invalid."""
    if name not in entries or is_null(entries[name][1]):
        return None
    return read(ld, entries[name][1], _join(key, name))


def _get(
    ld: Loading,
    entries: Entries,
    key: str,
    name: str,
    read: Callable[[Loading, Node, str], T | None],
    default: T,
) -> T:
    """Read entry ``name`` with ``read``: ``default`` when it is absent, empty or invalid."""
    value = _optional(ld, entries, key, name, read)
    return default if value is None else value


def _scalar(ld: Loading, node: Node, key: str, tag: str, expected: str) -> ScalarNode | None:
    if isinstance(node, ScalarNode) and _tag(node) == tag:
        return node
    ld.error(key, line_of(node), f"expected {expected}, got {describe(node)}")
    return None


def _string(ld: Loading, node: Node, key: str) -> str | None:
    scalar = _scalar(ld, node, key, "str", "a string")
    return None if scalar is None else str(scalar.value)


def _boolean(ld: Loading, node: Node, key: str) -> bool | None:
    scalar = _scalar(ld, node, key, "bool", "true or false")
    return None if scalar is None else bool(_CONSTRUCTOR.construct_yaml_bool(scalar))


def _integer(ld: Loading, node: Node, key: str) -> int | None:
    scalar = _scalar(ld, node, key, "int", "an integer")
    return None if scalar is None else int(_CONSTRUCTOR.construct_yaml_int(scalar))


def _port(ld: Loading, node: Node, key: str) -> int | None:
    port = _integer(ld, node, key)
    if port is not None and not 1 <= port <= 65535:
        ld.error(key, line_of(node), f"expected a port number from 1 to 65535, got {port}")
        return None
    return port


def _seconds(ld: Loading, node: Node, key: str) -> float | None:
    if isinstance(node, ScalarNode) and _tag(node) in ("int", "float"):
        value = float(_CONSTRUCTOR.construct_yaml_float(node))
        if math.isfinite(value) and value > 0:
            return value
    ld.error(key, line_of(node), f"expected a number of seconds above 0, got {describe(node)}")
    return None


def _strings(ld: Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """A string or a list of strings; records the line of each item as ``key[i]``."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    values = []
    for index, item in enumerate(items):
        scalar = _scalar(ld, item, key, "str", "a string or a list of strings")
        if scalar is not None:
            ld.lines[f"{key}[{index}]"] = line_of(item)
            values.append(str(scalar.value))
    return tuple(values) if len(values) == len(items) else None


def _choice(kind: type[E]) -> Callable[[Loading, Node, str], E | None]:
    """A reader for one of the values of the enum ``kind`` (``restart``, ``reload``)."""

    def read(ld: Loading, node: Node, key: str) -> E | None:
        choices = [member.value for member in kind]
        text = node.value if isinstance(node, ScalarNode) and _tag(node) == "str" else None
        if text in choices:
            return kind(text)
        close = _close(text, choices) if text else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        expected = f"expected one of {', '.join(choices)}"
        ld.error(key, line_of(node), f"{expected}, got {describe(node)}{hint}")
        return None

    return read


_restart = _choice(RestartPolicy)
_reload = _choice(ReloadMode)


def _globs(ld: Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """A glob or a list of globs, relative to the service's ``cwd``, gitignore-style."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    values = []
    for index, item in enumerate(items):
        item_key = f"{key}[{index}]"
        if not (isinstance(item, ScalarNode) and _tag(item) == "str"):
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
    if isinstance(node, ScalarNode) and _tag(node) == "bool":
        return DEFAULT_WATCH if _CONSTRUCTOR.construct_yaml_bool(node) else ()
    if isinstance(node, ScalarNode) and _tag(node) != "str":
        ld.error(key, line_of(node), "expected a glob such as '*.py', a list of globs "
                 f"(relative to the service's cwd) or false, got {describe(node)}")
        return None
    return _globs(ld, node, key)


def _env(ld: Loading, node: Node, key: str) -> dict[str, str] | None:
    """Numbers stay as written (``1.10`` is not ``1.1``); true and false are lower-cased."""
    entries = _mapping(ld, node, key, None)
    if entries is None:
        return None
    env = {}
    for name, (_, value) in entries.items():
        if not name or "=" in name:
            ld.error(_join(key, name), line_of(value), "expected a variable name without '='")
        elif isinstance(value, ScalarNode) and _tag(value) in ("str", "int", "float"):
            env[name] = str(value.value)
        elif isinstance(value, ScalarNode) and _tag(value) == "bool":
            text = str(value.value)
            env[name] = text.lower() if text.lower() in ("true", "false") else text
        else:
            ld.error(_join(key, name), line_of(value), "expected a string, number or boolean "
                     f"(write \"\" for an empty value), got {describe(value)}")
    return env


def _health(ld: Loading, node: Node, key: str) -> HealthSpec | None:
    if isinstance(node, ScalarNode) and _tag(node) == "bool":
        return HealthSpec(enabled=bool(_CONSTRUCTOR.construct_yaml_bool(node)))
    if isinstance(node, ScalarNode) and _tag(node) == "str" and node.value in ("tcp", "none"):
        return HealthSpec(enabled=node.value == "tcp")
    if isinstance(node, ScalarNode) and _tag(node) == "str" and node.value.startswith("/"):
        return HealthSpec(path=node.value)
    if not isinstance(node, MappingNode):
        ld.error(key, line_of(node), "expected a path starting with '/', 'tcp', 'none', false "
                 f"or a mapping with {', '.join(HEALTH_KEYS)}, got {describe(node)}")
        return None
    entries = _mapping(ld, node, key, HEALTH_KEYS)
    if entries is None:
        return None
    path = _optional(ld, entries, key, "path", _string)
    if path is not None and not path.startswith("/"):
        ld.error(_join(key, "path"), ld.line(_join(key, "path")),
                 f"expected a path starting with '/', got string {path!r}")
    defaults = HealthSpec()
    return HealthSpec(
        path=path,
        interval_seconds=_get(ld, entries, key, "interval_seconds", _seconds,
                              defaults.interval_seconds),
        timeout_seconds=_get(ld, entries, key, "timeout_seconds", _seconds,
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
    top = _mapping(ld, root, "", TOP_KEYS) or {}
    services: dict[str, ServiceSpec] = {}
    if "services" not in top:
        if "services" not in ld.guessed:
            ld.error("services", line_of(root),
                     "required key is missing; list the services to run under 'services:'")
    else:
        entries = _mapping(ld, top["services"][1], "services", None)
        if entries == {}:
            ld.error("services", line_of(top["services"][0]),
                     "no services defined; add at least one under 'services:'")
        ld.declared.extend(entries or {})
        for name, (knode, vnode) in (entries or {}).items():
            service = _service(ld, name, knode, vnode)
            if service is not None:
                services[name] = service
    proxy = _get(ld, top, "", "proxy", _proxy, ProxySpec())
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
    entries = _mapping(ld, node, key, SERVICE_KEYS)
    if entries is None:
        return None
    command = _get(ld, entries, key, "command", _string, "")
    if not command.strip() and _join(key, "command") not in ld.guessed:
        problem = "is empty" if "command" in entries else "is missing"
        ld.error(_join(key, "command"), ld.line(_join(key, "command")) or line,
                 f"{problem}; give the shell command that starts the service")
    env_files = _get(ld, entries, key, "env_file", _strings, _NO_STRINGS)
    return ServiceSpec(
        name=name,
        command=command,
        cwd=ld.root / Path(_get(ld, entries, key, "cwd", _string, "")).expanduser(),
        port=_optional(ld, entries, key, "port", _port),
        env=_get(ld, entries, key, "env", _env, {}),
        env_files=tuple(ld.root / Path(file).expanduser() for file in env_files),
        depends_on=tuple(dict.fromkeys(_get(ld, entries, key, "depends_on", _strings,
                                            _NO_STRINGS))),
        restart=_get(ld, entries, key, "restart", _restart, RestartPolicy.ON_FAILURE),
        stop_timeout_seconds=_get(ld, entries, key, "stop_timeout_seconds", _seconds,
                                  DEFAULT_STOP_TIMEOUT_SECONDS),
        health=_get(ld, entries, key, "health", _health, HealthSpec()),
        watch=_get(ld, entries, key, "watch", _watch, DEFAULT_WATCH),
        watch_ignore=_get(ld, entries, key, "watch_ignore", _globs, _NO_STRINGS),
        reload=_get(ld, entries, key, "reload", _reload, ReloadMode.RESTART),
        live_reload=_get(ld, entries, key, "live_reload", _boolean, True),
        line=line,
    )


def _proxy(ld: Loading, node: Node, key: str) -> ProxySpec | None:
    entries = _mapping(ld, node, key, PROXY_KEYS)
    if entries is None:
        return None
    defaults = ProxySpec()
    bind = _get(ld, entries, key, "bind", _strings, defaults.bind)
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
    hosts = _get(ld, entries, key, "hosts", _strings, _NO_STRINGS)
    return ProxySpec(
        port=_get(ld, entries, key, "port", _port, defaults.port),
        enabled=_get(ld, entries, key, "enabled", _boolean, defaults.enabled),
        bind=bind,
        http_port=_optional(ld, entries, key, "http_port", _port),
        hosts=tuple(_host(ld, "proxy.hosts", ld.line(f"proxy.hosts[{index}]"), host)
                    for index, host in enumerate(hosts)),
        wait_seconds=_get(ld, entries, key, "wait_seconds", _seconds, defaults.wait_seconds),
        upstream_timeout_seconds=_get(ld, entries, key, "upstream_timeout_seconds", _seconds,
                                      defaults.upstream_timeout_seconds),
    )


def _route(ld: Loading, key: str, node: Node) -> RouteSpec | None:
    ld.lines[key] = line = line_of(node)
    entries = _mapping(ld, node, key, ROUTE_KEYS)
    if entries is None:
        return None
    path = _optional(ld, entries, key, "path", _string)
    if path is not None and not path.startswith("/"):
        ld.error(_join(key, "path"), ld.line(_join(key, "path")),
                 f"expected a path starting with '/', got string {path!r}")
    host = _optional(ld, entries, key, "host", _string)
    service = _optional(ld, entries, key, "service", _string)
    static = _optional(ld, entries, key, "static", _string)
    if (service is None) == (static is None):
        got = "both" if service is not None else "neither"
        ld.error(key, line, f"expected exactly one of 'service' or 'static', got {got}")
    if path is None and host is None:
        ld.error(key, line, "expected 'path', 'host' or both, to say which requests it takes")
    strip_prefix = _get(ld, entries, key, "strip_prefix", _boolean, False)
    if strip_prefix and path is None:
        ld.warn(_join(key, "strip_prefix"), ld.line(_join(key, "strip_prefix")),
                "has no effect without 'path'")
    return RouteSpec(
        path=None if path is None else path.rstrip("/") or "/",
        host=None if host is None else _host(ld, _join(key, "host"), ld.line(_join(key, "host")),
                                             host),
        service=service,
        static=None if static is None else ld.root / Path(static).expanduser(),
        strip_prefix=strip_prefix,
        live_reload=_get(ld, entries, key, "live_reload", _boolean, True),
        line=line,
    )
