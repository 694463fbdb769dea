"""``devstack.yaml`` or ``Procfile`` -> :class:`~devstack.config.StackSpec`, as a pipeline:

    read (bytes -> text) -> parse (text -> YAML nodes, with line numbers)
    -> defaults (nodes -> specs: types checked, defaults filled in, relative paths resolved)
    -> validate (across entries: ports, dependencies, routes, paths on disk)
    -> env files (each service's ``env_file`` merged under its ``env``)

Every problem is a :class:`~devstack.errors.ManifestError` that reads
``<file>:<line>: <key>: <what is wrong; what was expected>``, where ``<file>`` is the path as given
to :func:`load` (or as found by :func:`find_manifest`) and ``<key>`` is a dotted path such as
``services.simon.port`` or ``routes[0].service`` (list items count from 0). All problems of one
manifest are collected in one pass; more than one is raised as :class:`ManifestErrors`, sorted by
line. For example::

    devstack.yaml:4: services.simon.comand: unknown key; did you mean 'command'?
    devstack.yaml:5: services.simon.port: expected an integer, got string 'abc'
    devstack.yaml:9: services.api.depends_on: dependency cycle: api -> db -> api

Warnings use the same form. The only warning about a port is for ports below 1024::

    devstack.yaml:5: services.web.port: port 80 is reserved for HTTP (http); services should stay on ports above 1023
    devstack.yaml:5: services.web.port: port 999 is a privileged port (below 1024); services should stay on ports above 1023

(the name in parentheses comes from the system's services database, else a built-in table).

Reading rules worth knowing: a key with an empty value (``port:``) means its default; strings are
never taken for numbers (``port: "3000"`` is an error); ``env`` values are kept as written
(``1.10`` stays ``1.10``), booleans become ``true`` / ``false``; ``cwd``, ``env_file`` and
``static`` are relative to the manifest's folder, ``watch`` patterns to the service's ``cwd``.

Without a ``devstack.yaml`` a ``Procfile`` is read: one service per ``name: command`` line, all
running in the Procfile's folder with ``.env`` beside it (if any) as their environment. As no
ports are declared there, only ``web`` is probed for readiness (TCP, on the port it is given);
the others count as ready once started.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import yaml
from honcho import environ
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devstack.config import (
    DEFAULT_STOP_TIMEOUT_SECONDS,
    HealthSpec,
    ManifestKind,
    ProxySpec,
    RestartPolicy,
    RouteSpec,
    ServiceSpec,
    StackSpec,
)
from devstack.env import read_env_file, service_variable_prefix
from devstack.errors import ManifestError, ManifestErrors

logger = logging.getLogger(__name__)

YAML_NAMES = ("devstack.yaml", "devstack.yml")
PROCFILE_NAME = "Procfile"
DOTENV_NAME = ".env"

_TOP_KEYS = ("services", "proxy", "routes")
_PROXY_KEYS = ("port", "enabled", "bind", "http_port", "hosts", "wait_seconds",
               "upstream_timeout_seconds")
_SERVICE_KEYS = ("command", "cwd", "port", "env", "env_file", "depends_on", "restart",
                 "stop_timeout_seconds", "health", "watch")
_HEALTH_KEYS = ("path", "interval_seconds", "timeout_seconds")
_ROUTE_KEYS = ("path", "host", "service", "static", "strip_prefix")

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_HOST_NAME = re.compile(r"[a-z0-9*_-][a-z0-9*_.-]*")
_TAG = "tag:yaml.org,2002:"
_KINDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
          "timestamp": "date"}
_WELL_KNOWN_PORTS = {22: "ssh", 25: "smtp", 53: "domain", 80: "http", 443: "https"}
_PROTOCOL_NAMES = {"domain": "DNS"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()

T = TypeVar("T")


@dataclass(frozen=True)
class LoadResult:
    spec: StackSpec
    warnings: tuple[str, ...]
    """Problems that do not stop devstack, each formatted like an error (``file:line: key: ...``)."""


def find_manifest(cwd: Path) -> Path:
    """``cwd / "devstack.yaml"`` (or ``devstack.yml``), else ``cwd / "Procfile"``."""
    for name in (*YAML_NAMES, PROCFILE_NAME):
        if (cwd / name).exists():
            return cwd / name
    raise ManifestError(
        f"no manifest in {cwd.absolute()}: looked for {', '.join(YAML_NAMES)} and {PROCFILE_NAME}; "
        "create one there, or pass the manifest's path"
    )


def load(path: Path | None = None, *, cwd: Path | None = None) -> LoadResult:
    """Read, check and return the stack described by the manifest at ``path``.

    Without ``path`` the manifest is looked for in ``cwd`` (default: the current folder); a
    folder given as ``path`` is searched the same way. Messages name the file as given.
    """
    if path is None or path.is_dir():
        path = find_manifest(path if path is not None else cwd or Path())
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError("no such file; check the path", path=path) from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest: {exc.strerror or exc}", path=path) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})", path=path
        ) from exc
    result = load_text(text, path)
    shadowed = path.with_name(YAML_NAMES[1])
    if path.name == YAML_NAMES[0] and shadowed.exists():
        warning = f"{shadowed}: ignored, {path.name} beside it is used"
        result = replace(result, warnings=(*result.warnings, warning))
    return result


def load_text(text: str, path: Path) -> LoadResult:
    """Like :func:`load` for manifest text already in hand; ``path`` says where it lives (for
    messages and relative paths) and whether it is a ``Procfile``."""
    loading = _Loading(path, path.absolute().parent)
    if path.name == PROCFILE_NAME:
        spec = _procfile_to_spec(text, loading)
    else:
        spec = _nodes_to_spec(_parse_yaml(text, path), loading)
    _validate(spec, loading)
    loading.raise_errors()
    spec = _merge_env_files(spec, loading)
    loading.raise_errors()
    for warning in loading.warnings:
        logger.debug("manifest warning: %s", warning)
    return LoadResult(spec, tuple(loading.warnings))


@dataclass
class _Loading:
    """What one load has learned so far: problems, warnings, and the line of every key."""

    shown: Path
    root: Path
    errors: list[ManifestError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)
    """Every service name in the manifest, even invalid ones, so references to them still work."""

    def error(self, key: str | None, line: int | None, message: str) -> None:
        self.errors.append(ManifestError(message, path=self.shown, line=line, key=key))

    def warn(self, key: str | None, line: int | None, message: str) -> None:
        self.warnings.append(ManifestError(message, path=self.shown, line=line, key=key).format())

    def line(self, key: str) -> int | None:
        return self.lines.get(key)

    def raise_errors(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ManifestErrors(sorted(self.errors, key=lambda e: e.line or 0))


# --- parse ---------------------------------------------------------------------------------


def _parse_yaml(text: str, shown: Path) -> MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        problem = str(exc.problem)
        if problem.startswith("but ") and exc.context:
            problem = f"{exc.context}, {problem}"
        if exc.context == "while scanning an alias":
            problem += "; quote values that start with '*' or '&'"
        elif "'\\t'" in problem:
            problem += "; indent with spaces"
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ManifestError(f"invalid YAML: {problem}", path=shown, line=line) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}", path=shown) from exc
    if root is None or _is_null(root):
        raise ManifestError(
            "the manifest is empty; it needs a 'services' mapping with at least one service",
            path=shown,
        )
    if not isinstance(root, MappingNode):
        raise ManifestError(
            f"expected a mapping with a 'services' key at the top level, got {_describe(root)}",
            path=shown,
            line=_line_of(root),
        )
    return root


def _line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _tag(node: Node) -> str:
    return str(node.tag).removeprefix(_TAG)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and _tag(node) == "null"


def _describe(node: Node) -> str:
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


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _suggestion(word: str, choices: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{what} {', '.join(choices)}" if choices else f"there are no {what.split()[0]}"


# --- defaults: typed reading of nodes ---------------------------------------------------------


def _mapping(
    ld: _Loading, node: Node, key: str, allowed: Sequence[str] | None
) -> dict[str, tuple[Node, Node]] | None:
    """The entries of a mapping node by name (key node, value node); null reads as empty.
    Records each key's line; reports unknown and duplicate keys."""
    if _is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        ld.error(key, _line_of(node), f"expected a mapping, got {_describe(node)}")
        return None
    first_lines: dict[str, int] = {}
    for knode, _ in node.value:
        name = knode.value if isinstance(knode, ScalarNode) and knode.value != "<<" else None
        if name in first_lines:
            ld.error(_join(key, name), _line_of(knode),
                     f"duplicate key (first on line {first_lines[name]})")
        elif name is not None:
            first_lines[name] = _line_of(knode)
    try:
        _CONSTRUCTOR.flatten_mapping(node)  # resolves "<<: *anchor" merges
    except yaml.MarkedYAMLError as exc:
        ld.error(key, _line_of(node), f"cannot merge: {exc.problem}")
        return None
    entries: dict[str, tuple[Node, Node]] = {}
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode):
            ld.error(key, _line_of(knode), f"expected a plain name as key, got {_describe(knode)}")
            continue
        name = str(knode.value)
        if allowed is not None and name not in allowed:
            hint = _suggestion(name, allowed, "valid keys are")
            ld.error(_join(key, name), _line_of(knode), f"unknown key; {hint}")
            continue
        ld.lines[_join(key, name)] = _line_of(knode)
        entries[name] = (knode, vnode)
    return entries


