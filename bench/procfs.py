"""What /proc says about a process: alive or not, its descendants, its memory and CPU time.

Linux only, which is what the bench runs on. A zombie counts as gone: on machines where init
reaps orphans slowly, a dead service can stay a zombie for seconds after it exited.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# Indexes into the fields of /proc/<pid>/stat after the command name, see proc(5).
_STATE, _PPID, _UTIME, _STIME, _STARTTIME = 0, 1, 11, 12, 19


@dataclass(frozen=True)
class Identity:
    """One process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    start_ticks: int


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    """Resident set size now (``VmRSS``)."""
    peak_kib: int
    """Highest resident set size so far (``VmHWM``)."""

    @property
    def rss_mb(self) -> float:
        return self.rss_kib / 1024

    @property
    def peak_mb(self) -> float:
        return self.peak_kib / 1024


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[_STATE] not in (b"Z", b"X")


def is_same_alive(identity: Identity) -> bool:
    """True while the very process ``identity`` names is alive (not a newer one with its pid)."""
    fields = _stat(identity.pid)
    if fields is None or fields[_STATE] in (b"Z", b"X"):
        return False
    return int(fields[_STARTTIME]) == identity.start_ticks


def identify(pid: int) -> Identity | None:
    fields = _stat(pid)
    if fields is None:
        return None
    return Identity(pid, int(fields[_STARTTIME]))


def descendants(pid: int) -> list[Identity]:
    """Every live process below ``pid`` (children, grandchildren, ...), whatever their session."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None or fields[_STATE] in (b"Z", b"X"):
            continue
        children.setdefault(int(fields[_PPID]), []).append(int(entry))
    found: list[Identity] = []
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        identity = identify(child)
        if identity is not None:
            found.append(identity)
        pending.extend(children.get(child, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far (itself only, not its children)."""
    fields = _stat(pid)
    if fields is None:
        raise ProcessLookupError(f"process {pid} is gone; cannot read its CPU time")
    return (int(fields[_UTIME]) + int(fields[_STIME])) / CLOCK_TICKS_PER_SECOND


def memory(pid: int) -> Memory:
    """``VmRSS`` and ``VmHWM`` of ``pid`` from /proc/<pid>/status."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except OSError as exc:
        raise ProcessLookupError(f"process {pid} is gone; cannot read its memory") from exc
    return Memory(rss_kib=values.get("VmRSS", 0), peak_kib=values.get("VmHWM", 0))


def run_seconds(pid: int) -> float:
    """Time ``pid``'s live threads have spent on a CPU, in nanosecond steps from
    ``/proc/<pid>/task/*/schedstat``: finer than :func:`cpu_seconds` (one clock tick, 10 ms),
    which an idle window of a few seconds needs. Threads that exited are not counted; falls back
    to :func:`cpu_seconds` where the kernel keeps no schedstat."""
    if not os.path.exists(f"/proc/{pid}/schedstat"):
        return cpu_seconds(pid)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError as exc:
        raise ProcessLookupError(f"process {pid} is gone; cannot read its CPU time") from exc
    total_ns = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total_ns += int(f.read().split()[0])
        except OSError:
            continue  # a thread that exited meanwhile
    return total_ns / 1e9


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s children now, from ``/proc/<pid>/task/*/children`` (a child belongs
    to the thread that started it); cheap enough to read every few milliseconds, unlike
    :func:`descendants`, which reads all of /proc."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(child) for child in f.read().split())
        except OSError:
            continue  # a thread that exited meanwhile
    return found
