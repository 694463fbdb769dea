"""`devstack export` and `devstack import` as users run them: stdout, -o, errors and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, DevstackRunner

pytestmark = pytest.mark.e2e


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns(".devstack", "data",
                                                                     "node_modules"))
    return folder


def test_export_writes_to_stdout_the_same_bytes_every_time(devstack: DevstackRunner,
                                                           examples: Path) -> None:
    first = devstack.run("export", "caddy", "--domain", "example.com", cwd=examples)
    again = devstack.run("export", "caddy", "-f", str(examples / "devstack.yaml"),
                         "--domain", "example.com")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert first.stdout.startswith("# Caddyfile for devstack.yaml")
    assert "startup.example.com {" in first.stdout


@pytest.mark.parametrize("command", [["check"], ["export", "k8s"]])
def test_what_devstack_wrote_to_a_pipe_is_all_there_when_it_exits(
    devstack: DevstackRunner, tmp_path: Path, command: list[str]
) -> None:
    # devstack leaves with os._exit (no interpreter finalization: devstack.cli.leave). A pipe's
    # stdout is block-buffered (unless PYTHONUNBUFFERED says otherwise, so not here): what was
    # not flushed before would be lost. One short line, and more than a buffer's worth.
    names = [f"service{i:02d}" for i in range(20)]
    (tmp_path / "devstack.yaml").write_text("services:\n" + "".join(
        f"  {name}:\n    command: python3 -m http.server $PORT\n" for name in names
    ))  # fmt: skip
    images = [arg for name in names for arg in ("--image", f"{name}=example/{name}:1")]
    args = [*command, *(images if command[0] == "export" else [])]
    env = {k: v for k, v in devstack.env.items() if k != "PYTHONUNBUFFERED"}
    piped = subprocess.run([sys.executable, "-m", "devstack", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == 0, piped.stderr
    if command[0] == "check":
        assert piped.stdout == f"{tmp_path / 'devstack.yaml'}: ok: 20 service(s)\n"
    else:
        written = devstack.run(*args, "-o", "k8s.yaml", cwd=tmp_path)
        assert written.returncode == 0, written.stderr
        assert len(piped.stdout) > 16384  # more than a pipe's buffer
        assert piped.stdout == (tmp_path / "k8s.yaml").read_text()


def test_export_o_writes_a_file_or_a_folder_of_units(devstack: DevstackRunner,
                                                      examples: Path) -> None:
    done = devstack.run("export", "compose", "-o", "out/compose.yaml", "--image", "simon=s:1",
                        "--image", "startup=t:1", cwd=examples)
    assert done.returncode == 0, done.stderr
    assert (examples / "out" / "compose.yaml").read_text().startswith("# Compose file")
    assert done.stdout == ""
    units = devstack.run("export", "systemd", "-o", "units", cwd=examples)
    assert units.returncode == 0, units.stderr
    assert sorted(p.name for p in (examples / "units").iterdir()) == [
        "examples-simon.service", "examples-simon.target", "examples-startup.service",
        "examples-startup.target", "examples.target"]


def test_export_names_every_service_without_an_image(devstack: DevstackRunner,
                                                     examples: Path) -> None:
    done = devstack.run("export", "k8s", "--image", "simon=s:1", cwd=examples)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"error: {examples / 'devstack.yaml'}:12: services.startup.image: no image to run it "
        "from; set services.startup.image in the manifest, or pass --image startup=IMAGE\n")


def test_export_refuses_options_that_name_no_service(devstack: DevstackRunner,
                                                    examples: Path) -> None:
    done = devstack.run("export", "caddy", "--upstream", "nope=10.0.0.1:80", cwd=examples)
    assert done.returncode == 1
    assert "--upstream nope=...: no service named 'nope'" in done.stderr
    assert "its services: simon, startup" in done.stderr
    bad = devstack.run("export", "caddy", "--upstream", "simon", cwd=examples)
    assert bad.returncode == 2 and "expected NAME=HOST:PORT, got 'simon'" in bad.stderr


def test_import_writes_a_manifest_devstack_reads_and_never_overwrites(
    devstack: DevstackRunner, examples: Path, tmp_path: Path
) -> None:
    exported = devstack.run("export", "caddy", "--root", str(examples), "-o", "Caddyfile",
                            cwd=examples)
    assert exported.returncode == 0, exported.stderr
    imported = devstack.run("import", "caddy", "Caddyfile", "--root", str(examples), "-o",
                            "imported.yaml", cwd=examples)
    assert imported.returncode == 0, imported.stderr
    assert "wrote imported.yaml: 2 placeholder service(s), 4 route(s), 0 line(s) not mapped" \
        in imported.stderr
    checked = devstack.run("check", "-f", "imported.yaml", cwd=examples)
    assert checked.returncode == 0, checked.stderr
    again = devstack.run("import", "caddy", "Caddyfile", cwd=examples)
    assert again.returncode == 1
    assert "devstack.yaml exists; devstack import never overwrites a manifest" in again.stderr
