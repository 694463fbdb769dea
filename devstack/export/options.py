"""What the command line adds to the manifest, and the rules every format shares: each
service's port, upstream, image and environment, and where the project lives on the target.

A service without ``port`` gets honcho's: 5000 for the first service of the manifest, then
5100, 5200, ... (skipping ports other services ask for), so that ``export systemd`` and
``export caddy`` of a Procfile agree with each other, and with ``honcho export``.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from devstack.errors import DevstackError, ManifestError, ManifestErrors
from devstack.manifest.env import LOOPBACK_HOST, service_variable_prefix
from devstack.manifest.spec import ServiceSpec, StackSpec

HONCHO_FIRST_PORT = 5000
HONCHO_PORT_STEP = 100
CONTAINER_HOST = "0.0.0.0"
"""What ``HOST`` says in a container: its own network namespace, reached from outside it."""
DEFAULT_ROOT = "/srv"
"""The project's folder on the target is ``/srv/<app>`` unless ``--root`` says otherwise."""

_SHELL_CHARACTERS = re.compile(r"[$&|;<>()`*?~\\'\"{}\[\]#!\n]")
_NOT_LABEL_CHARACTER = re.compile(r"[^a-z0-9-]+")


class IngressController(enum.StrEnum):
    """The Ingress controller a k8s export writes prefix stripping for."""

    NGINX = "nginx"
    TRAEFIK = "traefik"


@dataclass(frozen=True)
class ExportOptions:
    domain: str | None = None
    """The site address (``example.com``, ``localhost:8443``); host routes are put under it."""
    upstreams: Mapping[str, str] = field(default_factory=dict)
    """``NAME -> HOST:PORT`` where Caddy reaches each service (default: its port on 127.0.0.1)."""
    images: Mapping[str, str] = field(default_factory=dict)
    """``NAME -> IMAGE``, over ``services.<name>.image``."""
    root: str | None = None
    """Where the manifest's folder is on the target (default ``/srv/<app>``)."""
    app: str | None = None
    """The application's name (default: the manifest's folder's name)."""
    ingress: IngressController = IngressController.NGINX
    namespace: str = "default"


def check_names(spec: StackSpec, options: ExportOptions) -> None:
    """Every ``--upstream`` and ``--image`` names a service of the manifest."""
    for flag, names in (("--upstream", options.upstreams), ("--image", options.images)):
        for name in names:
            if name not in spec.services:
                known = ", ".join(spec.services)
                raise DevstackError(f"{flag} {name}=...: no service named {name!r} in "
                                    f"{spec.manifest_path}; its services: {known}")


def app_name(spec: StackSpec, options: ExportOptions) -> str:
    """A DNS label (Kubernetes names, unit names): lower case, digits and ``-``."""
    raw = options.app or spec.root.absolute().name or "app"
    return _NOT_LABEL_CHARACTER.sub("-", raw.lower()).strip("-")[:63] or "app"


def target_root(spec: StackSpec, options: ExportOptions) -> PurePosixPath:
    return PurePosixPath(options.root or f"{DEFAULT_ROOT}/{app_name(spec, options)}")


def on_target(spec: StackSpec, options: ExportOptions, path: Path) -> PurePosixPath:
    """A path of the manifest (a static folder, a cwd) where it is on the target: the same
    place relative to the manifest's folder, under :func:`target_root`."""
    root = spec.root.absolute()
    absolute = path if path.is_absolute() else root / path
    try:
        relative = absolute.relative_to(root)
    except ValueError:
        return PurePosixPath(absolute.as_posix())  # outside the project: kept as it is
    return target_root(spec, options).joinpath(*relative.parts)


def relative_to_manifest(spec: StackSpec, path: Path) -> str:
    root = spec.root.absolute()
    absolute = path if path.is_absolute() else root / path
    try:
        return absolute.relative_to(root).as_posix() or "."
    except ValueError:
        return absolute.as_posix()


def service_ports(spec: StackSpec) -> dict[str, int]:
    """Each service's port: its own, else honcho's (see the module's docstring)."""
    wanted = {s.port for s in spec.services.values() if s.port is not None}
    ports: dict[str, int] = {}
    for index, service in enumerate(spec.services.values()):
        if service.port is not None:
            ports[service.name] = service.port
            continue
        port = HONCHO_FIRST_PORT + HONCHO_PORT_STEP * index
        while port in wanted:
            port += 1
        wanted.add(port)
        ports[service.name] = port
    return ports


def upstream(spec: StackSpec, options: ExportOptions, name: str) -> str:
    if name in options.upstreams:
        return options.upstreams[name]
    return f"{LOOPBACK_HOST}:{service_ports(spec)[name]}"


def images(spec: StackSpec, options: ExportOptions) -> dict[str, str]:
    """Each service's image; raises one error naming every service that has none."""
    found: dict[str, str] = {}
    missing: list[ManifestError] = []
    for name, service in spec.services.items():
        image = options.images.get(name) or service.image
        if image:
            found[name] = image
        else:
            missing.append(ManifestError(
                f"no image to run it from; set services.{name}.image in the manifest, or pass "
                f"--image {name}=IMAGE", path=spec.manifest_path, line=service.line,
                key=f"services.{name}.image"))
    if len(missing) == 1:
        raise missing[0]
    if missing:
        raise ManifestErrors(missing)
    return found


def is_listening(service: ServiceSpec) -> bool:
    """Whether the service serves on its port: a port in the manifest, or a readiness check
    (a service with ``health: false`` and no port is a worker)."""
    return service.port is not None or service.health.enabled


def command_words(command: str) -> list[str]:
    """The command as an argument list for a container: split as a shell would when it is
    plain words, else run by ``/bin/sh -c`` (variables such as ``$PORT``, ``&&``, quotes)."""
    if _SHELL_CHARACTERS.search(command):
        return ["/bin/sh", "-c", command]
    return shlex.split(command)


def loopback_environment(spec: StackSpec, service: ServiceSpec,
                         options: ExportOptions) -> dict[str, str]:
    """What a service gets on one machine (systemd, supervisord), as under devstack: ``HOST``,
    ``PYTHONUNBUFFERED``, its env, ``PORT``, its peers' addresses and ``DEVSTACK_URL``."""
    ports = service_ports(spec)
    return _environment(spec, service, options, LOOPBACK_HOST,
                        {name: f"{LOOPBACK_HOST}:{port}" for name, port in ports.items()})


def container_environment(spec: StackSpec, service: ServiceSpec, options: ExportOptions,
                          host_of: Callable[[str], str] = str) -> dict[str, str]:
    """The same for a container: ``HOST=0.0.0.0``, peers by the name ``host_of`` gives a
    service (Compose's service name; Kubernetes' Service name)."""
    ports = service_ports(spec)
    return _environment(spec, service, options, CONTAINER_HOST,
                        {name: f"{host_of(name)}:{port}" for name, port in ports.items()})


def _environment(spec: StackSpec, service: ServiceSpec, options: ExportOptions, host: str,
                 addresses: Mapping[str, str]) -> dict[str, str]:
    env = {"HOST": host, "PYTHONUNBUFFERED": "1", **service.env}
    env.setdefault("PORT", str(service_ports(spec)[service.name]))
    for name, address in addresses.items():
        prefix = service_variable_prefix(name)
        env[f"{prefix}_PORT"] = address.rsplit(":", 1)[1]
        env[f"{prefix}_URL"] = f"http://{address}"
    if options.domain:
        env["DEVSTACK_URL"] = f"https://{options.domain}"
    return env
