"""The CLI's side of the control socket: find the stack running for a manifest, ask it one
thing, and wait for what a request sets off (``down``: every process gone).

Whether a stack runs is the run lock's answer (:func:`devstack.run.lock.live_record`), not the
socket's: a socket or record left by a crashed run (``kill -9``) is removed here, and the
command says nothing is running, at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devstack.control import protocol
from devstack.control.address import reachable, socket_path
from devstack.control.protocol import ProtocolError, Request
from devstack.errors import ControlError, StackNotRunning
from devstack.run.lock import RECORD_NAME, live_record

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
"""How long a live run may take to start answering (it binds the socket as it starts)."""
DOWN_TIMEOUT_SECONDS = 300.0
"""How long ``down`` waits for every process to be gone (services' stop timeouts included)."""
POLL_SECONDS = 0.02


class Stack:
    """The stack running for the manifest whose state folder is ``state_dir``."""

    def __init__(self, state_dir: Path, manifest: Path) -> None:
        self.state_dir = state_dir
        self.manifest = manifest
        self.socket = socket_path(state_dir)

    def not_running(self) -> StackNotRunning:
        return StackNotRunning(
            f"no devstack is running for {self.manifest}; start one with `devstack up`"
        )

    def is_live(self) -> bool:
        """Whether a run holds the lock; if none does, clean what a crashed one left."""
        if live_record(self.state_dir) is not None:
            return True
        for leftover in (self.socket, self.state_dir / RECORD_NAME):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                logger.info("removed %s, left by a devstack that did not stop cleanly", leftover)
        return False

    def ask(self, command: str, *names: str) -> dict[str, Any]:
        """Send one request; its answer's fields. :class:`StackNotRunning` when no stack runs,
        :class:`ControlError` when it refuses."""
        if not self.is_live():
            raise self.not_running()
        sock = self._connect()
        with sock:
            sock.settimeout(ANSWER_TIMEOUT_SECONDS)
            try:
                sock.sendall(Request(command, names).encode())
                answer = _read_line(sock)
            except OSError as exc:
                raise ControlError(f"the stack for {self.manifest} did not answer: {exc}") from exc
        if not answer:
            raise ControlError(f"the stack for {self.manifest} closed the connection")
        try:
            return protocol.parse_answer(answer)
        except ProtocolError as exc:
            raise ControlError(str(exc)) from exc

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with reachable(self.socket) as name:
                    sock.connect(name)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not self.is_live():
                    raise self.not_running() from None
                if time.monotonic() > deadline:
                    raise ControlError(
                        f"devstack is running for {self.manifest} but its control socket "
                        f"({self.socket}) does not answer: {exc.strerror}"
                    ) from exc
            except BaseException:
                sock.close()
                raise
            time.sleep(POLL_SECONDS)  # a live run binds its socket as it starts

    def down(self, timeout: float = DOWN_TIMEOUT_SECONDS) -> int:
        """Stop the stack; return once devstack and every service's process group are gone.
        The number of processes waited for."""
        answer = self.ask("down")
        pid = int(answer["pid"])
        groups = [int(group) for group in answer.get("service_pids", [])]
        deadline = time.monotonic() + timeout
        # devstack's own group may hold its readers (`devstack up | tee`): only its pid counts.
        while process_alive(pid) or live_groups(groups):
            if time.monotonic() > deadline:
                raise ControlError(f"devstack (pid {pid}) still runs after {timeout:g}s")
            time.sleep(POLL_SECONDS)
        self.is_live()  # cleans up if devstack could not
        return 1 + len(groups)


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs. A zombie counts as gone: its parent (or a slow init) may
    take its time to reap it."""
    if not os.path.isdir("/proc"):
        return _signalable(pid)
    return _runs_in_group(pid, None)


def live_groups(groups: Iterable[int]) -> set[int]:
    """Which of process groups ``groups`` still have a running process, zombies not counted.
    A group that no signal reaches is gone at the cost of one system call; /proc is read (once,
    for all of them) only while one is reachable, to tell its zombies from the living."""
    reachable = {group for group in groups if _signalable(-group)}
    if not reachable or not os.path.isdir("/proc"):
        return reachable
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            group = _running_group(int(entry))
            if group in reachable:
                found.add(group)
    return found


def _runs_in_group(pid: int, group: int | None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, unless ``group`` is None, is in ``group``."""
    found = _running_group(pid)
    return found is not None and (group is None or found == group)


def _running_group(pid: int) -> int | None:
    """The process group of ``pid`` while it runs; None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[2])


def _signalable(pid: int) -> bool:
    """Whether a signal reaches ``pid`` (a negative one: that process group)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
