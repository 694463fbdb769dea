"""A Compose file for the stack: one service per service, from its image.

Each gets its command (as Kubernetes gets it), its environment as under devstack but with
``HOST=0.0.0.0`` and peers by their Compose service name, ``PORT``, its port published on the
host's loopback (``127.0.0.1:P:P``), ``restart`` from the restart policy (``never`` is
``"no"``), and ``stop_grace_period``. A ``health`` path becomes a ``healthcheck`` (curl, else
wget, in the image; ``start_period`` is ``health.timeout_seconds``), and a dependency on a
service that has one waits with ``condition: service_healthy``; a dependency on one without
(a TCP check, or ``health: false``) waits with ``service_started``. Routes are the proxy's: put
Caddy in front with the Caddyfile from ``devstack export caddy``.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from devstack.export.document import Document
from devstack.export.options import (
    ExportOptions,
    app_name,
    check_names,
    command_words,
    container_environment,
    images,
    is_listening,
    service_ports,
)
from devstack.manifest.spec import RestartPolicy, ServiceSpec, StackSpec

RESTART = {RestartPolicy.ON_FAILURE: "on-failure", RestartPolicy.ALWAYS: "always",
           RestartPolicy.NEVER: "no"}
MIN_INTERVAL_SECONDS = 1
YAML_WIDTH = 4096
"""Long commands stay on one line."""


def render(spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    check_names(spec, options)
    found = images(spec, options)
    services = {name: _service(spec, options, service, found[name])
                for name, service in spec.services.items()}
    document = {"name": app_name(spec, options), "services": services}
    header = (f"# Compose file for {spec.manifest_path.name}, made by "
              "`devstack export compose`.\n")
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                                  width=YAML_WIDTH)
    return (Document("compose.yaml", text),)


def _service(spec: StackSpec, options: ExportOptions, service: ServiceSpec,
             image: str) -> dict[str, Any]:
    environment = container_environment(spec, service, options)
    entry: dict[str, Any] = {
        "image": image,
        "command": [_literal(word) for word in command_words(service.command)],
        "environment": {key: _literal(value) for key, value in environment.items()},
    }
    if is_listening(service):
        port = service_ports(spec)[service.name]
        entry["ports"] = [f"127.0.0.1:{port}:{port}"]
    if service.depends_on:
        entry["depends_on"] = {
            name: {"condition": "service_healthy" if _has_check(spec.services[name])
                   else "service_started"}
            for name in service.depends_on
        }
    if _has_check(service):
        entry["healthcheck"] = _healthcheck(spec, service)
    entry["restart"] = RESTART[service.restart]
    entry["stop_grace_period"] = _duration(service.stop_timeout_seconds)
    return entry


def _literal(value: str) -> str:
    """Compose reads ``$NAME`` in every value as its own variable: ``$$`` is a ``$``."""
    return value.replace("$", "$$")


def _has_check(service: ServiceSpec) -> bool:
    return service.health.enabled and service.health.path is not None


def _healthcheck(spec: StackSpec, service: ServiceSpec) -> dict[str, Any]:
    health = service.health
    url = f"http://127.0.0.1:{service_ports(spec)[service.name]}{health.path}"
    probe = f"curl -fsS -o /dev/null {url} || wget -q -O /dev/null {url}"
    return {
        "test": ["CMD-SHELL", probe.replace("$", "$$")],
        "interval": _duration(max(MIN_INTERVAL_SECONDS, health.interval_seconds)),
        "timeout": _duration(max(MIN_INTERVAL_SECONDS, health.interval_seconds) * 5),
        "start_period": _duration(health.timeout_seconds),
        "retries": 3,
    }


def _duration(seconds: float) -> str:
    """Compose's duration: whole seconds when it is, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{math.ceil(seconds * 1000)}ms"
