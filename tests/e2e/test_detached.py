"""Stacks in the background: `devstack up -d [--wait] [--timeout S]` and `devstack run -- CMD`,
against real stacks (each one stopped, or killed by pid, whatever the test's outcome)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.errors import ServiceStartError, StackNotRunning
from tests.conditions import pid_alive, wait_until
from tests.e2e.conftest import WEB_AND_WORKER, DevstackRunner

pytestmark = pytest.mark.e2e

EXIT_START_FAILED = ServiceStartError.exit_code
EXIT_NOT_RUNNING = StackNotRunning.exit_code
NEVER_READY = """\
services:
  web:
    command: python -m http.server $PORT --bind 127.0.0.1
  sleepy:
    command: python -c "import os,time;print('still booting',os.getpid(),flush=1);time.sleep(600)"
"""


@pytest.fixture
def stack(devstack: DevstackRunner, tmp_path: Path) -> Iterator[Path]:
    """A folder with a manifest; whatever stack runs for it at the end is stopped."""
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "devstack.yaml").write_text(WEB_AND_WORKER)
    try:
        yield folder
    finally:
        _stop(devstack, folder)


def _stop(devstack: DevstackRunner, folder: Path) -> None:
    record = folder / ".devstack" / "run.json"
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(json.loads(record.read_text())["pid"])
    with contextlib.suppress(Exception):
        devstack.run("down", cwd=folder)
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)  # its guardian takes the services down


def status(devstack: DevstackRunner, folder: Path) -> dict[str, Any]:
    result = devstack.run("status", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_up_detached_waits_until_every_service_is_ready(
    devstack: DevstackRunner, stack: Path
) -> None:
    result = devstack.run("up", "-d", "--wait", "--port", "0", cwd=stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "devstack down" in result.stdout
    match = re.search(r"pid (\d+)\): (https://localhost:\d+)", result.stdout)
    assert match, result.stdout
    document = status(devstack, stack)
    assert document["stack"]["pid"] == int(match.group(1))
    assert document["stack"]["proxy_url"] == match.group(2)
    assert [s["ready"] for s in document["services"]] == [True, True]
    pids = [document["stack"]["pid"]] + [s["pid"] for s in document["services"]]

    down = devstack.run("down", cwd=stack)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert devstack.run("status", cwd=stack).returncode == EXIT_NOT_RUNNING


def test_timeout_stops_a_stack_that_never_gets_ready(
    devstack: DevstackRunner, stack: Path
) -> None:
    (stack / "devstack.yaml").write_text(textwrap.dedent(NEVER_READY))
    result = devstack.run("up", "-d", "--timeout", "1.5", "--port", "0", cwd=stack)
    assert result.returncode == EXIT_START_FAILED, result.stdout + result.stderr
    assert "not ready after 1.5s: sleepy" in result.stderr
    match = re.search(r"still booting (\d+)", result.stderr)
    assert match, result.stderr  # the last lines of the service that is not ready
    assert not pid_alive(int(match.group(1)))
    assert not (stack / ".devstack" / "control.sock").exists()
    assert devstack.run("status", cwd=stack).returncode == EXIT_NOT_RUNNING


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys; sys.exit(0)", 0),
        ("import sys; sys.exit(1)", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + signal.SIGTERM),
    ],
)
def test_run_exits_with_the_commands_status_and_stops_the_stack(
    devstack: DevstackRunner, stack: Path, code: str, expected: int
) -> None:
    result = devstack.run("run", "--port", "0", "--", "python", "-c", code, cwd=stack)
    assert result.returncode == expected, result.stdout + result.stderr
    assert devstack.run("status", cwd=stack).returncode == EXIT_NOT_RUNNING
    assert not (stack / ".devstack" / "control.sock").exists()


def test_run_gives_the_command_the_stack_and_its_ca(
    devstack: DevstackRunner, stack: Path
) -> None:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        devstack.env.pop(name, None)
    fetch = (
        "import os, urllib.request\n"
        "print('worker', os.environ['DEVSTACK_WORKER_PORT'])\n"
        "with urllib.request.urlopen(os.environ['DEVSTACK_URL'] + '/') as r:\n"
        "    print('status', r.status, os.environ['DEVSTACK_URL'])\n"
    )
    result = devstack.run("run", "--port", "0", "--", "python", "-c", fetch, cwd=stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^worker \d+$", result.stdout, re.M), result.stdout
    assert re.search(r"^status 200 https://localhost:\d+$", result.stdout, re.M), result.stdout


def test_run_starts_the_command_once_the_proxy_serves(
    devstack: DevstackRunner, stack: Path
) -> None:
    """Not merely once its socket listens: the stack's record names the proxy's URL only once
    the proxy has started, and the command sees it there."""
    look = (
        "import json, subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-m', 'devstack', 'status', '--json'],\n"
        "                     capture_output=True, text=True, check=True).stdout\n"
        "print('proxy', json.loads(out)['stack']['proxy_url'])\n"
    )
    result = devstack.run("run", "--port", "0", "--", "python", "-c", look, cwd=stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^proxy https://localhost:\d+$", result.stdout, re.M), result.stdout


def test_run_leaves_a_running_stack_running(devstack: DevstackRunner, stack: Path) -> None:
    up = devstack.run("up", "-d", "--port", "0", cwd=stack)
    assert up.returncode == 0, up.stderr
    before = status(devstack, stack)
    result = devstack.run(
        "run", "--", "python", "-c", "import os; print(os.environ['DEVSTACK_URL'])", cwd=stack
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == before["stack"]["proxy_url"]
    after = status(devstack, stack)
    assert after["stack"]["pid"] == before["stack"]["pid"]
    assert pid_alive(after["stack"]["pid"])


CRASH_WEB_THEN_FAIL = """\
import json, os, signal, subprocess, sys, time

