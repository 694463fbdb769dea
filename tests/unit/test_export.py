"""``devstack export``: the route order every format shares, and what each format writes.

Kubernetes objects are validated with kubernetes-validate (strict: no unknown fields), Compose
files with the Compose Specification's JSON schema (``tests/data/compose-spec.json``); Caddy
itself reads the Caddyfiles in ``tests/component/test_export_caddy.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from devstack.errors import DevstackError, ManifestError, ManifestErrors
from devstack.export.document import joined
from devstack.export.formats import FORMATS, render
from devstack.export.options import ExportOptions, IngressController, command_words
from devstack.export.sites import host_under, sites
from devstack.manifest import loader
from devstack.manifest.spec import HealthSpec, RouteSpec, ServiceSpec, StackSpec
from devstack.proxy.routing import RouteTable
from tests.unit.export_manifests import MANIFESTS, load_manifest

DATA = Path(__file__).resolve().parents[1] / "data"
KUBERNETES_VERSION = "1.30.0"
IMAGES = {"simon": "example/simon:1", "startup": "example/startup:1", "web": "example/web:1",
          "worker": "example/worker:1"}
"""Images for the manifests whose services name none."""
CRD_KINDS = {"Middleware"}
"""Traefik's resource: a CustomResourceDefinition, not in Kubernetes' schemas."""


def spec_of(root: Path, services: dict[str, ServiceSpec], *routes: RouteSpec) -> StackSpec:
    return StackSpec(manifest_path=root / "devstack.yaml", services=services, routes=routes)


def service(name: str, port: int | None = None, **fields: Any) -> ServiceSpec:
    return ServiceSpec(name=name, command=f"run-{name}", cwd=Path("/app"), port=port, **fields)


def options_for(spec: StackSpec, **fields: Any) -> ExportOptions:
    images = {name: IMAGES[name] for name, s in spec.services.items() if not s.image}
    return ExportOptions(images=images, **fields)


# --- the route order: the same first match as devstack's proxy --------------------------------


NESTED = spec_of(
    Path("/app"),
    {"a": service("a", 1000), "b": service("b", 2000), "c": service("c", 3000)},
    RouteSpec(path="/", service="a"),
    RouteSpec(path="/x", service="b", strip_prefix=True),
    RouteSpec(path="/x/y", service="c"),
    RouteSpec(path="/xy", service="c"),
    RouteSpec(host="h.localhost", path="/x/y/z", service="a"),
    RouteSpec(host="h.localhost", path="/q", service="b"),
)


@pytest.mark.parametrize("host, path", [
    ("localhost", "/"), ("localhost", "/x"), ("localhost", "/x/"), ("localhost", "/x/y"),
    ("localhost", "/x/y/z"), ("localhost", "/xy"), ("localhost", "/xyz"), ("localhost", "/q"),
    ("h.localhost", "/"), ("h.localhost", "/x/y/z/w"), ("h.localhost", "/x/y"),
    ("h.localhost", "/q/1"), ("h.localhost", "/qq"),
])
def test_each_site_tries_routes_in_devstacks_order(host: str, path: str) -> None:
    match = RouteTable.from_spec(NESTED).resolve(host, path)
    assert match is not None
    site = next(s for s in sites(NESTED) if s.host == (None if host == "localhost" else host))
    first = next(r for r in site.routes
                 if r.prefix == "/" or path == r.prefix or path.startswith(r.prefix + "/"))
    assert (first.prefix, first.service) == (match.route.prefix, match.target.service)


def test_a_manifest_without_routes_sends_slash_to_web_as_devstack_does() -> None:
    spec = spec_of(Path("/app"), {"worker": service("worker"), "web": service("web")})
    [site] = sites(spec)
    assert [(r.prefix, r.service) for r in site.routes] == [("/", "web")]


@pytest.mark.parametrize("host, domain, expected", [
    ("startup.localhost", "example.com", "startup.example.com"),
    ("localhost", "example.com", "example.com"),
    ("myapp.test", "example.com", "myapp.test"),
    ("startup.localhost", "localhost:8443", "startup.localhost:8443"),
    ("myapp.test", "localhost:8443", "myapp.test:8443"),
])
def test_host_routes_go_under_the_domain(host: str, domain: str, expected: str) -> None:
    assert host_under(host, domain) == expected


# --- caddy ----------------------------------------------------------------------------------


def caddyfile(spec: StackSpec, **fields: Any) -> str:
    return joined(render("caddy", spec, ExportOptions(**fields)))


def test_caddy_strips_with_a_pair_of_handle_path_and_sends_the_prefix() -> None:
    text = caddyfile(NESTED)
    assert "\t\thandle_path /x/* {\n\t\t\treverse_proxy 127.0.0.1:2000 {\n" \
           "\t\t\t\theader_up X-Forwarded-Prefix /x\n" in text
    assert "\t\thandle_path /x {\n" in text


def test_caddy_matches_a_prefix_and_below_never_a_longer_name() -> None:
    text = caddyfile(NESTED)
    assert "@x_y path /x/y /x/y/*\n\t\thandle @x_y {" in text
    assert "@xy path /xy /xy/*" in text


def test_caddy_keeps_the_order_in_a_route_block_longest_prefix_first() -> None:
    text = caddyfile(NESTED)
    main = text.split("\n\n")[1]
    assert main.startswith("{$DOMAIN:localhost} {\n\troute {\n")
    order = [main.index(marker) for marker in ("@x_y path", "@xy path", "handle_path /x/*",
                                               "\t\thandle {")]
    assert order == sorted(order)


def test_caddy_host_sites_hold_their_routes_then_the_common_ones() -> None:
    text = caddyfile(NESTED, domain="example.com")
    host = text.split("h.example.com {\n", 1)[1]
    assert host.index("@x_y_z path /x/y/z") < host.index("@x_y path") < host.index("handle {")


def test_caddy_serves_files_as_devstack_does(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, {}, RouteSpec(path="/assets", static=tmp_path / "public"))
    text = caddyfile(spec, root="/srv/app")
    assert "handle_path /assets/* {\n\t\t\troot * /srv/app/public\n" in text
    for line in ("@not_get_or_head not method GET HEAD", "respond @not_get_or_head 405",
                 'header @not_get_or_head Allow "GET, HEAD"', "hide .*", "index index.html"):
        assert line in text
    assert "browse" not in text
    assert "# no route for /: devstack answers 404\n\t\thandle {\n\t\t\trespond 404" in text


def test_caddy_upstreams_default_to_the_manifests_ports_and_can_be_given() -> None:
    text = caddyfile(NESTED, upstreams={"b": "b.internal:80"})
    assert "reverse_proxy 127.0.0.1:1000" in text and "reverse_proxy b.internal:80 {" in text
    with pytest.raises(DevstackError, match=r"--upstream nope=\.\.\.: no service named 'nope'"):
        caddyfile(NESTED, upstreams={"nope": "x:1"})


def test_caddy_quotes_what_needs_quoting(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, {"a": service("a", 1)}, RouteSpec(path="/old site", service="a"),
                   RouteSpec(path="/", static=tmp_path / "my files"))
    text = caddyfile(spec, root="/srv/app")
    assert '@old_site path "/old site" "/old site/*"' in text
    assert 'root * "/srv/app/my files"' in text


# --- k8s ------------------------------------------------------------------------------------


def k8s_objects(spec: StackSpec, **fields: Any) -> list[dict[str, Any]]:
    [document] = render("k8s", spec, options_for(spec, **fields))
    return [o for o in yaml.safe_load_all(document.text) if o]


def validate_k8s(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("ingress", list(IngressController))
@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_k8s_export_is_valid_kubernetes(name: str, ingress: IngressController,
                                              tmp_path: Path) -> None:
    spec = load_manifest(name, tmp_path)
    validate_k8s(k8s_objects(spec, ingress=ingress, domain="example.com"))
    validate_k8s(k8s_objects(spec, ingress=ingress))


def test_k8s_names_every_service_without_an_image() -> None:
    with pytest.raises(ManifestErrors) as caught:
        render("k8s", NESTED, ExportOptions(images={"b": "b:1"}))
    messages = [e.message for e in caught.value.errors]
    assert [e.key for e in caught.value.errors] == ["services.a.image", "services.c.image"]
    assert all("pass --image" in m and "set services." in m for m in messages)
    with pytest.raises(ManifestError, match=r"services\.c\.image"):
        render("compose", NESTED, ExportOptions(images={"a": "a:1", "b": "b:1"}))


def test_k8s_maps_command_env_port_and_readiness(tmp_path: Path) -> None:
    objects = k8s_objects(load_manifest("every-route-kind", tmp_path))
    api = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "api")
    [container] = api["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PORT"] == "9000" and env["HOST"] == "0.0.0.0"
    assert env["DEVSTACK_DB_URL"] == "http://db:5432"
    assert env["GREETING"] == "it's $$(whoami)"  # not a Kubernetes variable
    assert container["ports"] == [{"name": "http", "containerPort": 9000}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["periodSeconds"] == 2
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "worker") in kinds and ("Service", "worker") not in kinds


def test_k8s_ingress_uses_prefix_paths_and_strips_for_each_controller(tmp_path: Path) -> None:
    spec = load_manifest("examples/devstack.yaml", tmp_path)
    nginx = k8s_objects(spec, domain="example.com")
    main = next(o for o in nginx if o["kind"] == "Ingress" and o["metadata"]["name"] == "examples")
    rules = {r.get("host"): r["http"]["paths"] for r in main["spec"]["rules"]}
    assert [(p["path"], p["pathType"]) for p in rules["example.com"]] == [("/api", "Prefix")]
    assert rules["startup.example.com"][0]["backend"]["service"]["name"] == "startup"
    strip = next(o for o in nginx if o["metadata"]["name"] == "examples-strip-1")
    annotations = strip["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert annotations["nginx.ingress.kubernetes.io/x-forwarded-prefix"] == "/startup"
    traefik = k8s_objects(spec, ingress=IngressController.TRAEFIK)
    middleware = next(o for o in traefik if o["kind"] == "Middleware")
    assert middleware["spec"] == {"stripPrefix": {"prefixes": ["/startup"]}}
    ingress = next(o for o in traefik if o["kind"] == "Ingress"
                   and o["metadata"]["name"] == "examples-strip-1")
    assert ingress["metadata"]["annotations"] == {
        "traefik.ingress.kubernetes.io/router.middlewares":
            "default-examples-strip-1@kubernetescrd"}


def test_k8s_lists_the_static_routes_it_leaves_out(tmp_path: Path) -> None:
    spec = load_manifest("examples/devstack.yaml", tmp_path)
    [document] = render("k8s", spec, options_for(spec))
    assert "# not exported: routes[3]: / -> files in simon/public (static files" in document.text


# --- compose --------------------------------------------------------------------------------


COMPOSE_SCHEMA = json.loads((DATA / "compose-spec.json").read_text())


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_compose_export_follows_the_compose_specification(name: str,
                                                                tmp_path: Path) -> None:
    spec = load_manifest(name, tmp_path)
    [document] = render("compose", spec, options_for(spec))
    jsonschema.Draft7Validator(COMPOSE_SCHEMA).validate(yaml.safe_load(document.text))


def test_compose_waits_for_healthy_dependencies_and_checks_health(tmp_path: Path) -> None:
    spec = load_manifest("every-route-kind", tmp_path)
    [document] = render("compose", spec, options_for(spec))
    services = yaml.safe_load(document.text)["services"]
    assert services["api"]["depends_on"] == {"db": {"condition": "service_started"}}
    check = services["api"]["healthcheck"]
    assert check["test"][0] == "CMD-SHELL" and "http://127.0.0.1:9000/healthz" in check["test"][1]
    assert (check["interval"], check["start_period"]) == ("2s", "30s")
    assert "healthcheck" not in services["db"]  # a TCP check: nothing in every image can do it
    assert services["db"]["restart"] == "no" and services["api"]["restart"] == "always"
    assert services["web"]["command"] == ["/bin/sh", "-c",
                                          "python -m http.server $$PORT --bind 127.0.0.1"]
    assert "ports" not in services["worker"]


def test_compose_depends_on_a_service_with_a_health_path_waits_until_healthy() -> None:
    spec = spec_of(Path("/app"), {
        "db": service("db", 5432, health=HealthSpec(path="/ready"), image="db:1"),
        "api": service("api", 8000, depends_on=("db",), image="api:1"),
    })
    [document] = render("compose", spec, ExportOptions())
    services = yaml.safe_load(document.text)["services"]
    assert services["api"]["depends_on"] == {"db": {"condition": "service_healthy"}}


# --- systemd and supervisord, through honcho ------------------------------------------------


def test_systemd_writes_honchos_units_with_each_services_folder(tmp_path: Path) -> None:
    documents = render("systemd", load_manifest("examples/devstack.yaml", tmp_path),
                       ExportOptions(root="/srv/app"))
    names = [d.name for d in documents]
    assert names == ["examples.target", "examples-simon.target", "examples-simon.service",
                     "examples-startup.target", "examples-startup.service"]
    unit = documents[2].text
    assert "ExecStart=/bin/sh -lc 'cd /srv/app/simon && python server.py'" in unit
    assert "Environment=PORT=3000" in unit and "WorkingDirectory=/srv/app" in unit


def test_systemd_and_supervisord_quote_what_their_templates_do_not(tmp_path: Path) -> None:
    spec = load_manifest("every-route-kind", tmp_path)
    unit = next(d.text for d in render("systemd", spec, ExportOptions())
                if d.name.endswith("-api.service"))
    assert "&& echo \\'100%% done\\''" in unit
    [conf] = render("supervisord", spec, ExportOptions())
    assert "echo '\"'\"'100%% done'\"'\"''" in conf.text


def test_a_service_without_a_port_gets_honchos(tmp_path: Path) -> None:
    spec = load_manifest("examples/Procfile", tmp_path)
    [conf] = render("supervisord", spec, ExportOptions())
    assert "PORT=5000" in conf.text and "PORT=5100" in conf.text
    assert "reverse_proxy 127.0.0.1:5000" in caddyfile(spec)


# --- shared rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("command, words", [
    ("python server.py", ["python", "server.py"]),
    ("node server.js --port=1", ["node", "server.js", "--port=1"]),
    ("python -m http.server $PORT", ["/bin/sh", "-c", "python -m http.server $PORT"]),
    ("cd x && make", ["/bin/sh", "-c", "cd x && make"]),
])
def test_commands_become_arguments_or_a_shell(command: str, words: list[str]) -> None:
    assert command_words(command) == words


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_export_is_deterministic_and_names_no_local_path(fmt: str, name: str,
                                                               tmp_path: Path) -> None:
    first = load_manifest(name, tmp_path / "one")
    again = load_manifest(name, tmp_path / "two")
    text = joined(render(fmt, first, options_for(first)))
    assert text == joined(render(fmt, again, options_for(again)))
    assert str(tmp_path) not in text and str(first.root) not in text


def test_the_manifest_reads_image(tmp_path: Path) -> None:
    spec = load_manifest("every-route-kind", tmp_path)
    assert spec.services["db"].image == "postgres:16"
    assert spec.services["worker"].image == "example/worker:1"
    with pytest.raises(ManifestError, match=r"devstack.yaml:4: services\.web\.image: expected a "
                       "string, got integer 5"):
        loader.load_text("services:\n  web:\n    command: run\n    image: 5\n",
                         tmp_path / "devstack.yaml")


def test_k8s_names_follow_kubernetes_rules_and_peers_find_them() -> None:
    spec = spec_of(Path("/app"), {"My_Api": service("My_Api", 8000, image="api:1"),
                                  "web": service("web", 8001, image="web:1")})
    objects = k8s_objects(spec)
    validate_k8s(objects)
    assert ("Service", "my-api") in {(o["kind"], o["metadata"]["name"]) for o in objects}
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "web")
    env = {e["name"]: e["value"] for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DEVSTACK_MY_API_URL"] == "http://my-api:8000"
