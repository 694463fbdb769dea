"""A batch of changed paths -> a :class:`ChangeSet`: what each service and static root must do.

A service's ``watch`` and ``watch_ignore`` are globs relative to its ``cwd``, read with
``.gitignore`` rules (``*.py`` matches at any depth, ``/config.toml`` only at the top of ``cwd``,
``templates/`` a folder and everything in it). A changed file reloads a
service when it is under its ``cwd``, matches ``watch``, matches no ``watch_ignore`` and is not
ignored (:mod:`devstack.reload.ignore`). A static route's root takes every changed file under it
that the built-in rules keep: a static root often is a build's output, which ``.gitignore`` lists.
A change outside every watch set reloads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from devstack.manifest.spec import DEFAULT_WATCH, ServiceSpec, StackSpec
from devstack.reload.ignore import IgnoreRules


@dataclass(frozen=True)
class ChangeSet:
    """One batch of changes, sorted: the changed files of each affected service (relative to its
    ``cwd``, sorted) and of each static root (absolute, sorted). Empty: nothing to do."""

    services: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    static: Mapping[Path, tuple[Path, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.services or self.static)


@dataclass(frozen=True)
class _Watched:
    name: str
    cwd: Path
    watch: GitIgnoreSpec
    ignore: GitIgnoreSpec

    def relative(self, path: Path) -> str | None:
        """``path`` relative to the service's folder, when it is watched there."""
        if self.cwd not in path.parents:
            return None
        relative = path.relative_to(self.cwd).as_posix()
        if self.watch.match_file(relative) and not self.ignore.match_file(relative):
            return relative
        return None


class WatchPlan:
    """What a stack watches: each watching service's globs and each static root. ``enabled``
    false (``devstack up --no-watch``) watches nothing."""

    def __init__(self, spec: StackSpec, *, enabled: bool = True) -> None:
        self.services = tuple(
            _Watched(s.name, s.cwd, GitIgnoreSpec.from_lines(s.watch),
                     GitIgnoreSpec.from_lines(s.watch_ignore))
            for s in spec.services.values() if enabled and s.watch
        )
        roots = (route.static for route in spec.routes if route.static is not None)
        self.static = tuple(dict.fromkeys(roots)) if enabled else ()

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders to watch: every watching service's ``cwd`` and every static root, none
        inside another."""
        folders = sorted({*(s.cwd for s in self.services), *self.static},
                         key=lambda f: (len(f.parts), f))
        roots: list[Path] = []
        for folder in folders:
            if not any(root == folder or root in folder.parents for root in roots):
                roots.append(folder)
        return tuple(roots)

    def sort(self, paths: Iterable[Path], rules: IgnoreRules) -> ChangeSet:
        services: dict[str, set[str]] = {}
        static: dict[Path, set[Path]] = {}
        for path in paths:
            if rules.is_builtin_ignored(path):
                continue
            for root in self.static:
                if root in path.parents:
                    static.setdefault(root, set()).add(path)
            if not self.services or rules.is_git_ignored(path):
                continue
            for service in self.services:
                relative = service.relative(path)
                if relative is not None:
                    services.setdefault(service.name, set()).add(relative)
        return ChangeSet(
            {name: tuple(sorted(files)) for name, files in services.items()},
            {root: tuple(sorted(files)) for root, files in static.items()},
        )


def describe_watch(service: ServiceSpec, *, enabled: bool = True) -> str:
    """What the start-up summary says ``service`` watches: ``everything``, ``off`` or its
    globs (``*.py templates/``), with ``-`` before each ignore."""
    if not enabled or not service.watch:
        return "off"
    watched = "everything" if service.watch == DEFAULT_WATCH else " ".join(service.watch)
    return " ".join((watched, *(f"-{glob}" for glob in service.watch_ignore)))
