"""Where a request path lands under a static folder, and what is never served. Touches the disk.

A path is refused (:data:`Found.NOTHING`, a 404 like a missing file, so nothing is revealed)
when any segment starts with a dot (``..``, ``.env``, ``.git/``), contains a NUL or a
backslash, or when the file it resolves to (symlinks followed) lies outside the folder or is
reached through a hidden name. Folders answer with their ``index.html`` (there is no listing);
a folder named without its trailing slash is :data:`Found.FOLDER_WITHOUT_SLASH`.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import NamedTuple

INDEX_FILE = "index.html"


class Found(enum.Enum):
    """Why a path names no file to send."""

    NOTHING = "nothing"
    FOLDER_WITHOUT_SLASH = "folder without slash"


class Located(NamedTuple):
    """A file a path named, checked to lie inside the folder."""

    path: str
    """The folder joined with the request's segments (and ``index.html``), symlinks left as they
    are: what a later request stats to see whether it still names the same file."""
    resolved: str
    """The same file with every symlink resolved: what is opened."""
    relative: str
    """The file below the folder, as a request path: ``/docs/index.html`` for ``/docs/``."""


def locate(root: Path, path: str) -> Located | Found:
    """The file ``path`` (percent-decoded, below the route's prefix) names under ``root``, or why
    there is none. Blocking (resolves symlinks on disk)."""
    parts = [part for part in path.split("/") if part]
    if any(_is_refused(part) for part in parts):
        return Found.NOTHING
    base = root.resolve()
    joined = root.joinpath(*parts)
    candidate = joined.resolve()
    if not _is_inside(candidate, base):
        return Found.NOTHING
    if candidate.is_dir():
        if parts and not path.endswith("/"):
            return Found.FOLDER_WITHOUT_SLASH
        parts.append(INDEX_FILE)
        joined = joined / INDEX_FILE
        candidate = (candidate / INDEX_FILE).resolve()
        if not _is_inside(candidate, base):
            return Found.NOTHING
    if not candidate.is_file():
        return Found.NOTHING
    return Located(str(joined), str(candidate), "/" + "/".join(parts))


def _is_refused(part: str) -> bool:
    return part.startswith(".") or "\x00" in part or "\\" in part


def _is_inside(candidate: Path, base: Path) -> bool:
    """Inside ``base`` after symlinks, and not a hidden file reached through a link."""
    if not candidate.is_relative_to(base):
        return False
    return not any(part.startswith(".") for part in candidate.relative_to(base).parts)
