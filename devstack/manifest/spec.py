"""What the manifest says, as frozen values: no I/O, no processes, cheap to build in a test.

``manifest.load()`` produces a :class:`StackSpec`; everything that runs (supervisor, proxy,
reloader) reads it and never mutates it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROXY_PORT = 8080
DEFAULT_STOP_TIMEOUT_SECONDS = 5.0
DEFAULT_READY_TIMEOUT_SECONDS = 60.0
STATE_DIR_NAME = ".devstack"


class RestartPolicy(enum.StrEnum):
    """When a service that exited is started again."""

    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    NEVER = "never"


class ReloadMode(enum.StrEnum):
    """How a service is reloaded when a file it watches changes."""

    RESTART = "restart"
    """Stop the old process (in-flight requests finish), start the new one; requests that
    arrive meanwhile wait in the proxy."""
    BLUE_GREEN = "blue-green"
    """Start the new process on a fresh port while the old one serves; switch when it is ready,
    then drain the old one. A new process that fails leaves the old one in service."""


DEFAULT_WATCH = ("**/*",)
"""Everything under the service's ``cwd`` (minus the ignored folders and files)."""


class ManifestKind(enum.StrEnum):
    YAML = "devstack.yaml"
    PROCFILE = "Procfile"


@dataclass(frozen=True)
class HealthSpec:
    """How readiness is probed: a TCP connect on the port (``path is None``), an HTTP GET of
    ``path`` answering 2xx/3xx, or nothing at all (``enabled`` false: ready once started)."""

    path: str | None = None
    enabled: bool = True
    interval_seconds: float = 0.05
    timeout_seconds: float = DEFAULT_READY_TIMEOUT_SECONDS


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: str
    cwd: Path
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    env_files: tuple[Path, ...] = ()
    depends_on: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    stop_timeout_seconds: float = DEFAULT_STOP_TIMEOUT_SECONDS
    health: HealthSpec = field(default_factory=HealthSpec)
    watch: tuple[str, ...] = DEFAULT_WATCH
    """Globs relative to ``cwd`` whose changes reload the service; empty (``watch: false``):
    never reloaded by an edit."""
    watch_ignore: tuple[str, ...] = ()
    """Globs relative to ``cwd`` ignored on top of the defaults and ``.gitignore``."""
    reload: ReloadMode = ReloadMode.RESTART
    live_reload: bool = True
    """Pages this service answers get the browser-reload script."""
    image: str | None = None
    """The container image that runs it elsewhere (``devstack export k8s`` and ``compose``);
    devstack itself never reads it."""
    line: int | None = field(default=None, compare=False)
    """Line of the service's entry in the manifest, for messages that point back at it (not
    part of what the service is: a comment added above it changes nothing)."""


@dataclass(frozen=True)
class RouteSpec:
    """One entry of ``routes``: match by ``path`` prefix and/or ``host``; send to ``service``
    or serve files from ``static``."""

    path: str | None = None
    host: str | None = None
    service: str | None = None
    static: Path | None = None
    strip_prefix: bool = False
    live_reload: bool = True
    """Pages this route answers get the browser-reload script (``live_reload: false``: never)."""
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ProxySpec:
    port: int = DEFAULT_PROXY_PORT
    enabled: bool = True
    bind: tuple[str, ...] = ("127.0.0.1", "::1")
    http_port: int | None = None
    hosts: tuple[str, ...] = ()
    wait_seconds: float = 30.0
    """How long a request waits for a starting or restarting service before it fails."""
    upstream_timeout_seconds: float = 60.0
    """How long an upstream may take to start answering before the client gets a 504."""


@dataclass(frozen=True)
class StackSpec:
    manifest_path: Path
    services: Mapping[str, ServiceSpec]
    proxy: ProxySpec = field(default_factory=ProxySpec)
    routes: tuple[RouteSpec, ...] = ()
    kind: ManifestKind = ManifestKind.YAML

    @property
    def root(self) -> Path:
        """The folder the manifest lives in; relative paths in it start here."""
        return self.manifest_path.parent

    @property
    def state_dir(self) -> Path:
        return state_dir_of(self.manifest_path)


def state_dir_of(manifest: Path) -> Path:
    """Where the stack run from ``manifest`` keeps its state (lock, control socket, logs):
    ``.devstack/`` beside it."""
    return manifest.absolute().parent / STATE_DIR_NAME