def web():
    status = subprocess.run([sys.executable, "-m", "devstack", "status", "--json"],
                            capture_output=True, text=True, check=True)
    return next(s for s in json.loads(status.stdout)["services"] if s["name"] == "web")

os.kill(web()["pid"], signal.SIGKILL)
deadline = time.monotonic() + 30
while web()["restarts"] < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(3)
"""


def test_run_prints_the_last_lines_of_crashed_services_when_the_command_fails(
    devstack: DevstackRunner, stack: Path
) -> None:
    result = devstack.run("run", "--port", "0", "--", "python", "-c", CRASH_WEB_THEN_FAIL,
                          cwd=stack)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "--- last lines of web ---" in result.stderr
    assert "--- last lines of worker ---" not in result.stderr  # it neither crashed nor restarted
    assert devstack.run("status", cwd=stack).returncode == EXIT_NOT_RUNNING


def test_ctrl_c_during_run_reaches_the_command_and_stops_the_stack(
    devstack: DevstackRunner, stack: Path
) -> None:
    run = devstack.start(
        "run", "--port", "0", "--", "python", "-c",
        "import time; print('command started', flush=True); time.sleep(600)", cwd=stack,
    )
    run.wait_for("command started")
    assert run.interrupt() == 128 + signal.SIGINT, run.output
    assert devstack.run("status", cwd=stack).returncode == EXIT_NOT_RUNNING


def test_run_stopped_by_down_before_its_command_starts_says_so_and_fails(
    devstack: DevstackRunner, stack: Path
) -> None:
    (stack / "devstack.yaml").write_text(NEVER_READY)
    run = devstack.start("run", "--port", "0", "--timeout", "60", "--", "python", "-c",
                         "print('the command ran')", cwd=stack)
    wait_until(lambda: devstack.run("status", cwd=stack).returncode == 0,
               message="the run's stack to answer")
    assert devstack.run("down", cwd=stack).returncode == 0
    assert run.popen.wait(timeout=30) == 1, run.output
    assert "stopped before the command could start" in run.output
    assert "the command ran" not in run.output
