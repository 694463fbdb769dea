"""The guardian: a tiny process that kills every service's processes if devstack dies, even by
kill -9; and the one place that says which processes are a service's.

devstack starts it once (``python -S guardian.py``, standard library only, so it starts in a few
milliseconds) in its own session, with a pipe on its stdin. devstack writes one line per service
process it starts (``+<pgid> <stop_timeout_seconds> <mark> <start time>``, see :class:`Family`)
and one per process it has stopped (``-<pgid>``). When the pipe reaches end-of-file, devstack is
gone: whatever families are still registered get SIGTERM, then SIGKILL after their stop timeout,
and the guardian exits. On a normal shutdown the registry is already empty and the guardian
simply exits.

**Which processes are a service's.** Its process group, led by the process devstack spawned,
holds the service's children and grandchildren. A descendant may leave the group on purpose (a
daemon: ``setsid``, a double fork), and then it is no longer a member, nor, once its parent
exits, a descendant of anything devstack knows. So every service's environment carries a mark,
``DEVSTACK_SERVICE_MARK`` (random, one per spawn), which every descendant inherits whatever group
or session it moves to (as Jenkins finds a build's escaped processes by the ``BUILD_ID`` in
their environment). A process that clears its environment *and* leaves its group cannot be found
this way; nor can one that changes its user (its environment is not readable any more). This
needs Linux's ``/proc``; elsewhere (macOS) the process group alone is stopped, as before. Neither
the subreaper (``PR_SET_CHILD_SUBREAPER``, which would make devstack the parent of every orphan
and the reaper of their zombies) nor cgroups (not delegated to a user's terminal session) is
used.

**Never a stranger.** A process group number is free again once the group is empty, and the
kernel may hand it to anyone. A group is signalled only while it is provably the service's: its
leader alive with the start time it had when spawned, or one of its members carrying the mark.
A process outside the group is signalled only through a pidfd opened on it, after its mark was
read again (so a pid reused between looking and signalling is never hit).

This file is also imported by ``devstack.run.process`` and ``devstack.run.spawn``:
:func:`group_members` is the one way devstack decides whether a process group is empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

POLL_SECONDS = 0.02
_HAS_PROC = os.path.isdir("/proc/self")
"""Linux: processes' groups, start times and environments can be read; elsewhere only the
process group is signalled, as it always was."""
MARK_VARIABLE = "DEVSTACK_SERVICE_MARK"
"""In every service's environment: which spawn of which service a process descends from."""


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


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """``/proc/<pid>/stat`` after the command's name: state, ppid, pgrp, ... (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0: unknown or gone). A pid and its start
    time name one process for good: a reused pid starts later."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else 0


def new_mark() -> str:
    return os.urandom(8).hex()


def _carries(pid: int | str, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:  # gone, or no longer ours to read
        return False


def command_of(pid: int) -> str:
    """``pid``'s command line, for a message ("" when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pidfd_signal(pid: int, sig: int, needle: bytes) -> bool:
    """Signal ``pid`` if it still carries ``needle``; False when it is not ours to signal."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfds: look again, then signal (a small race)
        if not _carries(pid, needle):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return True
    try:
        if not _carries(pid, needle):  # gone, or the pid is someone else's now
            return True
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    finally:
        os.close(pidfd)
    return True


SHARED_LOOK_SECONDS = 1.0
"""How old a look at ``/proc`` a stop may use for the escapees it signals first (never for its
final look, taken once the group is empty): one look serves a whole shutdown wave, and an escapee
it misses is found, and signalled, by the final look (``devstack.run.process``)."""


class _Looks:
    """The latest look at ``/proc``, shared by every family of this process, and the marks read
    so far. A process's mark is read from its environment once: it is keyed by pid and start
    time (one process for good), and forgotten once that process is gone."""

    taken_at = -1.0
    rows: list[tuple[int, int, int]] = []
    marks: dict[tuple[int, int], str | None] = {}


def look(since: float) -> list[tuple[int, int, int]]:
    """``(pid, pgrp, start time)`` of every live process, from a look at ``/proc`` taken at
    ``since`` (``time.monotonic()``) or later: the latest one if it is recent enough."""
    if _Looks.taken_at >= since:
        return _Looks.rows
    taken_at = time.monotonic()
    rows = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or len(fields) <= 19 or fields[0] in (b"Z", b"X"):
            continue
        rows.append((int(entry), int(fields[2]), int(fields[19])))
    _Looks.taken_at, _Looks.rows = taken_at, rows
    live = {(pid, started) for pid, _, started in rows}
    _Looks.marks = {key: mark for key, mark in _Looks.marks.items() if key in live}
    return rows


def mark_of(pid: int, started: int) -> str | None:
    """The service mark in the environment of process ``pid`` (started at ``started``)."""
    key = (pid, started)
    if key not in _Looks.marks:
        _Looks.marks[key] = _read_mark(pid)
    return _Looks.marks[key]


def _read_mark(pid: int) -> str | None:
    prefix = f"{MARK_VARIABLE}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or no longer ours to read
        return None
    for variable in environ.split(b"\0"):
        if variable.startswith(prefix):
            return variable[len(prefix):].decode(errors="replace")
    return None


class Family:
    """Every process of one spawn of a service: the process group led by the spawned process
    (``pgid``), and every process carrying ``mark`` in its environment, in whatever group or
    session it is. ``started`` is the leader's :func:`start_time`."""

    __slots__ = ("mark", "pgid", "started", "unreachable")

    def __init__(self, pgid: int, mark: str, started: int) -> None:
        self.pgid = pgid
        self.mark = mark
        self.started = started
        self.unreachable: set[int] = set()
        """Processes of the family that could not be signalled (changed user, say)."""

    @property
    def _needle(self) -> bytes:
        return f"{MARK_VARIABLE}={self.mark}".encode()

    def escapees(self, *, since: float | None = None) -> list[int]:
        """Live processes carrying the mark outside the group (started no earlier than the
        leader: a descendant cannot be older). From a look at ``/proc`` taken at ``since`` or
        later (default: now), shared with every other family (see :func:`look`)."""
        return [
            pid
            for pid, pgrp, started in look(time.monotonic() if since is None else since)
            if pgrp != self.pgid and started >= self.started
            and mark_of(pid, started) == self.mark
        ]

    def owns_group(self, members: list[int] | None = None) -> bool:
        """Whether the group ``pgid`` is provably this family's: its leader still the process
        spawned (one read of its start time, the usual case), or one of its live ``members``
        (looked up when not given) carrying the mark."""
        if not _HAS_PROC:  # no way to tell (macOS): the group is taken to be the family's
            return True
        if self.started and start_time(self.pgid) == self.started:
            return True
        needle = self._needle
        group = group_members(self.pgid) if members is None else members
        return any(_carries(pid, needle) for pid in group)

    def members(self) -> list[int]:
        """Live processes of the family: the group's (when it is provably the family's) and the
        escapees."""
        group = group_members(self.pgid)
        if group and not self.owns_group(group):
            group = []
        return group + self.escapees()

    def signal(self, sig: int, escapees: list[int] | None = None) -> list[int]:
        """Send ``sig`` to the group (when provably the family's) and to every escapee (those
        given, else found now, once the group has its signal); the escapees it signalled."""
        self.signal_group(sig)
        return self.signal_escapees(sig, self.escapees() if escapees is None else escapees)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the group, when it is provably the family's."""
        if self.owns_group():
            signal_group(self.pgid, sig)

    def signal_escapees(self, sig: int, escapees: list[int]) -> list[int]:
        """Send ``sig`` to each of ``escapees`` whose mark is still the family's; those
        signalled (the others are :attr:`unreachable`)."""
        needle, signalled = self._needle, []
        for pid in escapees:
            if _pidfd_signal(pid, sig, needle):
                signalled.append(pid)
            else:
                self.unreachable.add(pid)
        return signalled

    def line(self, stop_timeout_seconds: float) -> str:
        """The guardian's registration of this family."""
        return f"+{self.pgid} {stop_timeout_seconds} {self.mark} {self.started}\n"

    @classmethod
    def parse(cls, line: str) -> tuple[Family, float]:
        pgid, timeout, mark, started = line[1:].split()
        return cls(int(pgid), mark, int(started)), float(timeout)


