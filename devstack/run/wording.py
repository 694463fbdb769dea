"""What the supervisor says about a service, in words: how a process exited, which files a
reload is for, why a new version was not taken."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

from devstack.manifest.spec import ServiceSpec

NAMED_FILES = 3
"""How many changed files a reload line names."""
QUOTED_LINES = 3
"""How many of a failed new version's last lines its one-line report quotes."""


def describe_changes(spec: ServiceSpec, files: tuple[str, ...]) -> str:
    """``server.py changed``, ``3 files changed: a.py, b.py, c.py`` (paths under the service's
    folder relative to it; at most :data:`NAMED_FILES` named)."""
    names = [_shown_path(spec, path) for path in files]
    if not names:
        return "reload requested"
    if len(names) == 1:
        return f"{names[0]} changed"
    shown = ", ".join(names[:NAMED_FILES]) + (", ..." if len(names) > NAMED_FILES else "")
    return f"{len(names)} files changed: {shown}"


def _shown_path(spec: ServiceSpec, path: str) -> str:
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, spec.cwd)
    return path if relative.startswith("..") else relative


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def describe_failed_reload(name: str, reason: str, lines: Iterable[bytes], port: int) -> str:
    """The one line saying a new version failed (``reason``), quoting its last lines, and that
    the previous one keeps serving on ``port``."""
    quoted = [line.decode("utf-8", "replace").strip() for line in lines]
    quoted = [line for line in quoted if line][-QUOTED_LINES:]
    said = f" (last output: {' / '.join(quoted)})" if quoted else ""
    return f"{name}: {reason}{said}; the previous version keeps serving on port {port}"
