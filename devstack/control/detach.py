"""A stack in the background: start ``devstack up`` detached, wait until it answers, wait until
every service is ready.

The detached run is a plain ``devstack up`` in a session of its own (Ctrl-C in the terminal that
started it never reaches it), reading nothing and writing to ``.devstack/logs/devstack.log``.
It is "up" once its control socket answers for it: the proxy is bound and the supervisor runs.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.control.client import Stack
from devstack.control.render import prefixed, tail
from devstack.errors import ControlError, StackNotRunning

POLL_SECONDS = 0.02
LOG_NAME = "devstack.log"
TAIL_LINES = 20
SETTLED_STATES = ("done",)
"""States that count as ready for ``--wait``: a one-shot service that finished."""


@dataclass
class Detached:
    """A ``devstack up`` started in the background."""

    popen: subprocess.Popen[bytes]
    log: Path
    log_start: int
    """Where this run's output begins in :attr:`log` (the file is kept across runs)."""

    def log_tail(self, count: int = TAIL_LINES) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_start)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return lines[-count:]


def start(stack: Stack, up_arguments: Sequence[str]) -> Detached:
    """Start ``devstack up <up_arguments>`` for ``stack`` in the background."""
    logs = stack.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / LOG_NAME
    with open(log, "ab") as out:
        log_start = out.tell()
        popen = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up", "--file", str(stack.manifest), *up_arguments],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Detached(popen, log, log_start)


def wait_answering(stack: Stack, run: Detached, *, proxy: bool) -> dict[str, Any] | None:
    """Wait until ``run`` answers on the control socket (and, with ``proxy``, its proxy serves):
    its status document, or None when it exited first (its code in ``run.popen.returncode``)."""
    while run.popen.poll() is None:
        try:
            document = stack.ask("status")
        except (StackNotRunning, ControlError):
            document = None
        if (
            document is not None
            and document["stack"]["pid"] == run.popen.pid
            and (document["stack"]["proxy_url"] is not None or not proxy)
        ):
            return document
        time.sleep(POLL_SECONDS)  # the run is starting: its socket comes up when it is
    return None


def not_ready(document: Mapping[str, Any]) -> list[str]:
    """The services of a status document that ``--wait`` still waits for."""
    return [
        s["name"]
        for s in document["services"]
        if not s["ready"] and s["state"] not in SETTLED_STATES
    ]


def wait_ready(stack: Stack, timeout: float) -> tuple[dict[str, Any], list[str]]:
    """Poll the stack's status until every service is ready or ``timeout`` seconds pass: the
    last status document and the services not ready (empty: all are)."""
    deadline = time.monotonic() + timeout
    while True:
        document = stack.ask("status")
        waiting = not_ready(document)
        if not waiting or time.monotonic() > deadline:
            return document, waiting
        time.sleep(POLL_SECONDS)  # readiness is the stack's to report: it is polled


def print_service_tails(stack: Stack, names: Sequence[str], count: int = TAIL_LINES) -> None:
    """The last ``count`` lines of each of ``names`` (``.devstack/logs/<name>.log``), on stderr."""
    print_tails(stack.state_dir / "logs", names, count)


def print_tails(logs_dir: Path, names: Sequence[str], count: int = TAIL_LINES) -> None:
    """The last ``count`` lines of each of ``names`` from ``logs_dir``, on stderr."""
    width = max(map(len, names), default=0)
    for name in names:
        lines, _ = tail(logs_dir / f"{name}.log", count)
        print(f"--- last lines of {name} ---", file=sys.stderr)
        for line in prefixed(name, lines, width):
            print(line, file=sys.stderr)


def troubled(document: Mapping[str, Any]) -> list[str]:
    """Services that crashed, failed or restarted: whose logs explain a failed command."""
    return [
        s["name"]
        for s in document["services"]
        if s["restarts"] or s["state"] in ("crashed", "failed", "backoff")
    ]


def stop_if_running(stack: Stack) -> None:
    """``down`` the stack, unless it is already gone."""
    with contextlib.suppress(StackNotRunning):
        stack.down()


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: a death by signal N as 128+N."""
    return 128 - returncode if returncode < 0 else returncode
