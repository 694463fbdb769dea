"""``devstack.yaml`` or ``Procfile`` -> :class:`~devstack.manifest.spec.StackSpec`, as a pipeline:

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
    devstack.yaml:9: services.api.depends_on: dependency cycle: api -> db -> api; remove one of
    these dependencies    (one line)

Warnings use the same form (others: ``strip_prefix`` without ``path``, an ``env`` ``PORT`` that
differs from ``port``, an unreadable Procfile line). A service port below 1024 gives a warning
worded one of two ways::

    port <N> is reserved for <PROTOCOL> (<name>); services should stay on ports above 1023
    port <N> is a privileged port (below 1024); services should stay on ports above 1023

where ``<name>`` is the port's name in the system's services database (else a built-in table of
22 ssh, 25 smtp, 53 domain, 80 http, 443 https) and ``<PROTOCOL>`` is that name in capitals
(``domain`` reads ``DNS``); the second form is for ports no table names. In full::

    devstack.yaml:5: services.web.port: port 80 is reserved for HTTP (http); services should
    stay on ports above 1023    (one line)

Reading rules worth knowing: top-level keys starting with ``x-`` are ignored (a place for YAML
anchors, merged with ``<<: *name``); a key with an empty value (``port:``) means its default;
strings are never taken for numbers (``port: "3000"`` is an error); ``env`` values are kept as
written (``1.10`` stays ``1.10``), booleans become ``true`` / ``false``; ``cwd``, ``env_file`` and
``static`` are relative to the manifest's folder, ``watch`` and ``watch_ignore`` globs to the
service's ``cwd`` (``watch`` absent: everything there; ``watch: false``: nothing).

Without a ``devstack.yaml`` a ``Procfile`` is read: one service per ``name: command`` line, all
running in the Procfile's folder with ``.env`` beside it (if any) as their environment, no
declared ports, default readiness (TCP) and no routes.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from honcho import environ

from devstack.errors import ManifestError
from devstack.manifest.env import read_env_file, service_variable_prefix
from devstack.manifest.loading import Loading, suggestion
from devstack.manifest.spec import ManifestKind, ServiceSpec, StackSpec

if TYPE_CHECKING:
    from yaml.nodes import MappingNode

logger = logging.getLogger(__name__)

YAML_NAMES = ("devstack.yaml", "devstack.yml")
PROCFILE_NAME = "Procfile"
DOTENV_NAME = ".env"

_ROUTE_ITEM = re.compile(r"routes\[\d+\]")
_WELL_KNOWN_PORTS = {22: "ssh", 25: "smtp", 53: "domain", 80: "http", 443: "https"}
_PROTOCOL_NAMES = {"domain": "DNS"}


@dataclass(frozen=True)
class LoadResult:
    spec: StackSpec
    warnings: tuple[str, ...]
    """Problems that do not stop devstack, formatted like errors (``file:line: key: ...``)."""


def find_manifest(cwd: Path) -> Path:
    """``cwd / "devstack.yaml"`` (or ``devstack.yml``), else ``cwd / "Procfile"``."""
    for name in (*YAML_NAMES, PROCFILE_NAME):
        if (cwd / name).exists():
            return cwd / name
    raise ManifestError(
        f"no manifest in {cwd.absolute()}: looked for {', '.join(YAML_NAMES)} and {PROCFILE_NAME}; "
        "create one there, or pass the manifest's path"
    )


def locate(path: Path | None = None, *, cwd: Path | None = None) -> Path:
    """The manifest :func:`load` reads for ``path``, without reading it: what names the stack
    running from it, even while an edit has left it broken."""
    if path is None or path.is_dir():
        return find_manifest(path if path is not None else cwd or Path())
    return path


def load(path: Path | None = None, *, cwd: Path | None = None) -> LoadResult:
    """Read, check and return the stack described by the manifest at ``path``.

    Without ``path`` the manifest is looked for in ``cwd`` (default: the current folder); a
    folder given as ``path`` is searched the same way. Messages name the file as given.
    """
    path = locate(path, cwd=cwd)
    result = load_text(_read_text(path), path)
    shadowed = path.with_name(YAML_NAMES[1])
    if path.name == YAML_NAMES[0] and shadowed.exists():
        warning = f"{shadowed}: ignored, {path.name} beside it is used"
        result = replace(result, warnings=(*result.warnings, warning))
    return result


def load_text(text: str, path: Path) -> LoadResult:
    """Like :func:`load` for manifest text already in hand; ``path`` says where it lives (for
    messages and relative paths) and whether it is a Procfile (``Procfile``, ``Procfile.dev``)."""
    loading = Loading(path, path.absolute().parent)
    if path.name == PROCFILE_NAME or path.name.startswith(f"{PROCFILE_NAME}."):
        spec = _procfile_to_spec(text, loading)
    else:
        from devstack.manifest.schema import nodes_to_spec  # PyYAML: only for devstack.yaml

        spec = nodes_to_spec(_parse_yaml(text, path), loading)
    _validate(spec, loading)
    loading.raise_errors()
    spec = _merge_env_files(spec, loading)
    loading.raise_errors()
    for warning in loading.warnings:
        logger.debug("manifest warning: %s", warning)
    return LoadResult(spec, loading.warnings)


# --- read and parse ------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            "no such file; check the path, or leave it out to use the devstack.yaml or Procfile "
            "of the current folder",
            path=path,
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest: {exc.strerror or exc}", path=path) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})", path=path
        ) from exc


def _parse_yaml(text: str, shown: Path) -> MappingNode:
    import yaml
    from yaml.nodes import MappingNode

    from devstack.manifest.nodes import describe, is_null, line_of

    # libyaml's parser is ten times faster than the pure-Python one; the pure one words errors
    # best.
    fast_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        try:
            root = yaml.compose(text, Loader=fast_loader)
        except yaml.YAMLError:
            root = yaml.compose(text, Loader=yaml.SafeLoader)  # raises, with its own wording
    except yaml.MarkedYAMLError as exc:
        problem = str(exc.problem).replace("'<stream end>'", "the end of the file")
        if problem.startswith("but ") and exc.context:
            problem = f"{exc.context}, {problem}"
        if exc.context == "while scanning an alias":
            problem += "; quote values that start with '*' or '&'"
        elif "'\\t'" in problem:
            problem += "; indent with spaces"
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ManifestError(f"invalid YAML: {problem}", path=shown, line=line) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, anywhere
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ManifestError(
            f"invalid YAML: the control character U+{code:04X} is not allowed in a YAML file; "
            "remove it, or write it as an escape in a double-quoted string",
            path=shown,
            line=line,
        ) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}", path=shown) from exc
    except UnicodeEncodeError as exc:  # a lone surrogate: text that came from no UTF-8 file
        raise ManifestError(
            f"not UTF-8 text (U+{ord(text[exc.start]):04X} at offset {exc.start})",
            path=shown,
            line=text.count("\n", 0, exc.start) + 1,
        ) from exc
    if root is None or is_null(root):
        raise ManifestError(
            "the manifest is empty; it needs a 'services' mapping with at least one service",
            path=shown,
        )
    if not isinstance(root, MappingNode):
        raise ManifestError(
            f"expected a mapping with a 'services' key at the top level, got {describe(root)}",
            path=shown,
            line=line_of(root),
        )
    return root


# --- Procfile -------------------------------------------------------------------------------


def _procfile_to_spec(text: str, ld: Loading) -> StackSpec:
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
                          line=first_lines[name])
        for name, command in commands.items()
    }
    return StackSpec(ld.root / ld.shown.name, services, routes=(), kind=ManifestKind.PROCFILE)


# --- validate -------------------------------------------------------------------------------


def _validate(spec: StackSpec, ld: Loading) -> None:
    _check_variable_names(spec, ld)
    _check_ports(spec, ld)
    _check_dependencies(spec, ld)
    _check_routes(spec, ld)
    _check_paths(spec, ld)


def _check_variable_names(spec: StackSpec, ld: Loading) -> None:
    """Two names like ``web-app`` and ``web_app`` would share DEVSTACK_WEB_APP_PORT."""
    owners: dict[str, str] = {}
    for name in ld.declared:
        prefix = service_variable_prefix(name)
        if prefix in owners:
            ld.error(f"services.{name}", ld.line(f"services.{name}"), f"gives the same "
                     f"variables ({prefix}_PORT, {prefix}_URL) as service '{owners[prefix]}'; "
                     "rename one of them")
        owners.setdefault(prefix, name)


def _check_ports(spec: StackSpec, ld: Loading) -> None:
    proxy = spec.proxy
    proxy_ports = {}
    if proxy.enabled:
        default = "default " if ld.line("proxy.port") is None else ""
        proxy_ports[proxy.port] = f"the proxy's {default}port (proxy.port)"
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


def _check_dependencies(spec: StackSpec, ld: Loading) -> None:
    graph = {name: service.depends_on for name, service in spec.services.items()}
    for name, needs in graph.items():
        key = f"services.{name}.depends_on"
        for index, needed in enumerate(needs):
            if needed not in ld.declared:
                hint = suggestion(needed, ld.declared, "known services")
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


def _check_routes(spec: StackSpec, ld: Loading) -> None:
    items = sum(1 for key in ld.lines if _ROUTE_ITEM.fullmatch(key))
    if len(spec.routes) != items:
        # An item that is not a mapping was dropped (and reported): the routes after it no
        # longer sit at their index, so checks naming routes[N] would name the wrong one.
        return
    seen: dict[tuple[str | None, str], int] = {}
    for index, route in enumerate(spec.routes):
        key = f"routes[{index}]"
        if route.service is not None and route.service not in ld.declared:
            hint = suggestion(route.service, ld.declared, "known services")
            ld.error(f"{key}.service", ld.line(f"{key}.service"),
                     f"no service named '{route.service}'; {hint}")
        match = (route.host, route.path or "/")
        if match in seen:
            what = " and ".join(f"{part} '{value}'" for part, value in
                                (("host", route.host), ("path", route.path)) if value)
            ld.error(key, route.line, f"duplicate route: routes[{seen[match]}] (line "
                     f"{spec.routes[seen[match]].line}) already matches {what}")
        seen.setdefault(match, index)


def _check_paths(spec: StackSpec, ld: Loading) -> None:
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


def _report_missing(ld: Loading, key: str, line: int | None, path: Path, kind: str) -> None:
    if path.exists():
        ld.error(key, line, f"{path} is not a {kind}")
    else:
        ld.error(key, line, f"{kind} {path} does not exist "
                 "(relative paths start at the manifest's folder)")


# --- env files ------------------------------------------------------------------------------


def _merge_env_files(spec: StackSpec, ld: Loading) -> StackSpec:
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
