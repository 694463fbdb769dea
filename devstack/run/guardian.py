"""The guardian: a tiny process that kills every service group if devstack dies, even by kill -9.

devstack starts it once (``python -S guardian.py``, standard library only, so it starts in a few
milliseconds) in its own session, with a pipe on its stdin. devstack writes one line per process
group it starts (``+<pgid> <stop_timeout_seconds>``) and one per group it has stopped (``-<pgid>``).
When the pipe reaches end-of-file, devstack is gone: whatever groups are still registered get
SIGTERM, then SIGKILL after their stop timeout, and the guardian exits. On a normal shutdown the
registry is already empty and the guardian simply exits.

This file is also imported by ``devstack.run.process`` for :func:`group_members`, the one way
devstack decides whether a process group is empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.02


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``.

    Zombies count as gone: where init reaps orphans slowly (containers, some VMs), a group of
    zombies keeps ``killpg(pgid, 0)`` succeeding for seconds after everything died.

    That signal is still asked first: it costs one system call where reading ``/proc`` costs a
    few milliseconds, and when it finds nothing (not even a zombie) the group is empty. A stop
    or a reload waits for this answer before anything else happens.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:  # a member is someone else's now: /proc says whether it lives
        is_signalable = False
    else:
        is_signalable = True
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux: the kernel's answer about the group as a whole is all there is
        return [pgid] if is_signalable else []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # vanished while we looked
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_groups(groups: dict[int, float]) -> None:
    """SIGTERM every group, wait up to each one's timeout for it to empty, SIGKILL the rest."""
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    started = time.monotonic()
    pending = dict(groups)
    while pending:
        elapsed = time.monotonic() - started
        for pgid, timeout in list(pending.items()):
            if not group_members(pgid):
                del pending[pgid]
            elif elapsed >= timeout:
                signal_group(pgid, signal.SIGKILL)
                del pending[pgid]
        if pending:
            time.sleep(POLL_SECONDS)


def main() -> None:
    # Ctrl-C and hang-ups are for devstack, which stops things in order; the guardian only acts
    # when devstack is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: dict[int, float] = {}
    for raw in sys.stdin.buffer:
        line = raw.decode("ascii", "replace").strip()
        if line.startswith("+"):
            pgid, _, timeout = line[1:].partition(" ")
            groups[int(pgid)] = float(timeout or 5)
        elif line.startswith("-"):
            groups.pop(int(line[1:]), None)
    kill_groups(groups)


if __name__ == "__main__":
    main()


class Guardian:
    """devstack's side of the guardian: start it, tell it about process groups, let it go."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # -S: no site import, so the guardian costs a few milliseconds, not an interpreter's
        # worth of start-up; it needs nothing beyond the standard library.
        self._process = subprocess.Popen(
            [sys.executable, "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def register(self, pgid: int, stop_timeout_seconds: float) -> None:
        self._send(f"+{pgid} {stop_timeout_seconds}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def close(self) -> None:
        """Normal shutdown: every group was stopped and forgotten; the guardian exits on EOF."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _send(self, line: str) -> None:
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(line.encode())
            self._process.stdin.flush()
        except BrokenPipeError:  # the guardian died; devstack still stops its groups itself
            self._process = None
