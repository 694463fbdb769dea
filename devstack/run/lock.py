"""One run per manifest: the state folder, its lock and the record of the live run.

``.devstack/`` beside the manifest holds the sticky ports, the logs and ``run.json`` (who runs,
since when, on which ports). A run holds an exclusive ``flock`` on ``.devstack/run.lock`` for its
whole life; the kernel drops it when the process dies however it dies, so the state a crashed run
leaves behind is detected (lock free, record present) and cleaned, never blocking the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from devstack.errors import StateError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
RECORD_NAME = "run.json"
GITIGNORE = "# devstack's state for this folder: never commit it\n*\n"


def prepare_state_dir(state_dir: Path) -> None:
    """Create the folder with its own .gitignore, so it never shows up in the user's commits.
    Only its owner may enter it: it holds the logs and the control socket."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_dir.chmod(0o700)
        gitignore = state_dir / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text(GITIGNORE)
    except OSError as exc:
        raise StateError(
            f"{state_dir}: cannot create devstack's state folder: {exc.strerror}"
        ) from exc


def _describe(record: Mapping[str, Any]) -> str:
    started = record.get("started")
    when = time.strftime("%H:%M:%S", time.localtime(started)) if isinstance(started, float) else "?"
    return f"pid {record.get('pid', '?')}, started {when}"


class RunLock:
    """Held while ``devstack up`` runs for a manifest."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._file: TextIO | None = None

    def acquire(self, manifest: Path) -> None:
        prepare_state_dir(self.state_dir)
        lock_file = open(self.state_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            record = read_record(self.state_dir) or {}
            raise StateError(
                f"devstack is already running for {manifest} ({_describe(record)}); "
                "`devstack status` shows it; stop it first with `devstack down` (or Ctrl-C in "
                "its terminal)"
            ) from None
        self._file = lock_file
        stale = read_record(self.state_dir)
        if stale is not None:
            logger.info("cleaned up after a run that did not stop cleanly (%s)", _describe(stale))
        self.write({"pid": os.getpid(), "started": time.time(), "manifest": str(manifest)})

    def write(self, record: Mapping[str, Any]) -> None:
        """Replace the run record (atomically: readers never see half a file)."""
        path = self.state_dir / RECORD_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)

    def update(self, **fields: Any) -> None:
        record = read_record(self.state_dir) or {}
        record.update(fields)
        self.write(record)

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / RECORD_NAME).unlink()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_record(state_dir: Path) -> dict[str, Any] | None:
    """The record of the run that holds the lock now, or None when no run is live."""
    try:
        with open(state_dir / LOCK_NAME, "a+") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return read_record(state_dir) or {}
            fcntl.flock(lock_file, fcntl.LOCK_UN)
            return None
    except OSError:
        return None
