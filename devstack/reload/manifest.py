"""Edits to the manifest (and env files) of a running stack: said at once, never applied behind
the user's back.

A running stack keeps the manifest it started with: a changed port, command or route takes a
restart of devstack, and half of a manifest applied is worse than none. But an edit must not go
unnoticed either (a route added that answers 404, a typo the next start would refuse). So while
``devstack up`` watches files, the manifest and the env files its services read are checked every
:data:`POLL_SECONDS` (a ``stat`` each: no thread, no watch on the project's folder), and each
saved version is loaded, off the loop, and reported: what differs from the running stack and how
to apply it, or, when it does not load, its errors, while the stack keeps running as it started.
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
"""How often each followed file's ``stat`` is compared with the last one seen."""

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


def followed_files(running: StackSpec) -> tuple[Path, ...]:
    """What the running stack's configuration was read from: the manifest, then every env file
    its services read (a ``Procfile``'s ``.env`` included)."""
    files = [running.manifest_path]
    for service in running.services.values():
        for path in service.env_files:
            path = path if path.is_absolute() else running.root / path
            if path not in files:
                files.append(path)
    return tuple(files)


def describe(running: StackSpec, changed: str) -> tuple[list[str], bool]:
    """Load ``running``'s manifest (and its env files) as saved now and say what that means for
    the running stack; ``changed`` names the files that changed. Returns the lines to show, and
    whether they report an error."""
    try:
        edited = loader.load(running.manifest_path).spec
    except ManifestError as exc:
        head = f"{changed} changed and the manifest does not load; the stack keeps running as it " \
               "started:"
        return [head, *str(exc).splitlines()], True
    found = differences(running, edited)
    if not found:
        return [f"{changed} changed; nothing in effect differs from the running stack"], False
    return [
        f"{changed} changed: {'; '.join(found)}. The running stack keeps the configuration it "
        "started with: stop devstack and start it again to apply the edit"
    ], False


async def watch_manifest(
    running: StackSpec,
    report: Report,
    *,
    poll_seconds: float = POLL_SECONDS,
    started: asyncio.Event | None = None,
) -> None:
    """Report each saved version of ``running``'s manifest and env files until cancelled;
    ``started`` is set once the versions the stack runs are known (edits from then on are
    reported)."""
    files = followed_files(running)
    loop = asyncio.get_running_loop()
    seen = {path: identity(path) for path in files}
    if started is not None:
        started.set()
    while True:
        await asyncio.sleep(poll_seconds)
        now = {path: identity(path) for path in files}
        # A file missing for now is skipped: an editor between its delete and its write.
        changed = [path for path in files if now[path] is not None and now[path] != seen[path]]
        if not changed:
            continue
        seen.update((path, now[path]) for path in changed)
        names = ", ".join(path.name for path in changed)
        try:
            lines, is_error = await loop.run_in_executor(None, describe, running, names)
        except Exception as exc:  # a defect here must not take the running stack down with it
            logger.exception("reading the edited manifest %s failed", running.manifest_path)
            lines, is_error = [f"{names} changed; reading it failed: {exc!r}"], True
        for line in lines:
            report(line, is_error)
