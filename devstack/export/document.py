"""An exported file, and how several of them are shown on one stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    name: str
    """The file's name (the one ``-o`` writes into a folder when a format makes several)."""
    text: str


def joined(documents: Sequence[Document]) -> str:
    """One document as it is; several each after a ``# ==> name <==`` line (as ``head`` shows
    several files), so that stdout still says which file is which."""
    if len(documents) == 1:
        return documents[0].text
    return "\n".join(f"# ==> {document.name} <==\n{document.text}" for document in documents)
