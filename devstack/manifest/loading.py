"""What one load of a manifest learns: problems, warnings, the line of every key.

Free of YAML: a ``Procfile`` is read without PyYAML (about 35 ms of imports on the way to the
first spawn); :mod:`devstack.manifest.nodes` reads ``devstack.yaml``'s nodes into the same
:class:`Loading`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import ManifestError, ManifestErrors


@dataclass
class Loading:
    """What one load has learned so far: problems, warnings, and the line of every key."""

    shown: Path
    """The manifest's path as given, for messages."""
    root: Path
    """The manifest's folder, absolute: relative paths start here."""
    errors: list[ManifestError] = field(default_factory=list)
    notes: list[ManifestError] = field(default_factory=list)
    """Warnings, kept as errors that are not raised."""
    lines: dict[str, int] = field(default_factory=dict)
    """Line of each dotted key (``services.web.port``) and list item (``services.web.watch[1]``)."""
    declared: list[str] = field(default_factory=list)
    """Every service name in the manifest, even invalid ones, so references to them still work."""
    guessed: set[str] = field(default_factory=set)
    """Keys offered as "did you mean": not reported missing as well."""

    def error(self, key: str | None, line: int | None, message: str) -> None:
        self.errors.append(ManifestError(message, path=self.shown, line=line, key=key))

    def warn(self, key: str | None, line: int | None, message: str) -> None:
        self.notes.append(ManifestError(message, path=self.shown, line=line, key=key))

    @property
    def warnings(self) -> tuple[str, ...]:
        """The warnings, sorted by line, each formatted like an error."""
        return tuple(note.format() for note in sorted(self.notes, key=lambda n: n.line or 0))

    def line(self, key: str) -> int | None:
        return self.lines.get(key)

    def raise_errors(self) -> None:
        """Raise what was found: one ManifestError, or ManifestErrors sorted by line."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ManifestErrors(sorted(self.errors, key=lambda e: e.line or 0))


def suggestion(word: str, choices: Sequence[str], plural: str) -> str:
    """``did you mean 'x'?`` when a choice is close, else the list of choices."""
    close = close_matches(word, choices)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{plural} are {', '.join(choices)}" if choices else f"there are no {plural}"


def close_matches(word: str, choices: Sequence[str]) -> list[str]:
    import difflib  # only for a manifest with a mistake: not on every start

    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
