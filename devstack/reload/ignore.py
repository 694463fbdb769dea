"""Which changed files never reload anything: built-in rules, virtual environments, ``.gitignore``.

Built in: VCS folders, ``node_modules``, ``__pycache__``, tool caches, devstack's own ``.devstack/``
(its logs and state, so nothing devstack writes triggers a reload), editor swap and backup files,
and every virtual environment (``.venv``, ``venv``, or any folder holding a ``pyvenv.cfg``).

``.gitignore`` files are read with git's rules (the ``pathspec`` library): each one applies to its
own folder and below, a deeper file overrides a shallower one, and a file inside an ignored folder
stays ignored whatever a ``!`` pattern says (git never looks inside an ignored folder). Those
above the watched folders, up to the repository's root, count too, as does ``.git/info/exclude``.

:class:`IgnoreRules` is pure: what it knows of the disk comes from :func:`scan` (run once, in an
executor) and from :meth:`IgnoreRules.learn` as ``.gitignore`` and ``pyvenv.cfg`` files change.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from devstack.manifest.spec import STATE_DIR_NAME

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".pijul"})
TOOL_DIRS = frozenset({
    "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", STATE_DIR_NAME,
})
VENV_DIRS = frozenset({".venv", "venv", ".tox", ".nox"})
IGNORED_DIRS = VCS_DIRS | TOOL_DIRS | VENV_DIRS
"""Folders never looked into, by name, wherever they are."""
EDITOR_FILES = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913")
"""Swap, lock and backup files of vim and emacs (vim writes ``4913`` to test a folder)."""
GITIGNORE = ".gitignore"
VENV_MARKER = "pyvenv.cfg"


def is_editor_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in EDITOR_FILES)


@dataclass
class IgnoreRules:
    """The ignore rules of one stack: ``gitignores`` maps a folder to its ``.gitignore`` text
    (``.git/info/exclude`` is the repository root's second one: both are joined there);
    ``venvs`` are folders known to hold a ``pyvenv.cfg``; ``own_output`` the files devstack's
    own output goes to (``devstack up > up.log``), as (device, inode): devstack writes them, so
    they are never edits."""

    gitignores: Mapping[Path, str] = field(default_factory=dict)
    venvs: set[Path] = field(default_factory=set)
    own_output: frozenset[tuple[int, int]] = frozenset()
    _specs: dict[Path, GitIgnoreSpec] = field(init=False, default_factory=dict)
    _dirs: dict[Path, bool] = field(init=False, default_factory=dict)
    """Whether each folder met so far is ignored (cleared when a ``.gitignore`` changes)."""

    def __post_init__(self) -> None:
        for folder, text in self.gitignores.items():
            self._set(folder, text)

    def is_ignored(self, path: Path) -> bool:
        """Everything: built-in rules, virtual environments and ``.gitignore``."""
        return self.is_builtin_ignored(path) or self.is_git_ignored(path)

    def is_builtin_ignored(self, path: Path) -> bool:
        """The built-in rules and virtual environments (not ``.gitignore``)."""
        if is_editor_file(path.name) or not IGNORED_DIRS.isdisjoint(path.parts[:-1]):
            return True
        if self.own_output and _identity(path) in self.own_output:
            return True
        return any(folder in self.venvs for folder in path.parents)

    def is_git_ignored(self, path: Path) -> bool:
        """What git would ignore: a folder on the way ignored, or the file itself."""
        if not self._specs:
            return False
        return self.is_dir_ignored(path.parent) or self._decide(path, is_dir=False)

    def is_dir_ignored(self, folder: Path) -> bool:
        """Whether git ignores ``folder``: it, or a folder above it, matches a pattern."""
        if not self._specs:
            return False
        known = self._dirs.get(folder)
        if known is None:
            above = folder.parent != folder and self.is_dir_ignored(folder.parent)
            known = self._dirs[folder] = above or self._decide(folder, is_dir=True)
        return known

    def has_gitignore(self, folder: Path) -> bool:
        return folder in self._specs

    def learn(self, path: Path, text: str | None) -> None:
        """``path`` (a ``.gitignore`` or a ``pyvenv.cfg``) now reads ``text`` (None: gone)."""
        if path.name == VENV_MARKER:
            if text is None:
                self.venvs.discard(path.parent)
            else:
                self.venvs.add(path.parent)
        elif path.name == GITIGNORE:
            self._specs.pop(path.parent, None)
            if text is not None:
                self._set(path.parent, text)
            self._dirs.clear()

    def _set(self, folder: Path, text: str) -> None:
        self._specs[folder] = GitIgnoreSpec.from_lines(text.splitlines())
        # Shallow to deep, so that in _decide a deeper file's answer overrides a shallower one's.
        self._specs = dict(sorted(self._specs.items(), key=lambda item: len(item[0].parts)))
        self._dirs.clear()

    def _decide(self, path: Path, *, is_dir: bool) -> bool:
        """The deepest ``.gitignore`` with a pattern for ``path`` decides."""
        ignored = False
        for folder, spec in self._specs.items():  # shallow to deep
            if folder == path or folder not in path.parents:
                continue
            relative = path.relative_to(folder).as_posix() + ("/" if is_dir else "")
            include = spec.check_file(relative).include
            if include is not None:
                ignored = include
        return ignored


def gitignore_texts(files: Iterable[Path]) -> dict[Path, str]:
    """Each readable ``.gitignore`` (or ``info/exclude``) by the folder it applies to; several
    for one folder are joined. Shallow folders first: deeper files override them."""
    texts: dict[Path, list[str]] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        folder = file.parent.parent.parent if file.name == "exclude" else file.parent
        texts.setdefault(folder, []).append(text)
    shallow_first = sorted(texts, key=lambda folder: len(folder.parts))
    return {folder: "\n".join(texts[folder]) for folder in shallow_first}


def scan(roots: Iterable[Path]) -> IgnoreRules:
    """Read the rules for the folders ``roots`` from the disk: every ``.gitignore`` in them (not
    descending into ignored folders) and above them up to the repository's root, and every
    virtual environment. Blocking: run it in an executor."""
    files: list[Path] = []
    roots = list(roots)
    for root in roots:
        for folder in (root, *root.parents):
            files.append(folder / GITIGNORE)
            if (folder / ".git").exists():
                files.append(folder / ".git" / "info" / "exclude")
                break
    rules = IgnoreRules(gitignore_texts(f for f in files if f.is_file()),
                        own_output=own_output_files())  # fmt: skip
    for root in roots:
        for walked, names, filenames in os.walk(root):
            here = Path(walked)
            if VENV_MARKER in filenames:
                rules.venvs.add(here)
                names.clear()
                continue
            if GITIGNORE in filenames and not rules.has_gitignore(here):
                text = gitignore_texts([here / GITIGNORE]).get(here)
                if text is not None:
                    rules.learn(here / GITIGNORE, text)
            names[:] = [name for name in names
                        if name not in IGNORED_DIRS and not rules.is_dir_ignored(here / name)]
    return rules


def own_output_files(fds: Iterable[int] = (1, 2)) -> frozenset[tuple[int, int]]:
    """The regular files among ``fds`` (devstack's stdout and stderr redirected to a file), as
    (device, inode)."""
    found: set[tuple[int, int]] = set()
    for fd in fds:
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino
