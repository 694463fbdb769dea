"""The real watcher (watchfiles' awatch) on a real temporary tree: bursts, ignores, static roots,
.gitignore files found on the disk. Every wait is on a condition with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec, ServiceSpec, StackSpec
from devstack.reload.changes import ChangeSet
from devstack.reload.ignore import gitignore_texts, scan
from devstack.reload.watcher import Watcher

DEADLINE = 10.0


class Recorder:
    """Runs a Watcher in the background and keeps every ChangeSet it yields."""

    def __init__(self, watcher: Watcher, root: Path) -> None:
        self.watcher = watcher
        self.root = root
        self.seen: list[ChangeSet] = []
        self._arrived = asyncio.Event()
        self._probes = 0

    async def run(self) -> None:
        async for changes in self.watcher.changes():
            self.seen.append(changes)
            self._arrived.set()

    async def until(self, predicate: Callable[[ChangeSet], bool], message: str) -> ChangeSet:
        """The first ChangeSet from now on that satisfies ``predicate``."""
        start = len(self.seen)
        deadline = time.monotonic() + DEADLINE
        while True:
            for changes in self.seen[start:]:
                if predicate(changes):
                    return changes
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {DEADLINE}s waiting for {message}; "
                                     f"saw {self.seen[start:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def flush(self) -> list[ChangeSet]:
        """Touch a sentinel file and wait for its ChangeSet: whatever was changed before has
        arrived by then (events come in order). Returns every ChangeSet since the last flush,
        the sentinel's own included."""
        self._probes += 1
        sentinel = f"sentinel-{self._probes}.py"
        start = len(self.seen)
        (self.root / "app" / sentinel).write_text("x")
        await self.until(lambda c: sentinel in c.services.get("app", ()), f"{sentinel}'s change")
        return self.seen[start:]

    async def ready(self) -> None:
        """The Watcher's first, empty ChangeSet: the watch is in place."""
        first = await self.until(lambda c: True, "the watch to be in place")
        assert first == ChangeSet()
        self.seen.clear()


@contextlib.asynccontextmanager
async def watching(root: Path) -> AsyncIterator[Recorder]:
    spec = StackSpec(
        root / "devstack.yaml",
        {"app": ServiceSpec(name="app", command="x", cwd=root / "app", watch=("*.py", "*.txt"))},
        routes=(RouteSpec(path="/", static=root / "public"),),
    )
    recorder = Recorder(Watcher(spec), root)
    task = asyncio.get_running_loop().create_task(recorder.run())
    try:
        await recorder.ready()
        yield recorder
    finally:
        recorder.watcher.stop()
        await asyncio.wait_for(task, DEADLINE)  # the stop event ends awatch


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in ("app/node_modules", "app/.devstack/logs", "app/.git", "app/build", "public"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "app" / ".gitignore").write_text("*.log\nbuild/\n")
    return tmp_path


def write_burst(folder: Path, count: int, spread_seconds: float) -> None:
    """A `git checkout`: ``count`` files written one after another over ``spread_seconds``
    (paced in a worker thread, as git writes them, not waited on)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"module_{i}.py").write_text(f"VALUE = {i}\n")
        time.sleep(spread_seconds / count)


def test_a_burst_of_200_files_over_300_ms_is_one_changeset(tree: Path) -> None:
    async def scenario() -> None:
        async with watching(tree) as recorder:
            loop = asyncio.get_running_loop()
            start = len(recorder.seen)
            await loop.run_in_executor(None, write_burst, tree / "app" / "pkg", 200, 0.3)
            await recorder.flush()  # the sentinel may join the burst's batch
            seen = recorder.seen[start:]
            with_burst = [c.services["app"] for c in seen if "pkg/module_0.py" in c.services["app"]]
            assert len(with_burst) == 1, seen
            burst = [file for file in with_burst[0] if file.startswith("pkg/")]
            assert burst == sorted(f"pkg/module_{i}.py" for i in range(200))
            assert all(file.startswith("sentinel-") for c in seen for file in c.services["app"]
                       if c.services["app"] is not with_burst[0])

    asyncio.run(scenario())


def test_ignored_changes_yield_nothing(tree: Path) -> None:
    async def scenario() -> None:
        async with watching(tree) as recorder:
            app = tree / "app"
            (app / "server.log").write_text("gitignored")
            (app / "build" / "out.py").write_text("in a gitignored folder")
            (app / ".devstack" / "logs" / "app.log").write_text("devstack's own")
            (app / "node_modules" / "x.py").write_text("a dependency")
            (app / ".git" / "index.txt").write_text("git's")
            (app / ".server.py.swp").write_text("an editor's")
            (app / "notes.md").write_text("outside the watch globs")
            assert [c.services for c in await recorder.flush()] == [{"app": ("sentinel-1.py",)}]

    asyncio.run(scenario())


def test_static_roots_and_a_new_gitignore(tree: Path) -> None:
    async def scenario() -> None:
        async with watching(tree) as recorder:
            (tree / "public" / "simon.css").write_text("body {}")
            changes = await recorder.until(lambda c: bool(c.static), "the stylesheet's change")
            assert changes.static == {tree / "public": (tree / "public" / "simon.css",)}
            (tree / "app" / ".gitignore").write_text("*.log\nbuild/\ngenerated_*.py\n")
            await recorder.flush()
            (tree / "app" / "generated_api.py").write_text("now ignored")
            assert [c.services for c in await recorder.flush()] == [{"app": ("sentinel-2.py",)}]

    asyncio.run(scenario())


def test_scan_reads_gitignores_above_and_below_and_finds_virtual_environments(
    tmp_path: Path,
) -> None:
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("local.txt\n")
    (tmp_path / ".gitignore").write_text("*.log\nskipped/\n")
    (tmp_path / "stack" / "web").mkdir(parents=True)
    (tmp_path / "stack" / "web" / ".gitignore").write_text("dist/\n")
    (tmp_path / "stack" / "skipped").mkdir()
    (tmp_path / "stack" / "skipped" / ".gitignore").write_text("!*.log\n")  # never read
    (tmp_path / "stack" / "env").mkdir()
    (tmp_path / "stack" / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    rules = scan([tmp_path / "stack"])
    stack = tmp_path / "stack"
    assert rules.is_ignored(stack / "a.log")
    assert rules.is_ignored(stack / "local.txt")
    assert rules.is_ignored(stack / "web" / "dist" / "app.js")
    assert rules.is_ignored(stack / "env" / "lib" / "site.py")
    assert rules.is_ignored(stack / "skipped" / "a.log")
    assert not rules.is_ignored(stack / "web" / "app.py")


def test_gitignore_texts_orders_shallow_first_and_joins_info_exclude(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / ".git" / "info").mkdir(parents=True)
    (tmp_path / "a" / ".gitignore").write_text("deep\n")
    (tmp_path / ".gitignore").write_text("top\n")
    (tmp_path / ".git" / "info" / "exclude").write_text("local\n")
    texts = gitignore_texts([tmp_path / "a" / ".gitignore", tmp_path / ".gitignore",
                             tmp_path / ".git" / "info" / "exclude", tmp_path / "missing"])
    assert texts == {tmp_path: "top\n\nlocal\n", tmp_path / "a": "deep\n"}
