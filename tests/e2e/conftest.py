"""Run ``devstack`` as users do: a subprocess, its output in a file, stopped like Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conditions import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WEB_AND_WORKER = """\
services:
  web:
    command: python -m http.server $PORT --bind 127.0.0.1
  worker:
    command: python -c "import time; print('worker up', flush=True); time.sleep(600)"
    health: false
"""
"""A small stack for the control and detached tests: a web service and one that never listens."""


class DevstackProcess:
    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "devstack", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        def seen() -> bool:
            if self.popen.poll() is not None and text not in self.output:
                raise AssertionError(
                    f"devstack exited ({self.popen.returncode}) before printing {text!r}:\n"
                    + self.output
                )
            return text in self.output

        wait_until(seen, timeout=timeout, message=f"devstack to print {text!r}")
        return self.output

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, then wait for devstack to exit by itself."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        try:
            self.interrupt()
        except subprocess.TimeoutExpired:
            self.popen.kill()  # the guardian takes the services down
            self.popen.wait()
        finally:
            self._file.close()


class DevstackRunner:
    def __init__(self, tmp_path: Path, log_dir: Path) -> None:
        """``tmp_path``: the default folder runs start in (often the manifest's, so watched);
        ``log_dir``: where each run's output is kept, outside it, so that writing the log never
        looks like an edit to the stack."""
        self.tmp_path = tmp_path
        self.log_dir = log_dir
        self.runs: list[DevstackProcess] = []
        self.env = dict(os.environ, NO_COLOR="1")
        # Services run `python ...`: the interpreter with the stack's packages first on PATH,
        # whatever the fixture's scope (a module-scoped one runs before `activated_environment`).
        bin_dir = os.path.dirname(sys.executable)
        path = self.env.get("PATH", "")
        if path.split(os.pathsep)[0] != bin_dir:
            self.env["PATH"] = bin_dir + os.pathsep + path

    def start(self, *args: str, cwd: Path | None = None) -> DevstackProcess:
        log = self.log_dir / f"devstack-{len(self.runs)}.log"
        run = DevstackProcess(list(args), cwd or self.tmp_path, self.env, log)
        self.runs.append(run)
        return run

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devstack", *args],
            cwd=cwd or self.tmp_path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def close(self) -> None:
        for run in self.runs:
            with contextlib.suppress(Exception):
                run.stop()


@pytest.fixture
def devstack(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevstackRunner]:
    runner = DevstackRunner(tmp_path, tmp_path_factory.mktemp("devstack-logs"))
    try:
        yield runner
    finally:
        runner.close()


def start_examples(devstack: DevstackRunner, tmp_path: Path) -> tuple[DevstackProcess, Path, int]:
    """`devstack up --port 0` on a copy of examples/ (its data in the test's folder): the run,
    the copy's folder and the proxy's port, once every service is up."""
    folder = tmp_path / "examples"
    shutil.copytree(
        EXAMPLES, folder, ignore=shutil.ignore_patterns(".devstack", "data", "node_modules")
    )
    devstack.env["SIMON_DATA_DIR"] = str(tmp_path / "simon-data")
    run = devstack.start("up", "--port", "0", cwd=folder)
    out = run.wait_for("service(s) up", timeout=60)
    match = re.search(r"proxy listening on https://localhost:(\d+)", out)
    assert match, out
    return run, folder, int(match.group(1))
