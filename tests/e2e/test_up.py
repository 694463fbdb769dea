"""``devstack up`` end to end: real services, real ports, real signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

from tests.conditions import pid_alive, port_accepts, wait_until
from tests.e2e.conftest import DevstackRunner

PY = sys.executable
SERVE = f"{PY} -m http.server $PORT --bind 127.0.0.1"


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "devstack.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def write_web_manifest(folder: Path, *, port: int | None = None, more: str = "") -> Path:
    """One `web` service (python's http.server on $PORT), plus ``more`` services' YAML."""
    wanted = f"\n    port: {port}" if port is not None else ""
    return write_manifest(folder, f"services:\n  web:\n    command: {SERVE}{wanted}\n{more}")


@contextlib.contextmanager
def port_holder(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Another program (not devstack, not the test) listening on ``port``."""
    code = (
        "import socket, sys, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); "
        "print('listening', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == b"listening\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def read_pids(path: Path, count: int) -> list[int] | None:
    try:
        pids = [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return None
    return pids if len(pids) >= count else None


def test_a_taken_port_moves_names_the_holder_and_sticks(
    devstack: DevstackRunner, tmp_path: Path, free_port: int
) -> None:
    write_web_manifest(tmp_path, port=free_port)
    with port_holder(free_port) as holder:
        first = devstack.start("up", "--no-proxy")
        out = first.wait_for("service(s) up")
        prefix = f"web: port {free_port} is held by pid {holder.pid} ({PY} -c"
        assert prefix in out
        moved = int(out.split(prefix)[1].split("using ")[1].split()[0])
        assert port_accepts(moved)
        ports = devstack.run("ports")
        assert ports.returncode == 0
        row = next(line for line in ports.stdout.splitlines() if line.startswith("web "))
        assert row.split()[:3] == ["web", str(free_port), str(moved)]
        assert f"{free_port} is held by pid {holder.pid}" in row
        assert first.interrupt() == 0
        assert not port_accepts(moved), "the service outlived devstack"

        second = devstack.start("up", "--no-proxy")
        assert f"using {moved}" in second.wait_for("service(s) up")  # sticky
        assert second.interrupt() == 0


def test_nothing_survives_kill_9_of_devstack(devstack: DevstackRunner, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    sleeper = f"{PY} -c 'import time; time.sleep(120)'"
    write_manifest(
        tmp_path,
        f"""\
        services:
          family:
            command: "{sleeper} & echo $! >> {pids_file}; {sleeper} & echo $! >> {pids_file}; wait"
            health: false
          web:
            command: {SERVE}
        """,
    )
    run = devstack.start("up", "--no-proxy")
    run.wait_for("service(s) up")
    pids = wait_until(lambda: read_pids(pids_file, 2), message="the grandchildren's pids")
    assert isinstance(pids, list)
    run.popen.send_signal(signal.SIGKILL)
    run.popen.wait()
    try:
        wait_until(
            lambda: not any(pid_alive(p) for p in pids), timeout=15, message="grandchildren to die"
        )
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_second_up_is_refused_and_a_crashed_run_does_not_block(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    write_web_manifest(tmp_path)
    first = devstack.start("up", "--no-proxy")
    first.wait_for("service(s) up")
    refused = devstack.run("up", "--no-proxy")
    assert refused.returncode == 3
    assert f"devstack is already running for {tmp_path / 'devstack.yaml'} (pid {first.pid}" in (
        refused.stderr
    )
    assert "stop it first with `devstack down`" in refused.stderr
    first.popen.send_signal(signal.SIGKILL)  # crash: the run record stays behind
    first.popen.wait()
    assert (tmp_path / ".devstack" / "run.json").exists()
    again = devstack.start("up", "--no-proxy")
    assert "cleaned up after a run that did not stop cleanly" in again.wait_for("service(s) up")
    assert again.interrupt() == 0
    assert (tmp_path / ".devstack" / ".gitignore").read_text().endswith("*\n")


def test_command_not_found_fails_the_start_with_exit_5(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    write_web_manifest(tmp_path, more="  worker:\n    command: nodee worker.js\n")
    result = devstack.run("up", "--no-proxy")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "worker: command not found: nodee (command: nodee worker.js)" in result.stdout
    assert "error: worker: command not found: nodee" in result.stdout
    assert "web: stopped" in result.stdout  # what had started is stopped, not left behind


def test_an_invalid_manifest_exits_2_and_starts_nothing(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    write_manifest(
        tmp_path,
        """\
        services:
          web:
            comand: x
        """,
    )
    result = devstack.run("up")
    assert result.returncode == 2
    assert "devstack.yaml:3" in result.stderr
    assert "did you mean 'command'" in result.stderr
    assert not (tmp_path / ".devstack").exists()


def test_procfile_and_env_with_peer_addresses(devstack: DevstackRunner, tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text(
        f"web: {SERVE}\n"
        'env: echo "greeting=$GREETING port=$PORT api=$DEVSTACK_WEB_URL"; sleep 120\n'
    )
    (tmp_path / ".env").write_text("GREETING=hello\n")
    run = devstack.start("up", "--no-proxy")
    out = run.wait_for("api=http://127.0.0.1:")
    assert "greeting=hello port=" in out
    assert run.interrupt() == 0
    log = (tmp_path / ".devstack" / "logs" / "env.log").read_text()
    assert "greeting=hello" in log


def test_ctrl_c_stops_quickly_and_leaves_no_port(devstack: DevstackRunner, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_web_manifest(tmp_path, port=port)
    run = devstack.start("up", "--no-proxy")
    run.wait_for("service(s) up")
    assert port_accepts(port)
    assert run.interrupt(timeout=10) == 0
    assert not port_accepts(port)


def test_a_second_ctrl_c_forces_a_stubborn_service(
    devstack: DevstackRunner, tmp_path: Path
) -> None:
    (tmp_path / "stubborn.py").write_text(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
        "print('up', flush=True)\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    write_manifest(
        tmp_path,
        f"""\
        services:
          stubborn:
            command: {PY} stubborn.py
            health: false
            stop_timeout_seconds: 120
        """,
    )
    run = devstack.start("up", "--no-proxy")
    run.wait_for("service(s) up")
    run.wait_for("stubborn | up")
    run.popen.send_signal(signal.SIGINT)
    run.wait_for("ignoring SIGTERM")
    assert run.popen.poll() is None, "devstack should still be waiting for the service"
    run.popen.send_signal(signal.SIGINT)
    assert run.popen.wait(timeout=10) == 0
    assert "forcing: killing every service now" in run.output
