"""devstack.reload without the disk: ignore rules, sorting batches into ChangeSets, the summary's
words, and the Watcher fed by a scripted source (as watchfiles' own tests feed MockRustNotify)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path

import pytest

from devstack.manifest.spec import RouteSpec, ServiceSpec, StackSpec
from devstack.reload.changes import ChangeSet, WatchPlan, describe_watch
from devstack.reload.ignore import IgnoreRules, own_output_files
from devstack.reload.watcher import Watcher

ROOT = Path("/project")


def stack(*services: ServiceSpec, static: str | None = None) -> StackSpec:
    routes = (RouteSpec(path="/", static=ROOT / static),) if static else ()
    return StackSpec(ROOT / "devstack.yaml", {s.name: s for s in services}, routes=routes)


def service(name: str, cwd: str = "", **fields: object) -> ServiceSpec:
    return ServiceSpec(name=name, command="x", cwd=ROOT / cwd, **fields)  # type: ignore[arg-type]


# --- ignore rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/index", ".git/refs/heads/main", "sub/.hg/store", ".svn/entries", "a/.jj/x",
        "node_modules/react/index.js", "web/node_modules/x/y.js", "app/__pycache__/m.pyc",
        ".venv/lib/site.py", "venv/bin/python", ".tox/py311/x", ".devstack/logs/simon.log",
        ".devstack/ports.json", ".mypy_cache/x.json", ".pytest_cache/v", ".ruff_cache/x",
        "server.py.swp", ".server.py.swx", "server.py~", ".#server.py", "#server.py#", "4913",
        "myenv/lib/python3.11/site.py",  # holds a pyvenv.cfg
    ],
)
def test_ignored_by_default(path: str) -> None:
    rules = IgnoreRules(venvs={ROOT / "myenv"})
    assert rules.is_ignored(ROOT / path)
    assert rules.is_builtin_ignored(ROOT / path)


@pytest.mark.parametrize(
    "path",
    ["server.py", "public/simon.css", "gitlike/x", "venvs.py", "node_modules.md", "a/venv.txt",
     "4913.txt", "src/pycache.py"],
)
def test_kept_by_default(path: str) -> None:
    assert not IgnoreRules(venvs={ROOT / "myenv"}).is_ignored(ROOT / path)


GITIGNORES = {
    ROOT: "*.log\nbuild/\n!important.log\n/top-only.txt\n",
    ROOT / "web": "dist\n!keep.log\n*.tmp\n",
    ROOT / "web" / "deep": "!*.tmp\n",
}


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("server.log", True),
        ("a/b/server.log", True),           # no slash in the pattern: any depth
        ("important.log", False),           # negated
        ("build/out.js", True),
        ("build/important.log", True),      # inside an ignored folder: ! cannot bring it back
        ("a/build/x", True),
        ("buildx/y", False),
        ("top-only.txt", True),
        ("a/top-only.txt", False),          # anchored by the leading slash
        ("web/dist/app.js", True),          # web/.gitignore applies in web/
        ("dist/app.js", False),             # ... and not above it
        ("web/keep.log", False),            # a deeper .gitignore overrides a shallower one
        ("web/other.log", True),
        ("web/x.tmp", True),
        ("web/deep/x.tmp", False),
        ("web/app.py", False),
    ],
)
def test_gitignore_rules(path: str, ignored: bool) -> None:
    rules = IgnoreRules(GITIGNORES)
    assert rules.is_git_ignored(ROOT / path) is ignored
    assert rules.is_ignored(ROOT / path) is ignored


def test_learning_a_changed_gitignore() -> None:
    rules = IgnoreRules({ROOT: "*.log\n"})
    assert rules.is_ignored(ROOT / "x.log")
    assert not rules.is_ignored(ROOT / "cache" / "a.bin")
    rules.learn(ROOT / ".gitignore", "cache/\n")
    assert (rules.is_ignored(ROOT / "x.log"), rules.is_ignored(ROOT / "cache" / "a.bin")) == (
        False, True,
    )
    rules.learn(ROOT / ".gitignore", None)
    assert not rules.is_ignored(ROOT / "cache" / "a.bin")


def test_learning_a_new_virtual_environment() -> None:
    rules = IgnoreRules()
    rules.learn(ROOT / "env" / "pyvenv.cfg", "home = /usr/bin\n")
    assert rules.is_ignored(ROOT / "env" / "lib" / "x.py")
    rules.learn(ROOT / "env" / "pyvenv.cfg", None)
    assert not rules.is_ignored(ROOT / "env" / "lib" / "x.py")


# --- sorting a batch into a ChangeSet -------------------------------------------------------


def sort(spec: StackSpec, *paths: str, rules: IgnoreRules | None = None) -> ChangeSet:
    return WatchPlan(spec).sort([ROOT / p for p in paths], rules or IgnoreRules())


def test_everything_under_cwd_by_default() -> None:
    spec = stack(service("api", "api"), service("web", "web"))
    changes = sort(spec, "api/app.py", "api/pkg/m.py", "web/index.js", "README.md")
    assert changes.services == {"api": ("app.py", "pkg/m.py"), "web": ("index.js",)}
    assert changes.static == {}


def test_a_change_outside_every_watch_set_is_nothing() -> None:
    changes = sort(stack(service("api", "api", watch=("*.py",))), "api/notes.txt", "other/x.py")
    assert changes == ChangeSet()
    assert not changes


@pytest.mark.parametrize(
    ("watch", "watch_ignore", "changed", "reloads"),
    [
        (("*.py",), (), "pkg/deep/m.py", True),           # any depth, like .gitignore
        (("*.py",), (), "templates/x.html", False),
        (("/settings.toml",), (), "settings.toml", True),
        (("/settings.toml",), (), "sub/settings.toml", False),
        (("templates/",), (), "templates/a/b.html", True),
        (("src/**/*.ts",), (), "src/a/b/c.ts", True),
        (("src/**/*.ts",), (), "lib/c.ts", False),
        (("**/*",), ("*.log",), "server.log", False),
        (("**/*",), ("data/",), "data/db.sqlite-journal", False),
        (("**/*",), ("data/",), "app.py", True),
        (("*.py", "*.html"), ("migrations/",), "migrations/0001.py", False),
    ],
)
def test_watch_and_watch_ignore_globs(
    watch: tuple[str, ...], watch_ignore: tuple[str, ...], changed: str, reloads: bool
) -> None:
    spec = stack(service("api", "api", watch=watch, watch_ignore=watch_ignore))
    assert bool(sort(spec, f"api/{changed}")) is reloads


def test_one_file_can_reload_several_services() -> None:
    spec = stack(service("api", "", watch=("shared/",)), service("worker", "", watch=("*.py",)))
    changes = sort(spec, "shared/models.py")
    assert changes.services == {"api": ("shared/models.py",), "worker": ("shared/models.py",)}


def test_ignored_files_never_count() -> None:
    spec = stack(service("web"), static="public")
    rules = IgnoreRules({ROOT: "*.log\n"})
    changes = sort(spec, ".devstack/logs/web.log", "server.log", ".git/HEAD", "node_modules/a.js",
                   ".server.py.swp", "public/.#index.html", rules=rules)
    assert changes == ChangeSet()


def test_static_roots_take_what_is_under_them_gitignored_or_not() -> None:
    spec = stack(service("web", "web", watch=("*.py",)), static="web/dist")
    rules = IgnoreRules({ROOT: "dist/\n"})
    changes = sort(spec, "web/dist/app.css", "web/dist/index.html", "web/server.py", rules=rules)
    assert changes.static == {ROOT / "web/dist": (ROOT / "web/dist/app.css",
                                                  ROOT / "web/dist/index.html")}
    assert changes.services == {"web": ("server.py",)}  # dist/ is gitignored for the service


def test_watch_false_and_no_watch() -> None:
    spec = stack(service("api", "api", watch=()), service("web", "web"), static="public")
    assert sort(spec, "api/app.py", "web/a.js").services == {"web": ("a.js",)}
    plan = WatchPlan(spec, enabled=False)
    assert plan.roots == ()
    assert plan.sort([ROOT / "web" / "a.js", ROOT / "public" / "x"], IgnoreRules()) == ChangeSet()


def test_roots_are_the_outermost_folders() -> None:
    spec = stack(service("root"), service("api", "api"), service("off", "../elsewhere", watch=()),
                 static="public")
    assert WatchPlan(spec).roots == (ROOT,)
    spec = stack(service("api", "api"), service("web", "web"), static="web/public")
    assert WatchPlan(spec).roots == (ROOT / "api", ROOT / "web")


@pytest.mark.parametrize(
    ("fields", "enabled", "words"),
    [
        ({}, True, "everything"),
        ({"watch": ()}, True, "off"),
        ({}, False, "off"),
        ({"watch": ("*.py",)}, True, "*.py"),
        ({"watch": ("*.py", "templates/"), "watch_ignore": ("*.log",)}, True,
         "*.py templates/ -*.log"),
    ],
)
def test_describe_watch(fields: dict[str, object], enabled: bool, words: str) -> None:
    assert describe_watch(service("api", **fields), enabled=enabled) == words


# --- the Watcher on a scripted source -------------------------------------------------------


class ScriptedSource:
    """Hands the Watcher the batches a test puts in, until the stop event is set."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[Collection[str]] = asyncio.Queue()
        self.folders: Sequence[Path] = ()

    async def __call__(self, folders: Sequence[Path], stop: asyncio.Event) -> AsyncIterator[
            Collection[str]]:
        self.folders = folders
        while True:
            batch = asyncio.ensure_future(self.batches.get())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({batch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                batch.cancel()
                return
            stopped.cancel()
            yield batch.result()


def test_watcher_yields_one_changeset_per_batch_that_concerns_something() -> None:
    async def scenario() -> list[ChangeSet]:
        source = ScriptedSource()
        spec = stack(service("api", "api", watch=("*.py",)), static="public")
        watcher = Watcher(spec, source=source, rules=IgnoreRules({ROOT: "*.log\n"}))
        burst = {f"/project/api/pkg/m{i}.py" for i in range(300)}
        for batch in (set(), burst, {"/project/api/x.log", "/project/.devstack/logs/api.log"},
                      {"/project/public/a.css"}):
            source.batches.put_nowait(batch)
        seen: list[ChangeSet] = []
        async for changes in watcher.changes():
            assert source.folders == (ROOT / "api", ROOT / "public")
            seen.append(changes)
            if len(seen) == 3:
                watcher.stop()
        return seen

    watching, burst, static = asyncio.run(scenario())
    assert watching == ChangeSet()  # the source's empty batch: the watch is in place
    assert len(burst.services["api"]) == 300 and burst.static == {}
    assert static == ChangeSet({}, {ROOT / "public": (ROOT / "public" / "a.css",)})


def test_watcher_with_nothing_to_watch_ends_at_once() -> None:
    async def scenario() -> list[ChangeSet]:
        watcher = Watcher(stack(service("api", watch=())), source=ScriptedSource(),
                          rules=IgnoreRules())
        assert not watcher.is_watching
        return [changes async for changes in watcher.changes()]

    assert asyncio.run(scenario()) == []


def test_devstack_s_own_output_redirected_into_the_tree_is_never_an_edit(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    other = tmp_path / "server.py"
    with open(log, "w") as out:
        other.write_text("x = 1\n")
        rules = IgnoreRules(own_output=own_output_files([out.fileno()]))
        assert rules.is_ignored(log)
        assert not rules.is_ignored(other)
    assert own_output_files([]) == frozenset()
