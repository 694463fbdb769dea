"""Reload loops: a service that writes into its own watch set as it starts (a log, a pid file, a
SQLite journal) would reload forever. :class:`LoopDetector` notices and stops reloading on it.

The rule: a change *echoes* a reload when it arrives while the service is starting again after
that reload, or at most ``grace_seconds`` after it is back (ready, or given up). A file that
echoes ``rounds`` reloads in a row (3) is one the service writes itself: the service is no longer
reloaded on it, and :meth:`LoopDetector.screen` returns it once, for one warning
(:func:`loop_warning`). A change that echoes nothing starts the count again. A developer saving
the same file within half a second of each of three reloads in a row is the one false alarm.

Pure: time comes from an injected clock, states from the caller (:meth:`reloaded`,
:meth:`settled`), so tests replay histories with no processes and no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

ROUNDS = 3
GRACE_SECONDS = 0.5


def loop_warning(service: str, file: str) -> str:
    return (f"{service}: {file} changes every time {service} starts; not reloading on it. "
            "Add it to watch_ignore (or .gitignore)")


@dataclass
class _Reloads:
    """One service's recent reloads, as the detector sees them."""

    is_reloading: bool = False
    """A reload was asked for and its echo window is open."""
    settled_at: float | None = None
    """When the service was back after the latest reload (None: still starting)."""
    streaks: dict[str, int] = field(default_factory=dict)
    """How many reloads in a row each file has echoed."""
    looping: set[str] = field(default_factory=set)


class LoopDetector:
    def __init__(
        self,
        *,
        rounds: int = ROUNDS,
        grace_seconds: float = GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rounds = rounds
        self.grace_seconds = grace_seconds
        self._clock = clock
        self._services: dict[str, _Reloads] = {}

    def _of(self, name: str) -> _Reloads:
        return self._services.setdefault(name, _Reloads())

    def reloaded(self, name: str) -> None:
        """Service ``name`` was just asked to reload: its echo window opens."""
        reloads = self._of(name)
        reloads.is_reloading = True
        reloads.settled_at = None

    def settled(self, name: str) -> None:
        """Service ``name`` is back after its latest reload (ready, crashed or given up)."""
        reloads = self._of(name)
        if reloads.is_reloading and reloads.settled_at is None:
            reloads.settled_at = self._clock()

    def is_looping(self, name: str, file: str) -> bool:
        return file in self._of(name).looping

    def screen(self, name: str, files: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``files`` of service ``name`` just changed: the ones to reload it for, and the ones
        found looping by this change (to warn about, once each)."""
        reloads = self._of(name)
        now = self._clock()
        echoes = reloads.is_reloading and (
            reloads.settled_at is None or now - reloads.settled_at <= self.grace_seconds
        )
        if not echoes:
            reloads.is_reloading = False
            reloads.streaks = {}
        else:
            reloads.streaks = {file: reloads.streaks.get(file, 0) + 1 for file in files}
        found = tuple(file for file, count in reloads.streaks.items()
                      if count >= self.rounds and file not in reloads.looping)
        reloads.looping.update(found)
        kept = tuple(file for file in files if file not in reloads.looping)
        return kept, found