def _get(
    ld: _Loading,
    entries: Mapping[str, tuple[Node, Node]],
    key: str,
    name: str,
    read: Callable[[_Loading, Node, str], T | None],
    default: T,
) -> T:
    """Read entry ``name`` with ``read``; absent, empty or invalid gives ``default``."""
    if name not in entries or _is_null(entries[name][1]):
        return default
    value = read(ld, entries[name][1], _join(key, name))
    return default if value is None else value


def _scalar(ld: _Loading, node: Node, key: str, tag: str, expected: str) -> str | None:
    if isinstance(node, ScalarNode) and _tag(node) == tag:
        return str(node.value)
    ld.error(key, _line_of(node), f"expected {expected}, got {_describe(node)}")
    return None


def _string(ld: _Loading, node: Node, key: str) -> str | None:
    return _scalar(ld, node, key, "str", "a string")


def _boolean(ld: _Loading, node: Node, key: str) -> bool | None:
    text = _scalar(ld, node, key, "bool", "true or false")
    return None if text is None else bool(_CONSTRUCTOR.construct_yaml_bool(node))


def _integer(ld: _Loading, node: Node, key: str) -> int | None:
    text = _scalar(ld, node, key, "int", "an integer")
    return None if text is None else int(_CONSTRUCTOR.construct_yaml_int(node))


