"""The pytest plugin (``devstack.pytest_plugin``, loaded through its ``pytest11`` entry point),
exercised with pytest's own ``pytester``: each test runs a real pytest session in a subprocess
against a real stack, then checks what that session reported and that nothing it started is
left running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.errors import StackNotRunning
from tests.conditions import pid_alive
from tests.e2e.conftest import DevstackRunner

pytestmark = pytest.mark.e2e

WEB = """\
services:
  web:
    command: python -m http.server $PORT --bind 127.0.0.1
"""
NEVER_READY = """\
services:
  sleepy:
    command: python -c "import time; print('still booting', flush=True); time.sleep(600)"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, devstack: DevstackRunner) -> Iterator[pytest.Pytester]:
    """``pytester``'s folder as a project; whatever stack runs for it at the end is stopped
    (``down``, then its devstack killed by pid: its guardian stops the services)."""
    try:
        yield pytester
    finally:
        record = pytester.path / ".devstack" / "run.json"
        pid = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(record.read_text())["pid"])
        with contextlib.suppress(Exception):
            devstack.run("down", cwd=pytester.path)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def is_running(devstack: DevstackRunner, folder: Path) -> bool:
    result = devstack.run("status", cwd=folder)
    assert result.returncode in (0, StackNotRunning.exit_code), result.stderr
    return result.returncode == 0


def test_the_fixture_starts_the_stack_for_the_session_and_stops_it_after(
    project: pytest.Pytester, devstack: DevstackRunner
) -> None:
    (project.path / "devstack.yaml").write_text(WEB)
    project.makepyfile(test_stack=textwrap.dedent("""\
        import json, subprocess, sys, urllib.request

        def test_get(devstack):
            with urllib.request.urlopen(devstack.url("/"), context=devstack.ssl_context()) as r:
                assert r.status == 200
            document = devstack.status()
            assert document["version"] == 1
            with open("pids.json", "w") as f:
                json.dump([document["stack"]["pid"], devstack.status("web")["pid"]], f)

        def test_fails(devstack):
            urllib.request.urlopen(devstack.url("/missing-4242"), context=devstack.ssl_context())

        def test_restart_waits_for_the_new_process(devstack):
            before = devstack.status("web")
            after = devstack.restart("web")
            assert after["ready"] and after["pid"] != before["pid"]

        def test_environment_trusts_the_proxy(devstack):
            code = ("import os, urllib.request; "
                    "print(urllib.request.urlopen(os.environ['DEVSTACK_URL']).status)")
            done = subprocess.run([sys.executable, "-c", code], env=devstack.environment(),
                                  capture_output=True, text=True)
            assert done.stdout.strip() == "200", done.stderr

        def test_url_of_a_service_and_logs(devstack):
            port = devstack.proxy_url.rsplit(":", 1)[1]
            assert devstack.url("a/b", service="web") == f"https://web.localhost:{port}/a/b"
            assert any("GET / " in line for line in devstack.logs("web"))
        """))

    result = project.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_fails _*",
        "*- devstack: service logs -*",
        "--- web (ready, 0 restart(s)) ---",
        '*"GET /missing-4242 HTTP/1.1" 404*',
    ])
    # Only the failing test's report carries logs, and only what was logged during that test.
    assert result.stdout.str().count("devstack: service logs") == 1
    assert '"GET / HTTP/1.1" 200' not in result.stdout.str()
    pids = json.loads((project.path / "pids.json").read_text())
    assert not [pid for pid in pids if pid_alive(pid)]
    assert not is_running(devstack, project.path)


def test_devstack_url_uses_a_running_stack_and_leaves_it_running(
    project: pytest.Pytester, devstack: DevstackRunner
) -> None:
    (project.path / "devstack.yaml").write_text(WEB)
    up = devstack.run("up", "-d", "--wait", "--port", "0", cwd=project.path)
    assert up.returncode == 0, up.stderr
    status = json.loads(devstack.run("status", "--json", cwd=project.path).stdout)
    url = status["stack"]["proxy_url"]
    project.makepyfile(test_stack=textwrap.dedent(f"""\
        def test_uses_it(devstack):
            assert devstack.proxy_url == {url!r}
            assert devstack.status()["stack"]["pid"] == {status["stack"]["pid"]}
        """))

    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--devstack-url", url)

    result.assert_outcomes(passed=1)
    assert is_running(devstack, project.path)


def test_services_never_ready_fail_the_session_with_their_last_lines(
    project: pytest.Pytester, devstack: DevstackRunner
) -> None:
    (project.path / "devstack.yaml").write_text(NEVER_READY)
    project.makepyfile(test_stack="def test_needs_it(devstack):\n    pass\n")

    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--devstack-timeout", "1")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*devstack: not ready after 1s: sleepy*", "*still booting*"])
    assert "Traceback" not in result.stdout.str()
    assert not is_running(devstack, project.path)


def test_no_manifest_says_where_it_looked_and_what_to_do(project: pytest.Pytester) -> None:
    project.makepyfile(test_stack="def test_needs_it(devstack):\n    pass\n")

    result = project.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*devstack: no devstack.yaml, devstack.yml, Procfile found at or above the tests' folder*"
        "--devstack-manifest PATH*",
    ])


def test_suites_that_do_not_ask_for_the_fixture_start_nothing(project: pytest.Pytester) -> None:
    (project.path / "devstack.yaml").write_text(WEB)
    project.makepyfile(test_plain="def test_plain():\n    pass\n")

    result = project.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    assert not (project.path / ".devstack").exists()
