"""What the supervisor reacts to: typed, frozen, past-tense events, and the clock it reads.

Exit watchers, readiness probes and backoff timers post *what happened*
(``ProcessExited``); users, the file watcher and the control socket post *what is
asked* (``StopRequested``, ``StartRequested``, ``RestartRequested``, ``ReloadRequested``).
:meth:`devstack.run.supervisor.Supervisor._handle` is the one consumer.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple, Protocol


class Clock(Protocol):
    """The only time the supervisor reads: backoff delays, readiness deadlines, how long a run
    lasted. Tests pass one that moves only when they say."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# Events: what happened (past tense) or what was asked for. Immutable, posted to one queue;
# named tuples rather than dataclasses because they cost a fifth as much to define at start-up.
class ProcessExited(NamedTuple):
    name: str
    pid: int
    returncode: int


class ServiceBecameReady(NamedTuple):
    name: str
    pid: int
    elapsed_seconds: float


class ReadinessOverdue(NamedTuple):
    name: str
    pid: int


class BackoffElapsed(NamedTuple):
    name: str
    attempt: int


class StopRequested(NamedTuple):
    name: str


class StartRequested(NamedTuple):
    """Start a service the user stopped (or one that ended) again."""

    name: str


class RestartRequested(NamedTuple):
    name: str


class ReloadRequested(NamedTuple):
    """Files the service watches changed (``files``: their paths, as the watcher saw them)."""

    name: str
    files: tuple[str, ...]


class ShutdownRequested(NamedTuple):
    force: bool = False


class ShutdownFinished(NamedTuple):
    pass


Event = (
    ProcessExited
    | ServiceBecameReady
    | ReadinessOverdue
    | BackoffElapsed
    | StopRequested
    | StartRequested
    | RestartRequested
    | ReloadRequested
    | ShutdownRequested
    | ShutdownFinished
)
