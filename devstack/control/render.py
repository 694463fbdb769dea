"""The human forms of what the control socket answers: the status table and log tails.

The log lines come from ``.devstack/logs/<name>.log`` (what the stack printed for each service,
time-stamped, kept across runs); the socket says which files belong to the live run's services.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TAIL_CHUNK = 64 * 1024


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns, the last one unpadded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        .rstrip()
        for row in rows
    ]


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def status_lines(document: Mapping[str, Any]) -> list[str]:
    """``devstack status``: a header for the stack, then one row per service."""
    stack = document["stack"]
    proxy = stack.get("proxy_url") or "no proxy"
    lines = [f"# {stack['manifest']}: running (pid {stack['pid']}), {proxy}"]
    rows = [("service", "state", "pid", "port", "restarts", "url / why")]
    for s in document["services"]:
        port = str(s["port"])
        if s.get("wanted_port") not in (None, s["port"]):
            port = f"{port} (wanted {s['wanted_port']})"
        note = s.get("reason") or s.get("url") or ""
        rows.append((s["name"], s["state"], _dash(s.get("pid")), port, str(s["restarts"]), note))
    return lines + table(rows)


def tail(path: Path, count: int) -> tuple[list[bytes], int]:
    """The last ``count`` lines of ``path`` and the offset its end had."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start, data = end, b""
            while start > 0 and data.count(b"\n") <= count:
                start = max(0, start - TAIL_CHUNK)
                f.seek(start)
                data = f.read(end - start)
    except FileNotFoundError:
        return [], 0
    lines = data.splitlines()
    return (lines[-count:] if count > 0 else []), end


class Follower:
    """New complete lines of a file since an offset (``tail -f``); a truncated file is read
    from its start."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""

    def read(self) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self.offset:
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except FileNotFoundError:
            return
        self.offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        yield from complete


def prefixed(name: str, lines: Sequence[bytes], width: int) -> Iterator[str]:
    for line in lines:
        text = line.decode("utf-8", "replace")
        yield f"{name.ljust(width)} | {text}" if width else text