def _port(ld: _Loading, node: Node, key: str) -> int | None:
    port = _integer(ld, node, key)
    if port is not None and not 1 <= port <= 65535:
        ld.error(key, _line_of(node), f"expected a port number from 1 to 65535, got {port}")
        return None
    return port


def _seconds(ld: _Loading, node: Node, key: str) -> float | None:
    if isinstance(node, ScalarNode) and _tag(node) in ("int", "float"):
        value = float(_CONSTRUCTOR.construct_yaml_float(node))
        if math.isfinite(value) and value > 0:
            return value
    ld.error(key, _line_of(node), f"expected a number of seconds above 0, got {_describe(node)}")
    return None


def _strings(ld: _Loading, node: Node, key: str) -> tuple[str, ...] | None:
    """A string or a list of strings; records the line of each item as ``key[i]``."""
    items = node.value if isinstance(node, SequenceNode) else [node]
    values = []
    for index, item in enumerate(items):
        text = _scalar(ld, item, key, "str", "a string or a list of strings")
        if text is not None:
            ld.lines[f"{key}[{index}]"] = _line_of(item)
            values.append(text)
    return tuple(values) if len(values) == len(items) else None


def _restart(ld: _Loading, node: Node, key: str) -> RestartPolicy | None:
    choices = [policy.value for policy in RestartPolicy]
    text = node.value if isinstance(node, ScalarNode) and _tag(node) == "str" else None
    if text in choices:
        return RestartPolicy(text)
    message = f"expected one of {', '.join(choices)}, got {_describe(node)}"
    close = difflib.get_close_matches(str(text), choices, n=1) if text else []
    ld.error(key, _line_of(node), message + (f"; did you mean '{close[0]}'?" if close else ""))
    return None