def is_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in (b"Z", b"X")


def kill_families(families: dict[int, tuple[Family, float]]) -> None:
    """SIGTERM every family, wait up to each one's timeout for it to be gone, SIGKILL the rest."""
    for family, _ in families.values():
        family.signal(signal.SIGTERM)
    started = time.monotonic()
    pending = dict(families)
    while pending:
        elapsed = time.monotonic() - started
        for pgid, (family, timeout) in list(pending.items()):
            if not family.members():
                del pending[pgid]
            elif elapsed >= timeout:
                family.signal(signal.SIGKILL)
                del pending[pgid]
        if pending:
            time.sleep(POLL_SECONDS)
    for family, _ in families.values():
        for pid in filter(is_alive, sorted(family.unreachable)):
            print(
                f"devstack guardian: could not stop pid {pid} ({command_of(pid)}), left by a "
                "service",
                file=sys.stderr,
            )


def kill_groups(groups: dict[int, float]) -> None:
    """SIGTERM every group, wait up to each one's timeout for it to empty, SIGKILL the rest (for
    processes just spawned and never watched: their groups are theirs)."""
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


def _registrations(lines: Iterator[bytes]) -> dict[int, tuple[Family, float]]:
    families: dict[int, tuple[Family, float]] = {}
    for raw in lines:
        line = raw.decode("ascii", "replace").strip()
        with contextlib.suppress(ValueError):
            if line.startswith("+"):
                family, timeout = Family.parse(line)
                families[family.pgid] = (family, timeout)
            elif line.startswith("-"):
                families.pop(int(line[1:]), None)
    return families


def main() -> None:
    # Ctrl-C and hang-ups are for devstack, which stops things in order; the guardian only acts
    # when devstack is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    kill_families(_registrations(iter(sys.stdin.buffer)))


if __name__ == "__main__":
    main()


class Guardian:
    """devstack's side of the guardian: start it, tell it about families, let it go."""

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

    def register(self, family: Family, stop_timeout_seconds: float) -> None:
        self._send(family.line(stop_timeout_seconds))

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
