"""Kubernetes objects for the stack: a Deployment per service, a Service per service that
listens, and Ingresses for the routes.

- Deployment: one container from the service's image (``services.<name>.image`` or
  ``--image``), its command (plain words as arguments, anything a shell must read through
  ``/bin/sh -c``), its environment as under devstack but with ``HOST=0.0.0.0`` and peers by
  their Service's name, ``PORT``, the port as ``containerPort``, and a readiness probe from
  ``health`` (an HTTP GET of its path, else a TCP connect; none with ``health: false``).
- Service: ClusterIP on the same port.
- Ingress: the routes, host routes as rules under ``--domain``, paths as ``Prefix`` (which
  matches ``/p`` and ``/p/...``, never ``/px``, and the longest wins: devstack's rules). Routes
  that strip their prefix get an Ingress of their own, written for the controller ``--ingress``
  names: ingress-nginx (a regular expression path and ``rewrite-target``, with
  ``x-forwarded-prefix``), or Traefik (a ``stripPrefix`` Middleware, which sends
  ``X-Forwarded-Prefix`` itself).
- Static routes are not exported: a ConfigMap is the wrong home for a site's files (1 MiB in
  all, binary files awkward, every change a rollout). Build an image that serves the folder
  (Caddy with the Caddyfile from ``devstack export caddy``), add it as a service, and route to
  it; the file's header lists the routes left out.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from devstack.export.document import Document
from devstack.export.options import (
    ExportOptions,
    IngressController,
    app_name,
    check_names,
    command_words,
    container_environment,
    images,
    is_listening,
    relative_to_manifest,
    service_ports,
)
from devstack.export.sites import Site, SiteRoute, host_under, sites
from devstack.manifest.spec import ServiceSpec, StackSpec

PORT_NAME = "http"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
NGINX_ANNOTATIONS = "nginx.ingress.kubernetes.io"
TRAEFIK_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"
TRAEFIK_API = "traefik.io/v1alpha1"
YAML_WIDTH = 4096
"""Long commands stay on one line."""

Object = dict[str, Any]


def render(spec: StackSpec, options: ExportOptions) -> tuple[Document, ...]:
    check_names(spec, options)
    found = images(spec, options)
    objects: list[Object] = []
    for service in spec.services.values():
        objects.append(_deployment(spec, options, service, found[service.name]))
        if is_listening(service):
            objects.append(_service(spec, options, service))
    objects += _ingresses(spec, options)
    header = [f"# Kubernetes objects for {spec.manifest_path.name}, made by "
              "`devstack export k8s`."]
    for site in sites(spec):
        for route in site.routes:
            if route.static is not None and site.host is None:
                folder = relative_to_manifest(spec, route.static)
                header.append(f"# not exported: {route.describe(folder)} (static files: serve "
                              "them from an image of their own, see the README)")
    text = "\n".join(header) + "\n" + "".join(
        "---\n" + yaml.safe_dump(o, sort_keys=False, default_flow_style=False, width=YAML_WIDTH)
        for o in objects)
    return (Document(f"{app_name(spec, options)}.k8s.yaml", text),)


def _labels(spec: StackSpec, options: ExportOptions, name: str) -> dict[str, str]:
    return {NAME_LABEL: name, PART_OF_LABEL: app_name(spec, options)}


def _metadata(spec: StackSpec, options: ExportOptions, name: str) -> Object:
    return {"name": name, "namespace": options.namespace,
            "labels": _labels(spec, options, name)}


def _object_name(name: str) -> str:
    """Service names may hold ``_``; Kubernetes names may not."""
    return name.lower().replace("_", "-")


def _deployment(spec: StackSpec, options: ExportOptions, service: ServiceSpec,
                image: str) -> Object:
    name = _object_name(service.name)
    env = container_environment(spec, service, options, _object_name)
    container: Object = {
        "name": name,
        "image": image,
        "command": [_literal(word) for word in command_words(service.command)],
        "env": [{"name": key, "value": _literal(value)} for key, value in env.items()],
    }
    if is_listening(service):
        port = service_ports(spec)[service.name]
        container["ports"] = [{"name": PORT_NAME, "containerPort": port}]
    probe = _probe(service)
    if probe is not None:
        container["readinessProbe"] = probe
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, options, name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": _labels(spec, options, name)},
                "spec": {
                    "terminationGracePeriodSeconds": max(1, math.ceil(
                        service.stop_timeout_seconds)),
                    "containers": [container],
                },
            },
        },
    }


def _literal(value: str) -> str:
    """Kubernetes reads ``$(NAME)`` in commands and values as a variable: ``$$(`` is ``$(``."""
    return value.replace("$(", "$$(")


def _probe(service: ServiceSpec) -> Object | None:
    health = service.health
    if not health.enabled:
        return None
    check: Object = {"httpGet": {"path": health.path, "port": PORT_NAME}} if health.path else \
        {"tcpSocket": {"port": PORT_NAME}}
    return {**check, "periodSeconds": max(1, math.ceil(health.interval_seconds)),
            "failureThreshold": 3}


def _service(spec: StackSpec, options: ExportOptions, service: ServiceSpec) -> Object:
    name = _object_name(service.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, options, name),
        "spec": {
            "selector": {NAME_LABEL: name},
            "ports": [{"name": PORT_NAME, "port": service_ports(spec)[service.name],
                       "targetPort": PORT_NAME}],
        },
    }


def _ingresses(spec: StackSpec, options: ExportOptions) -> list[Object]:
    """One Ingress for the plain routes of every site, one for each stripping route. A host's
    rule repeats the common routes after its own: an Ingress rule for a host never falls back
    to the rules without one, where devstack's host routes do."""
    app = app_name(spec, options)
    plain: dict[str | None, list[Object]] = {}
    stripped: list[Object] = []
    for number, site in enumerate(sites(spec)):
        host = _rule_host(site, options)
        for route in site.routes:
            if route.service is None:
                continue  # static routes: see the module's docstring
            if route.strips:
                name = f"{app}-strip-{route.index}" + (f"-host-{number}" if site.host else "")
                stripped += _stripping(spec, options, name, host, route)
            else:
                plain.setdefault(host, []).append(_path(spec, route, route.prefix, "Prefix"))
    return ([_ingress(spec, options, app, plain, {})] if plain else []) + stripped


def _rule_host(site: Site, options: ExportOptions) -> str | None:
    if site.host is None:
        return host_under("localhost", options.domain, keep_port=False) if options.domain \
            else None
    return host_under(site.host, options.domain, keep_port=False) if options.domain \
        else site.host


def _path(spec: StackSpec, route: SiteRoute, path: str, kind: str) -> Object:
    assert route.service is not None
    return {"path": path, "pathType": kind, "backend": {"service": {
        "name": _object_name(route.service),
        "port": {"number": service_ports(spec)[route.service]}}}}


def _ingress(spec: StackSpec, options: ExportOptions, name: str,
             rules: dict[str | None, list[Object]], annotations: dict[str, str]) -> Object:
    metadata = _metadata(spec, options, name)
    if annotations:
        metadata["annotations"] = annotations
    body: Object = {"ingressClassName": options.ingress.value, "rules": []}
    for host, paths in rules.items():
        rule: Object = {"host": host} if host else {}
        rule["http"] = {"paths": paths}
        body["rules"].append(rule)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
            "spec": body}


def _stripping(spec: StackSpec, options: ExportOptions, name: str, host: str | None,
               route: SiteRoute) -> list[Object]:
    """An Ingress of its own for a route that strips its prefix (annotations apply to a whole
    Ingress), written for the controller in ``options.ingress``."""
    prefix = route.prefix
    if options.ingress is IngressController.NGINX:
        annotations = {
            f"{NGINX_ANNOTATIONS}/use-regex": "true",
            f"{NGINX_ANNOTATIONS}/rewrite-target": "/$2",
            f"{NGINX_ANNOTATIONS}/x-forwarded-prefix": prefix,
        }
        path = _path(spec, route, f"{prefix}(/|$)(.*)", "ImplementationSpecific")
        return [_ingress(spec, options, name, {host: [path]}, annotations)]
    middleware = {
        "apiVersion": TRAEFIK_API,
        "kind": "Middleware",
        "metadata": _metadata(spec, options, name),
        "spec": {"stripPrefix": {"prefixes": [prefix]}},
    }
    annotations = {TRAEFIK_MIDDLEWARES: f"{options.namespace}-{name}@kubernetescrd"}
    path = _path(spec, route, prefix, "Prefix")
    return [middleware, _ingress(spec, options, name, {host: [path]}, annotations)]