def _env(ld: _Loading, node: Node, key: str) -> dict[str, str] | None:
    entries = _mapping(ld, node, key, None)
    if entries is None:
        return None
    env = {}
    for name, (_, value) in entries.items():
        if not name or "=" in name:
            ld.error(_join(key, name), _line_of(value), "expected a variable name without '='")
        elif isinstance(value, ScalarNode) and _tag(value) in ("str", "int", "float"):
            env[name] = str(value.value)
        elif isinstance(value, ScalarNode) and _tag(value) == "bool":
            text = str(value.value)
            env[name] = text.lower() if text.lower() in ("true", "false") else text
        else:
            ld.error(_join(key, name), _line_of(value), "expected a string, number or boolean "
                     f"(write \"\" for an empty value), got {_describe(value)}")
    return env


def _health(ld: _Loading, node: Node, key: str) -> HealthSpec | None:
    if isinstance(node, ScalarNode) and _tag(node) == "bool":
        return HealthSpec(enabled=bool(_CONSTRUCTOR.construct_yaml_bool(node)))
    if isinstance(node, ScalarNode) and node.value in ("tcp", "none") and _tag(node) == "str":
        return HealthSpec(enabled=node.value == "tcp")
    if isinstance(node, ScalarNode) and _tag(node) == "str" and node.value.startswith("/"):
        return HealthSpec(path=node.value)
    if not isinstance(node, MappingNode):
        ld.error(key, _line_of(node), "expected a path starting with '/', 'tcp', 'none', false "
                 f"or a mapping with {', '.join(_HEALTH_KEYS)}, got {_describe(node)}")
        return None
    entries = _mapping(ld, node, key, _HEALTH_KEYS)
    if entries is None:
        return None
    path = _get(ld, entries, key, "path", _string, None)
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


def _nodes_to_spec(root: MappingNode, ld: _Loading) -> StackSpec:
    top = _mapping(ld, root, "", _TOP_KEYS) or {}
    services: dict[str, ServiceSpec] = {}
    if "services" not in top:
        ld.error("services", _line_of(root), "required key is missing; "
                 "list the services to run under 'services:'")
    else:
        entries = _mapping(ld, top["services"][1], "services", None)
        if entries == {}:
            ld.error("services", _line_of(top["services"][0]),
                     "no services defined; add at least one under 'services:'")
        ld.declared.extend(entries or {})
        for name, (knode, vnode) in (entries or {}).items():
            service = _node_to_service(ld, name, knode, vnode)
            if service is not None:
                services[name] = service
    proxy = _get(ld, top, "", "proxy", _proxy, ProxySpec())
    routes: list[RouteSpec] = []
    if "routes" in top and not _is_null(top["routes"][1]):
        node = top["routes"][1]
        if not isinstance(node, SequenceNode):
            ld.error("routes", _line_of(node), f"expected a list of routes, got {_describe(node)}")
        else:
            routes.extend(filter(None, (_node_to_route(ld, f"routes[{index}]", item)
                                        for index, item in enumerate(node.value))))
    return StackSpec(ld.root / ld.shown.name, services, proxy, tuple(routes), ManifestKind.YAML)


