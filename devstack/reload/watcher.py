"""One watcher for the whole stack: batches of changed paths from a source -> :class:`ChangeSet`.

The source is the seam (as ``MockRustNotify`` is in watchfiles' own tests): any callable that,
given the folders to watch and a stop event, yields batches of changed paths. The real one,
:func:`watchfiles_source`, is watchfiles' ``awatch``: one inotify (FSEvents, ...) watcher over
every folder, which already debounces: a batch closes once ``step`` ms pass with no new change,
or after ``debounce`` ms at most, so a ``git checkout`` writing hundreds of files over a few
hundred milliseconds arrives as one batch. Tests pass an async generator fed by hand instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

from devstack.manifest.spec import StackSpec
from devstack.reload.changes import ChangeSet, WatchPlan
from devstack.reload.ignore import GITIGNORE, IGNORED_DIRS, VENV_MARKER, IgnoreRules, scan

logger = logging.getLogger(__name__)

ChangeSource = Callable[[Sequence[Path], asyncio.Event], AsyncIterator[Collection[str]]]
"""``(folders, stop) -> batches of changed paths``; ends when ``stop`` is set. An empty batch
says the watch is in place (changes from then on are seen)."""
T = TypeVar("T")

DEBOUNCE_MS = 1600
"""The longest a batch stays open while changes keep coming (watchfiles' default)."""
STEP_MS = 20
"""A batch closes after this long without a new change. It is most of the time from a save to the
reload (measured on Linux: a median of 32 ms at 20 ms, 62 ms at 50 ms), and long enough that the
files of one ``git checkout`` or one "save all", written back to back, arrive as one batch. It is
also how often watchfiles' thread wakes while nothing changes: idle, about 0.35 % of a core at
20 ms (0.16 % at 50 ms)."""


async def watchfiles_source(
    folders: Sequence[Path], stop: asyncio.Event
) -> AsyncIterator[set[str]]:
    """Batches of changed paths from watchfiles' ``awatch``, unfiltered (:class:`Watcher`
    filters). Imported here: watchfiles loads only when something is watched.

    A folder created in the batch has its files added: inotify starts watching a new folder only
    once it has seen it created, so the first files a ``git checkout`` writes into a new folder
    would otherwise go unseen. The first batch is empty: the watches are in place."""
    from watchfiles import Change, awatch

    loop = asyncio.get_running_loop()
    batches = awatch(*folders, watch_filter=None, debounce=DEBOUNCE_MS, step=STEP_MS,
                     stop_event=stop)
    # awatch sets its watches up at its first step, before it waits for a batch in a thread:
    # once that step has run, changes are seen. Say so with an empty batch.
    first = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)
    try:
        if not first.done():
            yield set()
        async for changes in _chain(first, batches):
            paths = {path for _, path in changes}
            added = [path for change, path in changes if change == Change.added]
            if added:
                # Listing new folders reads the disk: in an executor, off the loop.
                paths.update(await loop.run_in_executor(None, _files_in_new_folders, added))
            yield paths
    finally:
        first.cancel()  # when cancelled before its batch came: awatch sets its stop event


async def _chain(first: asyncio.Future[T], rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield await first
    except StopAsyncIteration:
        return
    async for item in rest:
        yield item


def _files_in_new_folders(added: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for path in added:
        if IGNORED_DIRS.isdisjoint(Path(path).parts) and os.path.isdir(path):
            for folder, names, files in os.walk(path):
                names[:] = [name for name in names if name not in IGNORED_DIRS]
                found.update(os.path.join(folder, file) for file in files)
    return found


class Watcher:
    """Watches what ``spec`` says (nothing with ``enabled`` false) and yields a
    :class:`ChangeSet` per batch that concerns something, and an empty one when the watch is in
    place (edits from then on are seen). Iterate :meth:`changes`; :meth:`stop` ends it."""

    def __init__(
        self,
        spec: StackSpec,
        *,
        enabled: bool = True,
        source: ChangeSource = watchfiles_source,
        rules: IgnoreRules | None = None,
    ) -> None:
        """``rules``: the ignore rules; default: read from the disk when :meth:`changes` starts."""
        self.plan = WatchPlan(spec, enabled=enabled)
        self._source = source
        self._rules = rules
        self._stop = asyncio.Event()

    @property
    def is_watching(self) -> bool:
        return bool(self.plan.roots)

    def stop(self) -> None:
        self._stop.set()

    async def changes(self) -> AsyncIterator[ChangeSet]:
        roots = self.plan.roots
        if not roots:
            return
        rules = self._rules
        if rules is None:
            # Walking the tree for .gitignore files reads the disk: in an executor, off the loop.
            rules = await asyncio.get_running_loop().run_in_executor(None, scan, roots)
        async for batch in self._source(roots, self._stop):
            if not batch:
                yield ChangeSet()
                continue
            paths = [Path(p) for p in batch]
            for path in paths:
                if path.name in (GITIGNORE, VENV_MARKER):
                    rules.learn(path, _read(path))
            changes = self.plan.sort(paths, rules)
            logger.debug("%d changed path(s): %s", len(paths), changes or "nothing watched")
            if changes:
                yield changes


def _read(path: Path) -> str | None:
    """A changed ``.gitignore`` or ``pyvenv.cfg`` (small; None when gone)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
