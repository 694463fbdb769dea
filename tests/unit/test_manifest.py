"""manifest.py and schema.py: devstack.yaml / Procfile -> StackSpec, and every message they give.

Each test runs in its own folder (``project``) holding ``simon/public/``, a plain file ``afile``
and an empty ``.env``; manifests are named ``devstack.yaml`` relative to it, so messages read
``devstack.yaml:<line>: ...`` exactly as a user in that folder sees them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from devstack.errors import ManifestError, ManifestErrors
from devstack.manifest.loader import find_manifest, load, load_text
from devstack.manifest.spec import (
    DEFAULT_WATCH,
    HealthSpec,
    ManifestKind,
    ProxySpec,
    ReloadMode,
    RestartPolicy,
    RouteSpec,
)

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
        load_text(source, MANIFEST)
    return str(caught.value)


# --- the table of messages ------------------------------------------------------------------

WEB = """
services:
  web:
    command: python app.py
"""


def error_table() -> list[object]:
    """The rows of manifests/errors.yaml, plus the cases YAML cannot hold as written."""
    rows = yaml.safe_load((Path(__file__).parent / "manifests" / "errors.yaml").read_text())
    params: list[object] = [
        pytest.param(
            row["manifest"],
            row["error"] if isinstance(row["error"], str) else "\n".join(row["error"]),
            id=name,
        )
        for name, row in rows.items()
    ]
    params.append(pytest.param(
        "services:\n\tweb: {}\n",
        "devstack.yaml:2: invalid YAML: found character '\\t' that cannot start any token; "
        "indent with spaces",
        id="yaml-tab",
    ))
    return params


@pytest.mark.parametrize(("source", "message"), error_table())
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
    assert (web.env_files, web.depends_on) == ((), ())
    assert (web.watch, web.watch_ignore, web.reload, web.live_reload) == (
        DEFAULT_WATCH, (), ReloadMode.RESTART, True,
    )
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
            watch_ignore: [server.log, "tmp/"]
            reload: blue-green
            live_reload: false
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
            live_reload: false
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
    assert simon.watch_ignore == ("server.log", "tmp/")
    assert (simon.reload, simon.live_reload) == (ReloadMode.BLUE_GREEN, False)
    assert simon.line == 10
    db = spec.services["db"]
    assert (db.restart, db.health) == (RestartPolicy.NEVER, HealthSpec(enabled=False))
    assert spec.routes == (
        RouteSpec(path="/api", service="simon", strip_prefix=True, line=29),
        RouteSpec(path="/", host="startup.localhost", static=project / "simon" / "public",
                  live_reload=False, line=32),
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
    assert spec.services["web"].watch == DEFAULT_WATCH
    assert spec.routes == ()


@pytest.mark.parametrize(
    ("watch", "expected"),
    [
        ("", DEFAULT_WATCH),
        ("true", DEFAULT_WATCH),
        ("false", ()),
        ("[]", ()),
        ('"*.py"', ("*.py",)),
        ('["*.py", "templates/**/*.html", "/config.toml"]',
         ("*.py", "templates/**/*.html", "/config.toml")),
        ('"src/"', ("src/",)),
    ],
)
def test_watch_forms(project: Path, watch: str, expected: tuple[str, ...]) -> None:
    spec = load_text(text(WEB) + f"    watch: {watch}\n", MANIFEST).spec
    assert spec.services["web"].watch == expected


def test_watch_items_keep_their_lines(project: Path) -> None:
    source = text(WEB) + '    watch_ignore:\n      - "*.log"\n      - 5\n'
    assert error_of(source) == (
        "devstack.yaml:6: services.web.watch_ignore: expected a glob such as '*.py' or a list "
        "of globs (relative to the service's cwd), got integer 5"
    )


def test_anchors_merge_keys_and_x_extensions(project: Path) -> None:
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
    services = load_text(source, MANIFEST).spec.services
    assert (services["web"].command, services["web"].restart) == ("a", RestartPolicy.NEVER)
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
    assert str(caught.value) == "devstack.yaml: not UTF-8 text (byte 0xe9 at offset 15)"


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
    procfile = "# the app\nweb: python app.py --port $PORT\n\nworker: celery\n"
    (project / "Procfile").write_text(procfile)
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
    assert (web.watch, web.watch_ignore) == (DEFAULT_WATCH, ())  # everything under the folder
    assert spec.services["worker"].line == 4


def test_procfile_without_dotenv(project: Path) -> None:
    (project / ".env").unlink()
    spec = load_text("web: x\n", Path("Procfile.dev")).spec
    assert spec.kind is ManifestKind.PROCFILE
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


def test_a_proxy_bound_beyond_loopback_is_warned_about(tmp_path: Path) -> None:
    result = load_text(
        "proxy:\n  bind: [127.0.0.1, 0.0.0.0]\nservices:\n  web:\n    command: x\n",
        tmp_path / "devstack.yaml",
    )
    assert result.spec.proxy.bind == ("127.0.0.1", "0.0.0.0")
    assert result.warnings == (
        f"{tmp_path / 'devstack.yaml'}:2: proxy.bind: 0.0.0.0 is not a loopback address: other "
        "machines that can reach this one can reach the stack too; keep the default "
        "(127.0.0.1, ::1) unless you mean to share it",
    )


def test_text_with_a_lone_surrogate_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"devstack.yaml:2: not UTF-8 text \(U\+D800 at offset"):
        load_text("services:\n  web\ud800:\n    command: x\n", tmp_path / "devstack.yaml")


def test_a_procfile_is_read_without_pyyaml(tmp_path: Path) -> None:
    """PyYAML's import (about 35 ms) is only for devstack.yaml: a Procfile stack spawns sooner."""
    (tmp_path / "Procfile").write_text("web: python -m http.server $PORT\n")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from devstack.manifest import loader\n"
        f"spec = loader.load(Path({str(tmp_path / 'Procfile')!r})).spec\n"
        "print(list(spec.services), sorted(m for m in sys.modules if m.split('.')[0] == 'yaml'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "['web'] []", done.stdout