def _node_to_service(ld: _Loading, name: str, knode: Node, node: Node) -> ServiceSpec | None:
    key = f"services.{name}"
    line = _line_of(knode)
    if not _SERVICE_NAME.fullmatch(name):
        ld.error(key, line, "invalid service name; use letters, digits, '_' and '-', "
                 "starting with a letter or digit")
    if isinstance(node, ScalarNode) and not _is_null(node):
        ld.error(key, line, f"expected a mapping with at least 'command', got {_describe(node)}")
        return None
    entries = _mapping(ld, node, key, _SERVICE_KEYS)
    if entries is None:
        return None
    command = _get(ld, entries, key, "command", _string, "")
    if not command.strip():
        problem = "is empty" if "command" in entries else "is missing"
        ld.error(_join(key, "command"), ld.line(_join(key, "command")) or line,
                 f"{problem}; give the shell command that starts the service")
    cwd = _get(ld, entries, key, "cwd", _string, "")
    return ServiceSpec(
        name=name,
        command=command,
        cwd=ld.root / Path(cwd).expanduser(),
        port=_get(ld, entries, key, "port", _port, None),
        env=_get(ld, entries, key, "env", _env, {}),
        env_files=tuple(ld.root / Path(f).expanduser()
                        for f in _get(ld, entries, key, "env_file", _strings, ())),
        depends_on=tuple(dict.fromkeys(_get(ld, entries, key, "depends_on", _strings, ()))),
        restart=_get(ld, entries, key, "restart", _restart, RestartPolicy.ON_FAILURE),
        stop_timeout_seconds=_get(ld, entries, key, "stop_timeout_seconds", _seconds,
                                  DEFAULT_STOP_TIMEOUT_SECONDS),
        health=_get(ld, entries, key, "health", _health, HealthSpec()),
        watch=_get(ld, entries, key, "watch", _strings, ()),
        line=line,
    )


def _proxy(ld: _Loading, node: Node, key: str) -> ProxySpec | None:
    entries = _mapping(ld, node, key, _PROXY_KEYS)
    if entries is None:
        return None
    defaults = ProxySpec()
    bind = _get(ld, entries, key, "bind", _strings, defaults.bind)
    for index, address in enumerate(bind):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            ld.error("proxy.bind", ld.line(f"proxy.bind[{index}]"),
                     f"expected an IP address such as 127.0.0.1 or ::1, got string {address!r}")
    if not bind:
        ld.error("proxy.bind", ld.line("proxy.bind"), "expected at least one address")
    hosts = _get(ld, entries, key, "hosts", _strings, ())
    for index, host in enumerate(hosts):
        _check_host(ld, "proxy.hosts", ld.line(f"proxy.hosts[{index}]"), host)
    return ProxySpec(
        port=_get(ld, entries, key, "port", _port, defaults.port),
        enabled=_get(ld, entries, key, "enabled", _boolean, defaults.enabled),
        bind=bind,
        http_port=_get(ld, entries, key, "http_port", _port, None),
        hosts=tuple(host.lower() for host in hosts),
        wait_seconds=_get(ld, entries, key, "wait_seconds", _seconds, defaults.wait_seconds),
        upstream_timeout_seconds=_get(ld, entries, key, "upstream_timeout_seconds", _seconds,
                                      defaults.upstream_timeout_seconds),
    )


def _check_host(ld: _Loading, key: str, line: int | None, host: str) -> None:
    if not _HOST_NAME.fullmatch(host.lower()):
        ld.error(key, line, "expected a host name such as "
                 f"'app.localhost' (no scheme, port or path), got string {host!r}")


def _node_to_route(ld: _Loading, key: str, node: Node) -> RouteSpec | None:
    ld.lines[key] = line = _line_of(node)
    entries = _mapping(ld, node, key, _ROUTE_KEYS)
    if entries is None:
        return None
    path = _get(ld, entries, key, "path", _string, None)
    if path is not None and not path.startswith("/"):
        ld.error(_join(key, "path"), ld.line(_join(key, "path")),
                 f"expected a path starting with '/', got string {path!r}")
    host = _get(ld, entries, key, "host", _string, None)
    if host is not None:
        _check_host(ld, _join(key, "host"), ld.line(_join(key, "host")), host)
    service = _get(ld, entries, key, "service", _string, None)
    static = _get(ld, entries, key, "static", _string, None)
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
        host=None if host is None else host.lower(),
        service=service,
        static=None if static is None else ld.root / Path(static).expanduser(),
        strip_prefix=strip_prefix,
        line=line,
    )


