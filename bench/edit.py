"""What the reload section edits, and how: real saves of a service's source, as an editor makes
them, each one changing what the service answers.

A :class:`Subject` is a service whose answer says which edit it runs: the bench's own hello
service (its ``BODY`` line, a copy of ``bench/hello.py``) and the simon example (the body of its
``/healthz`` answer, in a copy of ``examples/``). Edit ``n`` writes :func:`token` ``(n)`` into
that spot, so the bench knows a new process answers when the token shows up in the answer. Edits
are cumulative (each replaces the previous token) and always made on a copy in the bench's
temporary folder, never on the repository's files.

A save is either an atomic replace (write a sibling, rename it over the file: vim's default,
most IDEs) or an in-place write (truncate and write: VS Code, nano); :func:`save` does either.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.contender import HELLO_SCRIPT, PYTHON
from bench.errors import BenchError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOT_COPIED = ("data", "__pycache__", ".devstack", "node_modules", "*.pyc")
"""Left out of the copies: state of earlier runs, caches, installed packages."""


@dataclass(frozen=True)
class Subject:
    """A service the section edits, and where its answer shows the edit."""

    name: str
    source: Path
    """A file (copied alone) or a folder (copied whole) holding the service."""
    cwd: str
    """The folder the service runs in, relative to the copy."""
    script: str
    """The file it runs, relative to ``cwd``; the file the bench edits."""
    path: str
    """The URL path whose answer carries the token."""
    pattern: re.Pattern[str]
    """The one spot of ``script`` that edits rewrite; it must match the original and every
    edited text exactly once."""
    replacement: str
    """What replaces the spot, with ``{token}``."""
    health: str | None = None
    """Its health path in devstack's manifest, as its users declare it."""

    @property
    def argv(self) -> list[str]:
        return [PYTHON, self.script]

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def install(self, folder: Path) -> Path:
        """A fresh copy of the service's files in ``folder``; returns the folder it runs in."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.source.is_dir():
            copy = folder / self.source.name
            shutil.copytree(self.source, copy, ignore=shutil.ignore_patterns(*NOT_COPIED))
        else:
            copy = folder
            shutil.copy2(self.source, folder / self.source.name)
        service_dir = copy / self.cwd
        if not (service_dir / self.script).is_file():
            raise BenchError(f"{self.name}: {self.script} is missing from {service_dir}")
        return service_dir


HELLO = Subject(
    name="hello",
    source=HELLO_SCRIPT,
    cwd=".",
    script=HELLO_SCRIPT.name,
    path="/",
    pattern=re.compile(r'^BODY = ".*"$', re.MULTILINE),
    replacement='BODY = "Hello, world {token}"',
)
SIMON = Subject(
    name="simon",
    source=EXAMPLES,
    cwd="simon",
    script="server.py",
    path="/healthz",
    pattern=re.compile(r'web\.json_response\(\{"status": "ok"[^}]*\}\)'),
    replacement='web.json_response({{"status": "ok", "edit": "{token}"}})',
    health="/healthz",
)


def token(number: int) -> str:
    """What edit ``number`` makes the service answer; never a substring of another edit's."""
    return f"<edit {number}>"


def edited(text: str, subject: Subject, number: int) -> str:
    """``text`` (the subject's script) with edit ``number`` made."""
    new, count = subject.pattern.subn(
        lambda _: subject.replacement.format(token=token(number)), text, count=2
    )
    if count != 1:
        raise BenchError(
            f"{subject.name}: expected one match of {subject.pattern.pattern!r} in "
            f"{subject.script}, found {count}; the bench's edit no longer fits the source"
        )
    return new


def save(path: Path, text: str, *, in_place: bool) -> None:
    """Write ``text`` to ``path`` as an editor saves: in place (truncate, write) or atomically
    (a sibling named like an editor's backup, ``.NAME~``, renamed over ``path``)."""
    if in_place:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    sibling = path.with_name(f".{path.name}~")
    sibling.write_text(text, encoding="utf-8")
    os.replace(sibling, path)
