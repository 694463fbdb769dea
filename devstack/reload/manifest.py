"""Edits to the manifest of a running stack: said at once, never applied behind the user's back.

A running stack keeps the manifest it started with: a changed port, command or route takes a
restart of devstack, and half of a manifest applied is worse than none. But an edit must not go
unnoticed either (a route added that answers 404, a typo the next start would refuse). So while
``devstack up`` watches files, the manifest is checked every :data:`POLL_SECONDS` (a ``stat``: no
thread, no watch on the project's folder), and each saved version is loaded, off the loop, and
reported: what differs from the running stack and how to apply it, or, when it does not load, its
errors, while the stack keeps running as it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from devstack.errors import ManifestError
from devstack.manifest import loader
from devstack.manifest.spec import StackSpec

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often the manifest's ``stat`` is compared with the last one seen."""

Report = Callable[[str, bool], None]
"""Takes a line to show and whether it reports an error."""
Identity = tuple[int, int, int] | None


def identity(path: Path) -> Identity:
    """What changes when the file is saved, even within the same second or by a rename over it
    (inode, size, modification time in ns); ``None`` while it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def differences(running: StackSpec, edited: StackSpec) -> list[str]:
    """What ``edited`` changes in ``running``, in words; empty when nothing that takes effect
    differs (a comment, the order of keys)."""
    found = []
    for word, names in (
        ("added", [n for n in edited.services if n not in running.services]),
        ("removed", [n for n in running.services if n not in edited.services]),
        ("changed", [n for n in edited.services
                     if n in running.services and edited.services[n] != running.services[n]]),
    ):  # fmt: skip
        if names:
            noun = "service" if len(names) == 1 else "services"
            found.append(f"{noun} {', '.join(names)} {word}")
    if edited.routes != running.routes:
        found.append("routes changed")
    if edited.proxy != running.proxy:
        found.append("proxy settings changed")
    return found


def describe(running: StackSpec, path: Path) -> tuple[list[str], bool]:
    """Load the manifest at ``path`` as saved now and say what that means for the stack running
    from ``running``: the lines to show, and whether they report an error."""
    name = path.name
    try:
        edited = loader.load(path).spec
    except ManifestError as exc:
        head = f"{name} changed and does not load; the stack keeps running as it started:"
        return [head, *str(exc).splitlines()], True
    found = differences(running, edited)
    if not found:
        return [f"{name} changed; nothing in effect differs from the running stack"], False
    return [
        f"{name} changed: {'; '.join(found)}. The running stack keeps the manifest it started "
        "with: stop devstack and start it again to apply the edit"
    ], False


async def watch_manifest(
    running: StackSpec,
    report: Report,
    *,
    poll_seconds: float = POLL_SECONDS,
    started: asyncio.Event | None = None,
) -> None:
    """Report each saved version of ``running``'s manifest until cancelled; ``started`` is set
    once the version the stack runs is known (edits from then on are reported)."""
    path = running.manifest_path
    loop = asyncio.get_running_loop()
    seen = identity(path)
    if started is not None:
        started.set()
    while True:
        await asyncio.sleep(poll_seconds)
        now = identity(path)
        if now == seen or now is None:  # unchanged, or between an editor's delete and write
            continue
        seen = now
        try:
            lines, is_error = await loop.run_in_executor(None, describe, running, path)
        except Exception as exc:  # a defect here must not take the running stack down with it
            logger.exception("reading the edited manifest %s failed", path)
            lines, is_error = [f"{path.name} changed; reading it failed: {exc!r}"], True
        for line in lines:
            report(line, is_error)