# --- Procfile -------------------------------------------------------------------------------


def _procfile_to_spec(text: str, ld: _Loading) -> StackSpec:
    first_lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = environ.PROCFILE_LINE.match(line)
        if match is None:
            if line.strip() and not line.lstrip().startswith("#"):
                ld.warn(None, number, "line ignored: expected 'name: command'")
        elif not match.group(2).strip():
            ld.error(match.group(1), number, "the command is empty")
        elif match.group(1) in first_lines:
            ld.error(match.group(1), number, f"defined twice (first on line "
                     f"{first_lines[match.group(1)]}); process names must be unique")
        else:
            first_lines[match.group(1)] = number
    if not first_lines:
        ld.error(None, None, "no processes found; each line should read 'name: command'")
    ld.raise_errors()
    commands: Mapping[str, str] = environ.parse_procfile(text).processes
    dotenv = ld.root / DOTENV_NAME
    env_files = (dotenv,) if dotenv.is_file() else ()
    ld.declared.extend(commands)
    services = {
        name: ServiceSpec(name=name, command=command, cwd=ld.root, env_files=env_files,
                          health=HealthSpec(enabled=name == "web"), line=first_lines[name])
        for name, command in commands.items()
    }
    return StackSpec(ld.root / ld.shown.name, services, routes=(), kind=ManifestKind.PROCFILE)


# --- validate -------------------------------------------------------------------------------


def _validate(spec: StackSpec, ld: _Loading) -> None:
    _check_variable_names(spec, ld)
    _check_ports(spec, ld)
    _check_dependencies(spec, ld)
    _check_routes(spec, ld)
    _check_paths(spec, ld)


def _check_variable_names(spec: StackSpec, ld: _Loading) -> None:
    """Two names like ``web-app`` and ``web_app`` would share DEVSTACK_WEB_APP_PORT."""
    owners: dict[str, str] = {}
    for name in ld.declared:
        prefix = service_variable_prefix(name)
        if prefix in owners:
            ld.error(f"services.{name}", ld.line(f"services.{name}"), f"gives the same "
                     f"variables ({prefix}_PORT, {prefix}_URL) as service '{owners[prefix]}'; "
                     "rename one of them")
        owners.setdefault(prefix, name)


def _check_ports(spec: StackSpec, ld: _Loading) -> None:
    proxy = spec.proxy
    proxy_ports = {}
    if proxy.enabled:
        proxy_ports[proxy.port] = "the proxy's port (proxy.port)"
        if proxy.http_port == proxy.port:
            ld.error("proxy.http_port", ld.line("proxy.http_port"),
                     f"must differ from proxy.port ({proxy.port})")
        elif proxy.http_port is not None:
            proxy_ports[proxy.http_port] = "the proxy's HTTP port (proxy.http_port)"
    owners: dict[int, ServiceSpec] = {}
    for service in spec.services.values():
        if service.port is None:
            continue
        key = f"services.{service.name}.port"
        line = ld.line(key)
        if service.port in proxy_ports:
            ld.error(key, line, f"port {service.port} is {proxy_ports[service.port]}; "
                     "give the service another port, or move the proxy")
        elif service.port in owners:
            other = owners[service.port]
            ld.error(key, line, f"port {service.port} is also wanted by service '{other.name}' "
                     f"(line {ld.line(f'services.{other.name}.port')}); "
                     "give each service its own port")
        owners.setdefault(service.port, service)
        if service.port < 1024:
            ld.warn(key, line, _low_port_warning(service.port))
        explicit = service.env.get("PORT")
        if explicit is not None and explicit != str(service.port):
            env_key = f"services.{service.name}.env.PORT"
            ld.warn(env_key, ld.line(env_key),
                    f"{explicit!r} differs from port {service.port}; the service will listen "
                    "where devstack does not look")


