"""The control socket from the command line: `devstack status/ports/logs/restart/stop/start/down`
against real stacks (`devstack up --port 0` as a subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.errors import StackNotRunning
from tests.conditions import pid_alive, wait_until
from tests.e2e.conftest import WEB_AND_WORKER, DevstackProcess, DevstackRunner

pytestmark = pytest.mark.e2e

EXIT_NOT_RUNNING = StackNotRunning.exit_code


def write_stack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devstack.yaml").write_text(WEB_AND_WORKER)
    return folder


def start_stack(devstack: DevstackRunner, folder: Path) -> DevstackProcess:
    run = devstack.start("up", "--port", "0", "--no-watch", cwd=write_stack(folder))
    run.wait_for("service(s) up")
    return run


def status(devstack: DevstackRunner, folder: Path) -> dict[str, Any]:
    result = devstack.run("status", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def service(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in document["services"] if s["name"] == name)
    return found


def wait_state(devstack: DevstackRunner, folder: Path, name: str, state: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(service(status(devstack, folder), name))
        return bool(found["state"] == state)

    wait_until(reached, timeout=20, message=f"{name} to be {state}")
    return found


def test_status_shows_the_stack_and_its_services(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "stack"
    run = start_stack(devstack, folder)
    proxy = re.search(r"proxy listening on (https://localhost:(\d+))", run.output)
    assert proxy
    document = status(devstack, folder)
    assert document["version"] == 1
    assert document["stack"] == {
        "manifest": str(folder / "devstack.yaml"),
        "pid": run.pid,
        "proxy_url": proxy.group(1),
        "proxy_port": int(proxy.group(2)),
        "ca_path": document["stack"]["ca_path"],
    }
    assert Path(document["stack"]["ca_path"]).read_text().startswith("-----BEGIN CERTIFICATE")
    web = service(document, "web")
    assert web["state"] == "ready" and web["ready"] is True and pid_alive(web["pid"])
    assert web["url"] == f"https://web.localhost:{proxy.group(2)}/"
    assert (web["restarts"], web["exit_code"], web["wanted_port"]) == (0, None, None)

    human = devstack.run("status", cwd=folder)
    assert human.returncode == 0
    assert human.stdout.splitlines()[0] == (
        f"# {folder / 'devstack.yaml'}: running (pid {run.pid}), {proxy.group(1)}"
    )
    assert re.search(rf"^web +ready +{web['pid']} +{web['port']} +0 ", human.stdout, re.M)

    ports = devstack.run("ports", cwd=folder)
    assert ports.returncode == 0
    assert f"running (pid {run.pid})" in ports.stdout
    assert re.search(rf"^web +- +{web['port']}", ports.stdout, re.M)

    sock = folder / ".devstack" / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / ".devstack").stat().st_mode) == 0o700


def test_stop_start_restart_and_unknown_names(devstack: DevstackRunner, tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    start_stack(devstack, folder)
    first = service(status(devstack, folder), "worker")["pid"]

    stopped = devstack.run("stop", "worker", cwd=folder)
    assert (stopped.returncode, stopped.stdout) == (0, "stopping: worker\n")
    worker = wait_state(devstack, folder, "worker", "stopped")
    assert worker["pid"] is None
    wait_until(lambda: not pid_alive(first), message="the stopped worker's process to be gone")
    assert service(status(devstack, folder), "web")["state"] == "ready"

    assert devstack.run("start", "worker", cwd=folder).returncode == 0
    second = wait_state(devstack, folder, "worker", "ready")["pid"]
    assert second not in (None, first)

    web = service(status(devstack, folder), "web")["pid"]
    assert devstack.run("restart", "web", "worker", cwd=folder).returncode == 0
    wait_until(
        lambda: all(
            s["state"] == "ready" and s["pid"] not in (web, second)
            for s in status(devstack, folder)["services"]
        ),
        timeout=20,
        message="web and worker to be ready again as new processes",
    )

    unknown = devstack.run("restart", "wbe", cwd=folder)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "error: no service named wbe in this stack; its services: web, worker\n"
    )


def test_logs_prints_the_last_lines_and_follows(devstack: DevstackRunner, tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    start_stack(devstack, folder)
    worker = devstack.run("logs", "worker", "-n", "1", cwd=folder)
    assert worker.returncode == 0
    assert worker.stdout.splitlines()[-1].endswith("worker up")
    assert len(worker.stdout.splitlines()) == 1
    both = devstack.run("logs", cwd=folder)
    assert re.search(r"^web +\| .*Serving HTTP", both.stdout, re.M)
    assert re.search(r"^worker \| .*worker up", both.stdout, re.M)

    out = tmp_path / "follow.out"
    with open(out, "wb") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "devstack", "logs", "worker", "-f", "-n", "1"],
            cwd=folder, env=devstack.env, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        def ups() -> int:  # the worker's own line, not devstack's "starting: ... 'worker up'"
            return len(re.findall(r"\d worker up$", out.read_text(), re.M))

        try:
            wait_until(
                lambda: out.stat().st_size > 0, timeout=20,
                message="`logs -f` to print the last line, so it follows from there",
            )  # fmt: skip
            before = ups()
            assert devstack.run("restart", "worker", cwd=folder).returncode == 0
            wait_until(
                lambda: ups() == before + 1, timeout=20,
                message="`logs -f` to print the restarted worker's line",
            )  # fmt: skip
            assert devstack.run("down", cwd=folder).returncode == 0
            assert follower.wait(timeout=20) == 0, "`logs -f` ends with the stack"
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()


def test_down_returns_once_devstack_and_every_service_are_gone(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "stack"
    run = start_stack(devstack, folder)
    pids = [s["pid"] for s in status(devstack, folder)["services"]]
    result = devstack.run("down", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert not pid_alive(run.pid), "down returned before devstack exited"
    assert not any(pid_alive(pid) for pid in pids), "down returned before the services exited"
    assert run.popen.wait(timeout=10) == 0
    assert not (folder / ".devstack" / "control.sock").exists()
    again = devstack.run("status", cwd=folder)
    assert again.returncode == EXIT_NOT_RUNNING


@pytest.mark.parametrize(
    "broken",
    ["services: [\n", "services:\n  web:\n    comand: python3 -m http.server\n", ""],
    ids=["invalid-yaml", "invalid-manifest", "empty"],
)
def test_a_running_stack_answers_and_stops_after_its_manifest_broke(
    devstack: DevstackRunner, tmp_path: Path, broken: str
) -> None:
    # An edit in progress must not lock the user out of the stack that is running.
    folder = tmp_path / "stack"
    run = start_stack(devstack, folder)
    (folder / "devstack.yaml").write_text(broken)
    assert service(status(devstack, folder), "web")["state"] == "ready"
    logs = devstack.run("logs", "web", "-n", "5", cwd=folder)
    assert logs.returncode == 0, logs.stderr
    pids = [s["pid"] for s in status(devstack, folder)["services"]]
    result = devstack.run("down", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert not pid_alive(run.pid)
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.parametrize(
    "command",
    [["status"], ["status", "--json"], ["logs"], ["restart", "web"], ["stop", "web"],
     ["start", "web"], ["down"]],
)  # fmt: skip
def test_with_no_stack_running_commands_say_so(
    devstack: DevstackRunner, tmp_path: Path, command: list[str]
) -> None:
    folder = write_stack(tmp_path / "stack")
    result = devstack.run(*command, cwd=folder)
    assert result.returncode == EXIT_NOT_RUNNING
    assert result.stderr == (
        f"error: no devstack is running for {folder / 'devstack.yaml'}; "
        "start one with `devstack up`\n"
    )


def test_two_stacks_from_two_folders_do_not_touch_each_other(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first, second = start_stack(devstack, one), start_stack(devstack, two)
    a, b = status(devstack, one), status(devstack, two)
    assert (a["stack"]["pid"], b["stack"]["pid"]) == (first.pid, second.pid)
    assert a["stack"]["proxy_port"] != b["stack"]["proxy_port"]
    assert service(a, "web")["port"] != service(b, "web")["port"]
    assert devstack.run("down", cwd=one).returncode == 0
    assert not pid_alive(first.pid)
    assert status(devstack, two)["services"] == b["services"], "the other stack was touched"
    assert service(b, "web")["pid"] is not None and pid_alive(service(b, "web")["pid"])


def test_a_stale_socket_after_kill_9_is_cleaned_and_reported_as_not_running(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    # A path too long for a socket's address: reached through its folder's descriptor.
    folder = tmp_path / ("a-long-folder-name-" * 6)
    run = start_stack(devstack, folder)
    pids = [s["pid"] for s in status(devstack, folder)["services"]]
    state = folder / ".devstack"
    os.kill(run.pid, signal.SIGKILL)
    run.popen.wait(timeout=10)
    wait_until(
        lambda: not any(pid_alive(pid) for pid in pids), timeout=20,
        message="the guardian to kill the services of the killed devstack",
    )  # fmt: skip
    assert (state / "control.sock").exists() and (state / "run.json").exists()
    result = devstack.run("status", cwd=folder, timeout=10)
    assert result.returncode == EXIT_NOT_RUNNING
    assert "no devstack is running for" in result.stderr
    assert not (state / "control.sock").exists() and not (state / "run.json").exists()
    again = start_stack(devstack, folder)  # and the next run starts as usual
    assert status(devstack, folder)["stack"]["pid"] == again.pid
