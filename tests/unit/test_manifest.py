"""manifest.py and schema.py: devstack.yaml / Procfile -> StackSpec, and every message they give.

Each test runs in its own folder (``project``) holding ``simon/public/``, a plain file ``afile``
and an empty ``.env``; manifests are named ``devstack.yaml`` relative to it, so messages read
``devstack.yaml:<line>: ...`` exactly as a user in that folder sees them.
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from devstack.config import (
    HealthSpec,
    ManifestKind,
    ProxySpec,
    RestartPolicy,
    RouteSpec,
)
from devstack.errors import ManifestError, ManifestErrors
from devstack.manifest import find_manifest, load, load_text

MANIFEST = Path("devstack.yaml")


def text(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "simon" / "public").mkdir(parents=True)
    (tmp_path / "afile").write_text("")
    (tmp_path / ".env").write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_of(source: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_text(text(source), MANIFEST)
    return str(caught.value)


# --- the table of messages ------------------------------------------------------------------

WEB = """
services:
  web:
    command: python app.py
"""

ERRORS = [
    pytest.param(
        "services:\n  web:\n    command: [python\n",
        "devstack.yaml:4: invalid YAML: expected ',' or ']', but got the end of the file",
        id="yaml-unclosed-list",
    ),
    pytest.param(
        "services:\n  web:\n    command: x\n  port 3000\n",
        "devstack.yaml:5: invalid YAML: could not find expected ':'",
        id="yaml-missing-colon",
    ),
    pytest.param(
        "services:\n\tweb: {}\n",
        "devstack.yaml:2: invalid YAML: found character '\\t' that cannot start any token; "
        "indent with spaces",
        id="yaml-tab",
    ),
    pytest.param(
        "services:\n  web:\n    command: x\n    watch: *.py\n",
        "devstack.yaml:4: invalid YAML: expected alphabetic or numeric character, but found '.'; "
        "quote values that start with '*' or '&'",
        id="yaml-unquoted-star",
    ),
    pytest.param(
        "services: {}\n---\nservices: {}\n",
        "devstack.yaml:2: invalid YAML: expected a single document in the stream, "
        "but found another document",
        id="yaml-two-documents",
    ),
    pytest.param(
        "- web\n- db\n",
        "devstack.yaml:1: expected a mapping with a 'services' key at the top level, got a list",
        id="top-level-list",
    ),
    pytest.param(
        "web: python app.py\nservices: {}\n",
        "devstack.yaml:1: web: unknown key; valid keys are services, proxy, routes\n"
        "devstack.yaml:2: services: no services defined; add at least one under 'services:'",
        id="top-level-unknown-key",
    ),
    pytest.param(
        """
        service:
          web:
            command: x
        """,
        "devstack.yaml:1: service: unknown key; did you mean 'services'?",
        id="top-level-misspelt-services",
    ),
    pytest.param(
        """
        services:
          simon:
            comand: python server.py
        """,
        "devstack.yaml:3: services.simon.comand: unknown key; did you mean 'command'?",
        id="unknown-key-close",
    ),
    pytest.param(
        """
        services:
          simon:
            command: python server.py
            colour: red
        """,
        "devstack.yaml:4: services.simon.colour: unknown key; valid keys are command, cwd, port, "
        "env, env_file, depends_on, restart, stop_timeout_seconds, health, watch",
        id="unknown-key-far",
    ),
    pytest.param(
        WEB + "    health: {path: /healthz, interval: 1}\n",
        "devstack.yaml:4: services.web.health.interval: unknown key; "
        "did you mean 'interval_seconds'?",
        id="unknown-health-key",
    ),
    pytest.param(
        WEB + "    port: abc\n",
        "devstack.yaml:4: services.web.port: expected an integer, got string 'abc'",
        id="port-string",
    ),
    pytest.param(
        WEB + "    port: '3000'\n",
        "devstack.yaml:4: services.web.port: expected an integer, got string '3000'",
        id="port-quoted-number",
    ),
    pytest.param(
        WEB + "    port: true\n",
        "devstack.yaml:4: services.web.port: expected an integer, got boolean true",
        id="port-boolean",
    ),
    pytest.param(
        WEB + "    port: 3000.5\n",
        "devstack.yaml:4: services.web.port: expected an integer, got number 3000.5",
        id="port-float",
    ),
    pytest.param(
        WEB + "    port: [3000]\n",
        "devstack.yaml:4: services.web.port: expected an integer, got a list",
        id="port-list",
    ),
    pytest.param(
        WEB + "    port: 70000\n",
        "devstack.yaml:4: services.web.port: expected a port number from 1 to 65535, got 70000",
        id="port-too-high",
    ),
    pytest.param(
        WEB + "    port: 0\n",
        "devstack.yaml:4: services.web.port: expected a port number from 1 to 65535, got 0",
        id="port-zero",
    ),
    pytest.param(
        "proxy:\n  port: -1\n" + text(WEB),
        "devstack.yaml:2: proxy.port: expected a port number from 1 to 65535, got -1",
        id="proxy-port-negative",
    ),
    pytest.param(
        "proxy:\n  enabled: yes please\n" + text(WEB),
        "devstack.yaml:2: proxy.enabled: expected true or false, got string 'yes please'",
        id="proxy-enabled-string",
    ),
    pytest.param(
        """
        services:
          web:
            command: x
            port: 3000
          api:
            command: y
            port: 3000
        """,
        "devstack.yaml:7: services.api.port: port 3000 is also wanted by service 'web' (line 4); "
        "give each service its own port",
        id="same-port-twice",
    ),
    pytest.param(
        """
        proxy:
          port: 9000
        services:
          web:
            command: x
            port: 9000
        """,
        "devstack.yaml:6: services.web.port: port 9000 is the proxy's port (proxy.port); "
        "give the service another port, or move the proxy",
        id="service-on-proxy-port",
    ),
    pytest.param(
        WEB + "    port: 8080\n",
        "devstack.yaml:4: services.web.port: port 8080 is the proxy's default port (proxy.port); "
        "give the service another port, or move the proxy",
        id="service-on-default-proxy-port",
    ),
    pytest.param(
        "proxy:\n  http_port: 3000\n" + text(WEB) + "    port: 3000\n",
        "devstack.yaml:6: services.web.port: port 3000 is the proxy's HTTP port "
        "(proxy.http_port); give the service another port, or move the proxy",
        id="service-on-proxy-http-port",
    ),
    pytest.param(
        "proxy:\n  http_port: 8080\n" + text(WEB),
        "devstack.yaml:2: proxy.http_port: must differ from proxy.port (8080)",
        id="proxy-http-port-equals-port",
    ),
    pytest.param(
        "proxy:\n  bind: [127.0.0.1, localhost]\n" + text(WEB),
        "devstack.yaml:2: proxy.bind: expected an IP address such as 127.0.0.1 or ::1, "
        "got string 'localhost'",
        id="proxy-bind-name",
    ),
    pytest.param(
        "proxy:\n  wait_seconds: 0\n" + text(WEB),
        "devstack.yaml:2: proxy.wait_seconds: expected a number of seconds above 0, got integer 0",
        id="proxy-wait-zero",
    ),
    pytest.param(
        """
        services:
          simon:
            command: x
        routes:
          - path: /api
            service: simn
        """,
        "devstack.yaml:6: routes[0].service: no service named 'simn'; did you mean 'simon'?",
        id="route-to-misspelt-service",
    ),
    pytest.param(
        """
        services:
          simon:
            command: x
          startup:
            command: y
        routes:
          - path: /api
            service: db
        """,
        "devstack.yaml:8: routes[0].service: no service named 'db'; "
        "known services are simon, startup",
        id="route-to-unknown-service",
    ),
    pytest.param(
        """
        services:
          web:
            command: x
            depends_on: [dbb]
          db:
            command: y
        """,
        "devstack.yaml:4: services.web.depends_on: no service named 'dbb'; did you mean 'db'?",
        id="dependency-missing",
    ),
    pytest.param(
        """
        services:
          a:
            command: x
            depends_on: b
          b:
            command: y
            depends_on: [c]
          c:
            command: z
            depends_on: [a]
        """,
        "devstack.yaml:4: services.a.depends_on: dependency cycle: a -> b -> c -> a; "
        "remove one of these dependencies",
        id="dependency-cycle",
    ),
    pytest.param(
        WEB + "    depends_on: web\n",
        "devstack.yaml:4: services.web.depends_on: dependency cycle: web -> web; "
        "remove one of these dependencies",
        id="dependency-on-itself",
    ),
    pytest.param(
        WEB + "    cwd: simn\n",
        "devstack.yaml:4: services.web.cwd: folder {root}/simn does not exist "
        "(relative paths start at the manifest's folder)",
        id="cwd-missing",
    ),
    pytest.param(
        WEB + "    cwd: afile\n",
        "devstack.yaml:4: services.web.cwd: {root}/afile is not a folder",
        id="cwd-not-a-folder",
    ),
    pytest.param(
        WEB + "    env_file: [.env, .env.local]\n",
        "devstack.yaml:4: services.web.env_file: file {root}/.env.local does not exist "
        "(relative paths start at the manifest's folder)",
        id="env-file-missing",
    ),
    pytest.param(
        WEB + "routes:\n  - path: /\n    static: simon/publc\n",
        "devstack.yaml:6: routes[0].static: folder {root}/simon/publc does not exist "
        "(relative paths start at the manifest's folder)",
        id="static-missing",
    ),
    pytest.param(
        WEB + "    restart: sometimes\n",
        "devstack.yaml:4: services.web.restart: expected one of on-failure, always, never, "
        "got string 'sometimes'",
        id="restart-unknown",
    ),
    pytest.param(
        WEB + "    restart: on_failure\n",
        "devstack.yaml:4: services.web.restart: expected one of on-failure, always, never, "
        "got string 'on_failure'; did you mean 'on-failure'?",
        id="restart-close",
    ),
    pytest.param(
        "services:\n  web:\n    command: '  '\n",
        "devstack.yaml:3: services.web.command: is empty; "
        "give the shell command that starts the service",
        id="command-empty",
    ),
    pytest.param(
        "services:\n  web:\n    port: 3000\n",
        "devstack.yaml:2: services.web.command: is missing; "
        "give the shell command that starts the service",
        id="command-missing",
    ),
    pytest.param(
        "services:\n  web:\n",
        "devstack.yaml:2: services.web.command: is missing; "
        "give the shell command that starts the service",
        id="service-empty",
    ),
    pytest.param(
        "services:\n  web: python app.py\n",
        "devstack.yaml:2: services.web: expected a mapping with at least 'command', "
        "got string 'python app.py'",
        id="service-as-string",
    ),
    pytest.param(
        "services:\n",
        "devstack.yaml:1: services: no services defined; add at least one under 'services:'",
        id="services-empty",
    ),
    pytest.param(
        "proxy:\n  port: 9000\n",
        "devstack.yaml:1: services: required key is missing; "
        "list the services to run under 'services:'",
        id="services-missing",
    ),
    pytest.param(
        "services:\n  - web\n",
        "devstack.yaml:2: services: expected a mapping, got a list",
        id="services-list",
    ),
    pytest.param(
        "services:\n  my app:\n    command: x\n",
        "devstack.yaml:2: services.my app: invalid service name; "
        "use letters, digits, '_' and '-', starting with a letter or digit",
        id="service-name-invalid",
    ),
    pytest.param(
        "services:\n  web-app:\n    command: x\n  web_app:\n    command: y\n",
        "devstack.yaml:4: services.web_app: gives the same variables (DEVSTACK_WEB_APP_PORT, "
        "DEVSTACK_WEB_APP_URL) as service 'web-app'; rename one of them",
        id="service-names-same-variables",
    ),
    pytest.param(
        "services:\n  web:\n    command: x\n    command: y\n",
        "devstack.yaml:4: services.web.command: duplicate key (first on line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        WEB + "    health: healthz\n",
        "devstack.yaml:4: services.web.health: expected a path starting with '/', 'tcp', 'none', "
        "false or a mapping with path, interval_seconds, timeout_seconds, got string 'healthz'",
        id="health-bad-string",
    ),
    pytest.param(
        WEB + "    health: {path: healthz}\n",
        "devstack.yaml:4: services.web.health.path: expected a path starting with '/', "
        "got string 'healthz'",
        id="health-bad-path",
    ),
    pytest.param(
        WEB + "    stop_timeout_seconds: -1\n",
        "devstack.yaml:4: services.web.stop_timeout_seconds: expected a number of seconds "
        "above 0, got integer -1",
        id="stop-timeout-negative",
    ),
    pytest.param(
        WEB + "    stop_timeout_seconds: .inf\n",
        "devstack.yaml:4: services.web.stop_timeout_seconds: expected a number of seconds "
        "above 0, got number .inf",
        id="stop-timeout-infinite",
    ),
    pytest.param(
        WEB + "    env:\n      DEBUG:\n",
        "devstack.yaml:5: services.web.env.DEBUG: expected a string, number or boolean "
        '(write "" for an empty value), got null',
        id="env-value-null",
    ),
    pytest.param(
        WEB + "    env: [DEBUG=1]\n",
        "devstack.yaml:4: services.web.env: expected a mapping, got a list",
        id="env-list",
    ),
    pytest.param(
        WEB + "    watch: [1]\n",
        "devstack.yaml:4: services.web.watch: expected a string or a list of strings, "
        "got integer 1",
        id="watch-number",
    ),
    pytest.param(
        WEB + "    depends_on: {db: true}\n",
        "devstack.yaml:4: services.web.depends_on: expected a string or a list of strings, "
        "got a mapping",
        id="depends-on-mapping",
    ),
    pytest.param(
        WEB + "routes: {path: /}\n",
        "devstack.yaml:4: routes: expected a list of routes, got a mapping",
        id="routes-mapping",
    ),
    pytest.param(
        WEB + "routes:\n  - path: /\n    service: web\n    static: simon\n",
        "devstack.yaml:5: routes[0]: expected exactly one of 'service' or 'static', got both",
        id="route-service-and-static",
    ),
    pytest.param(
        WEB + "routes:\n  - path: /\n",
        "devstack.yaml:5: routes[0]: expected exactly one of 'service' or 'static', got neither",
        id="route-no-target",
    ),
    pytest.param(
        WEB + "routes:\n  - service: web\n",
        "devstack.yaml:5: routes[0]: expected 'path', 'host' or both, "
        "to say which requests it takes",
        id="route-matches-nothing",
    ),
    pytest.param(
        WEB + "routes:\n  - path: api\n    service: web\n",
        "devstack.yaml:5: routes[0].path: expected a path starting with '/', got string 'api'",
        id="route-relative-path",
    ),
    pytest.param(
        WEB + "routes:\n  - host: https://app.localhost\n    service: web\n",
        "devstack.yaml:5: routes[0].host: expected a host name such as 'app.localhost' "
        "(no scheme, port or path), got string 'https://app.localhost'",
        id="route-host-url",
    ),
    pytest.param(
        WEB + "routes:\n  - path: /api/\n    service: web\n  - path: /api\n    service: web\n",
        "devstack.yaml:7: routes[1]: duplicate route: routes[0] (line 5) already matches "
        "path '/api'",
        id="route-duplicate",
    ),
    pytest.param(
        WEB + "routes:\n  - host: a.localhost\n    service: web\n"
        "  - host: A.localhost\n    path: /\n    service: web\n",
        "devstack.yaml:7: routes[1]: duplicate route: routes[0] (line 5) already matches "
        "host 'a.localhost' and path '/'",
        id="route-duplicate-host",
    ),
    pytest.param(
        """
        services:
          web:
            comand: x
            port: abc
          db:
            command: y
            restart: sometimes
        routes:
          - path: /
            service: wbe
        """,
        "devstack.yaml:3: services.web.comand: unknown key; did you mean 'command'?\n"
        "devstack.yaml:4: services.web.port: expected an integer, got string 'abc'\n"
        "devstack.yaml:7: services.db.restart: expected one of on-failure, always, never, "
        "got string 'sometimes'\n"
        "devstack.yaml:10: routes[0].service: no service named 'wbe'; did you mean 'web'?",
        id="several-at-once-sorted-by-line",
    ),
]


@pytest.mark.parametrize(("source", "message"), ERRORS)
def test_error_message(project: Path, source: str, message: str) -> None:
    assert error_of(source) == message.format(root=project)


def test_several_problems_raise_manifest_errors(project: Path) -> None:
    with pytest.raises(ManifestErrors) as caught:
        load_text("services:\n  web:\n    port: x\n", MANIFEST)
    assert [(e.line, e.key) for e in caught.value.errors] == [
        (2, "services.web.command"),
        (3, "services.web.port"),
    ]
    assert caught.value.exit_code == 2


def test_one_problem_raises_a_single_manifest_error(project: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(text(WEB) + "    port: x\n", MANIFEST)
    assert type(caught.value) is ManifestError
    assert (caught.value.path, caught.value.line, caught.value.key) == (
        MANIFEST,
        4,
        "services.web.port",
    )


# --- warnings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "protocol"),
    [(22, "SSH (ssh)"), (25, "SMTP (smtp)"), (53, "DNS (domain)"), (80, "HTTP (http)"),
     (443, "HTTPS (https)")],
)
@pytest.mark.parametrize("services_database", [True, False], ids=["system", "built-in"])
def test_low_port_warns_with_protocol(
    project: Path, monkeypatch: pytest.MonkeyPatch, port: int, protocol: str,
    services_database: bool,
) -> None:
    if not services_database:
        monkeypatch.setattr(socket, "getservbyport", _no_services_database)
    result = load_text(text(WEB) + f"    port: {port}\n", MANIFEST)
    assert result.warnings == (
        f"devstack.yaml:4: services.web.port: port {port} is reserved for {protocol}; "
        "services should stay on ports above 1023",
    )


def _no_services_database(port: int, protocol: str = "tcp") -> str:
    raise OSError("port/proto not found")


def test_low_port_without_a_name_warns_it_is_privileged(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getservbyport", _no_services_database)
    result = load_text(text(WEB) + "    port: 999\n", MANIFEST)
    assert result.warnings == (
        "devstack.yaml:4: services.web.port: port 999 is a privileged port (below 1024); "
        "services should stay on ports above 1023",
    )


def test_port_1024_and_above_gives_no_warning(project: Path) -> None:
    assert load_text(text(WEB) + "    port: 1024\n", MANIFEST).warnings == ()


def test_other_warnings(project: Path) -> None:
    source = text(WEB) + "    port: 3000\n    env: {PORT: 3001}\n"
    source += "routes:\n  - host: app.localhost\n    service: web\n    strip_prefix: true\n"
    assert load_text(source, MANIFEST).warnings == (
        "devstack.yaml:5: services.web.env.PORT: '3001' differs from port 3000; "
        "the service will listen where devstack does not look",
        "devstack.yaml:9: routes[0].strip_prefix: has no effect without 'path'",
    )


# --- what a valid manifest becomes ----------------------------------------------------------


def test_defaults(project: Path) -> None:
    result = load_text(text(WEB), MANIFEST)
    assert result.warnings == ()
    spec = result.spec
    assert spec.manifest_path == project / "devstack.yaml"
    assert spec.kind is ManifestKind.YAML
    assert spec.proxy == ProxySpec()
    assert spec.routes == ()
    web = spec.services["web"]
    assert (web.name, web.command, web.cwd, web.port, dict(web.env)) == (
        "web", "python app.py", project, None, {},
    )
    assert (web.env_files, web.depends_on, web.watch) == ((), (), ())
    assert web.restart is RestartPolicy.ON_FAILURE
    assert web.stop_timeout_seconds == 5.0
    assert web.health == HealthSpec()
    assert web.line == 2


def test_every_key(project: Path) -> None:
    (project / ".env").write_text("FROM_FILE=1\nSHARED=file\n")
    (project / "extra.env").write_text("SHARED=extra\nLATER=yes\n")
    source = text(
        """
        proxy:
          port: 8443
          enabled: false
          bind: 127.0.0.1
          http_port: 8081
          hosts: [MyApp.test]
          wait_seconds: 2.5
          upstream_timeout_seconds: 10
        services:
          simon:
            command: python server.py
            cwd: simon
            port: 3000
            env: {DEBUG: true, VERSION: 1.10, RETRIES: 3, NAME: simon, SHARED: env}
            env_file: [.env, extra.env]
            depends_on: [db, db]
            restart: always
            stop_timeout_seconds: 1
            health: {path: /healthz, interval_seconds: 0.1, timeout_seconds: 5}
            watch: "**/*.py"
          db:
            command: postgres
            restart: never
            health: false
        routes:
          - path: /api/
            service: simon
            strip_prefix: true
          - host: Startup.Localhost
            path: /
            static: simon/public
        """
    )
    spec = load_text(source, MANIFEST).spec
    assert spec.proxy == ProxySpec(
        port=8443, enabled=False, bind=("127.0.0.1",), http_port=8081, hosts=("myapp.test",),
        wait_seconds=2.5, upstream_timeout_seconds=10.0,
    )
    simon = spec.services["simon"]
    assert simon.cwd == project / "simon"
    assert simon.port == 3000
    assert dict(simon.env) == {
        "FROM_FILE": "1", "SHARED": "env", "LATER": "yes",
        "DEBUG": "true", "VERSION": "1.10", "RETRIES": "3", "NAME": "simon",
    }
    assert simon.env_files == (project / ".env", project / "extra.env")
    assert simon.depends_on == ("db",)
    assert simon.restart is RestartPolicy.ALWAYS
    assert simon.stop_timeout_seconds == 1.0
    assert simon.health == HealthSpec(path="/healthz", interval_seconds=0.1, timeout_seconds=5.0)
    assert simon.watch == ("**/*.py",)
    assert simon.line == 10
    db = spec.services["db"]
    assert (db.restart, db.health) == (RestartPolicy.NEVER, HealthSpec(enabled=False))
    assert spec.routes == (
        RouteSpec(path="/api", service="simon", strip_prefix=True, line=25),
        RouteSpec(path="/", host="startup.localhost", static=project / "simon" / "public",
                  line=28),
    )


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("/healthz", HealthSpec(path="/healthz")),
        ("tcp", HealthSpec()),
        ("none", HealthSpec(enabled=False)),
        ("false", HealthSpec(enabled=False)),
        ("true", HealthSpec()),
        ("", HealthSpec()),
        ("{timeout_seconds: 2}", HealthSpec(timeout_seconds=2.0)),
    ],
)
def test_health_forms(project: Path, health: str, expected: HealthSpec) -> None:
    spec = load_text(text(WEB) + f"    health: {health}\n", MANIFEST).spec
    assert spec.services["web"].health == expected


def test_empty_values_mean_defaults(project: Path) -> None:
    source = "proxy:\nservices:\n  web:\n    command: x\n    port:\n    env:\n    watch:\nroutes:\n"
    spec = load_text(source, MANIFEST).spec
    assert spec.proxy == ProxySpec()
    assert spec.services["web"].port is None
    assert spec.routes == ()


def test_anchors_and_merge_keys(project: Path) -> None:
    source = text(
        """
        x-common: &common
          restart: never
          env: {DEBUG: "1"}
        services:
          web:
            <<: *common
            command: a
          api:
            <<: *common
            command: b
            restart: always
        """
    )
    with pytest.raises(ManifestError, match=r"x-common: unknown key"):
        load_text(source, MANIFEST)
    spec = load_text(source.replace("x-common: &common", "proxy: &common", 1).replace(
        "  restart: never\n  env", "  restart: never\n  env", 1), MANIFEST) if False else None
    assert spec is None
    source = text(
        """
        services:
          web: &web
            command: a
            restart: never
            env: {DEBUG: "1"}
          api:
            <<: *web
            command: b
            restart: always
        """
    )
    services = load_text(source, MANIFEST).spec.services
    assert (services["api"].command, services["api"].restart) == ("b", RestartPolicy.ALWAYS)
    assert dict(services["api"].env) == {"DEBUG": "1"}


def test_absolute_and_home_relative_paths(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(project / "simon"))
    source = text(WEB) + f"    cwd: {project / 'simon'}\n"
    source += "routes:\n  - path: /\n    static: ~/public\n"
    spec = load_text(source, MANIFEST).spec
    assert spec.services["web"].cwd == project / "simon"
    assert spec.routes[0].static == project / "simon" / "public"


def test_relative_paths_start_at_the_manifest_folder_not_the_current_one(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "simon")
    spec = load_text(text(WEB) + "    cwd: simon\n", project / "devstack.yaml").spec
    assert spec.services["web"].cwd == project / "simon"


# --- finding and reading the file -----------------------------------------------------------


def test_find_manifest_prefers_devstack_yaml(project: Path) -> None:
    (project / "Procfile").write_text("web: x\n")
    assert find_manifest(project) == project / "Procfile"
    (project / "devstack.yml").write_text(text(WEB))
    assert find_manifest(project) == project / "devstack.yml"
    (project / "devstack.yaml").write_text(text(WEB))
    assert find_manifest(project) == project / "devstack.yaml"


def test_find_manifest_says_what_it_looked_for(project: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        find_manifest(project / "simon")
    assert str(caught.value) == (
        f"no manifest in {project}/simon: looked for devstack.yaml, devstack.yml and Procfile; "
        "create one there, or pass the manifest's path"
    )


def test_load_finds_the_manifest_in_cwd(project: Path) -> None:
    (project / "devstack.yaml").write_text(text(WEB))
    assert load().spec.manifest_path == project / "devstack.yaml"
    assert list(load(cwd=project).spec.services) == ["web"]
    assert load(project).spec.manifest_path == project / "devstack.yaml"


def test_messages_name_the_file_as_given(project: Path) -> None:
    (project / "simon" / "devstack.yaml").write_text("services:\n")
    with pytest.raises(ManifestError, match=r"^simon/devstack\.yaml:1: services: no services"):
        load(Path("simon/devstack.yaml"))
    with pytest.raises(ManifestError, match=rf"^{project}/simon/devstack\.yaml:1: "):
        load(cwd=project / "simon")


def test_devstack_yml_beside_devstack_yaml_is_ignored_with_a_warning(project: Path) -> None:
    (project / "devstack.yaml").write_text(text(WEB))
    (project / "devstack.yml").write_text("nonsense: [")
    assert load(MANIFEST).warnings == (
        "devstack.yml: ignored, devstack.yaml beside it is used",
    )


def test_missing_file(project: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load(Path("other.yaml"))
    assert str(caught.value) == (
        "other.yaml: no such file; check the path, or leave it out to use the devstack.yaml "
        "or Procfile of the current folder"
    )


def test_unreadable_file(project: Path) -> None:
    loop = project / "devstack.yaml"
    loop.symlink_to(loop)
    with pytest.raises(ManifestError) as caught:
        load(MANIFEST)
    assert str(caught.value) == (
        "devstack.yaml: cannot read the manifest: Too many levels of symbolic links"
    )


def test_file_that_is_not_utf8(project: Path) -> None:
    (project / "devstack.yaml").write_bytes(b"services:\n  caf\xe9: {}\n")
    with pytest.raises(ManifestError) as caught:
        load(MANIFEST)
    assert str(caught.value) == "devstack.yaml: not UTF-8 text (byte 0xe9 at offset 16)"


@pytest.mark.parametrize("content", ["", "\n\n", "# services will come\n", "~\n"])
def test_empty_file(project: Path, content: str) -> None:
    (project / "devstack.yaml").write_text(content)
    with pytest.raises(ManifestError) as caught:
        load(MANIFEST)
    assert str(caught.value) == (
        "devstack.yaml: the manifest is empty; it needs a 'services' mapping with at least "
        "one service"
    )


def test_byte_order_mark_is_accepted(project: Path) -> None:
    (project / "devstack.yaml").write_bytes(b"\xef\xbb\xbf" + text(WEB).encode())
    assert list(load(MANIFEST).spec.services) == ["web"]


# --- Procfile -------------------------------------------------------------------------------


def test_procfile(project: Path) -> None:
    (project / "Procfile").write_text("# the app\nweb: python app.py --port $PORT\n\nworker: celery\n")
    (project / ".env").write_text("DEBUG=1\nQUOTED='a b'\n")
    result = load()
    spec = result.spec
    assert result.warnings == ()
    assert spec.kind is ManifestKind.PROCFILE
    assert spec.manifest_path == project / "Procfile"
    assert spec.routes == ()
    assert list(spec.services) == ["web", "worker"]
    web = spec.services["web"]
    assert (web.command, web.cwd, web.port, web.line) == (
        "python app.py --port $PORT", project, None, 2,
    )
    assert dict(web.env) == {"DEBUG": "1", "QUOTED": "a b"}
    assert web.env_files == (project / ".env",)
    assert spec.services["worker"].line == 4


def test_procfile_without_dotenv(project: Path) -> None:
    (project / ".env").unlink()
    spec = load_text("web: x\n", Path("Procfile")).spec
    assert (dict(spec.services["web"].env), spec.services["web"].env_files) == ({}, ())


def test_procfile_duplicate_names(project: Path) -> None:
    with pytest.raises(ManifestErrors) as caught:
        load_text("web: a\nworker: b\nweb: c\nworker: d\n", Path("Procfile"))
    assert str(caught.value) == (
        "Procfile:3: web: defined twice (first on line 1); process names must be unique\n"
        "Procfile:4: worker: defined twice (first on line 2); process names must be unique"
    )


def test_procfile_unreadable_line_is_a_warning(project: Path) -> None:
    result = load_text("web: a\nthis is not a process\n", Path("Procfile"))
    assert result.warnings == ("Procfile:2: line ignored: expected 'name: command'",)
    assert list(result.spec.services) == ["web"]


@pytest.mark.parametrize("content", ["", "# nothing yet\n", "web:\n"])
def test_procfile_without_processes(project: Path, content: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(content, Path("Procfile"))
    assert str(caught.value).startswith("Procfile")
    assert "no processes found; each line should read 'name: command'" in str(caught.value)