def _low_port_warning(port: int) -> str:
    try:
        name = socket.getservbyport(port, "tcp")
    except OSError:
        name = _WELL_KNOWN_PORTS.get(port, "")
    tail = "services should stay on ports above 1023"
    if not name:
        return f"port {port} is a privileged port (below 1024); {tail}"
    return f"port {port} is reserved for {_PROTOCOL_NAMES.get(name, name.upper())} ({name}); {tail}"


def _check_dependencies(spec: StackSpec, ld: _Loading) -> None:
    graph = {name: service.depends_on for name, service in spec.services.items()}
    for name, needs in graph.items():
        key = f"services.{name}.depends_on"
        for index, needed in enumerate(needs):
            if needed not in ld.declared:
                hint = _suggestion(needed, ld.declared, "services are")
                ld.error(key, ld.line(f"{key}[{index}]"), f"no service named '{needed}'; {hint}")
    for cycle in _cycles(graph):
        key = f"services.{cycle[0]}.depends_on"
        ld.error(key, ld.line(key), f"dependency cycle: {' -> '.join(cycle)}; "
                 "remove one of these dependencies")


def _cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as a path that returns to its start."""
    done: set[str] = set()
    found: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        path.append(name)
        for needed in graph.get(name, ()):
            if needed in path:
                found.append([*path[path.index(needed):], needed])
            elif needed in graph and needed not in done:
                walk(needed, path)
        path.pop()
        done.add(name)

    for name in graph:
        if name not in done:
            walk(name, [])
    return found


def _check_routes(spec: StackSpec, ld: _Loading) -> None:
    seen: dict[tuple[str | None, str], int] = {}
    for index, route in enumerate(spec.routes):
        key = f"routes[{index}]"
        if route.service is not None and route.service not in ld.declared:
            hint = _suggestion(route.service, ld.declared, "services are")
            ld.error(f"{key}.service", ld.line(f"{key}.service"),
                     f"no service named '{route.service}'; {hint}")
        match = (route.host, route.path or "/")
        if match in seen:
            what = " and ".join(f"{part} '{value}'" for part, value in
                                (("host", route.host), ("path", route.path)) if value)
            ld.error(key, route.line, f"duplicate route: routes[{seen[match]}] (line "
                     f"{spec.routes[seen[match]].line}) already matches {what}")
        seen.setdefault(match, index)


def _check_paths(spec: StackSpec, ld: _Loading) -> None:
    for service in spec.services.values():
        key = f"services.{service.name}"
        if not service.cwd.is_dir():
            _report_missing(ld, f"{key}.cwd", ld.line(f"{key}.cwd"), service.cwd, "folder")
        for index, path in enumerate(service.env_files):
            if not path.is_file():
                line = ld.line(f"{key}.env_file[{index}]")
                _report_missing(ld, f"{key}.env_file", line, path, "file")
    for index, route in enumerate(spec.routes):
        key = f"routes[{index}].static"
        if route.static is not None and not route.static.is_dir():
            _report_missing(ld, key, ld.line(key), route.static, "folder")


def _report_missing(ld: _Loading, key: str, line: int | None, path: Path, kind: str) -> None:
    problem = "does not exist" if not path.exists() else f"is not a {kind}"
    ld.error(key, line, f"{path} {problem}; expected a {kind}, relative to the manifest's folder")


# --- env files ------------------------------------------------------------------------------


def _merge_env_files(spec: StackSpec, ld: _Loading) -> StackSpec:
    """Each service's env files, in order, under its own ``env``."""
    services = {}
    for name, service in spec.services.items():
        env: dict[str, str] = {}
        for index, path in enumerate(service.env_files):
            try:
                env.update(read_env_file(path))
            except ManifestError as exc:
                key = f"services.{name}.env_file"
                line = ld.line(f"{key}[{index}]")
                ld.error(key, line, f"{path}: {exc.message}")
        services[name] = replace(service, env={**env, **service.env})
    return replace(spec, services=services)
