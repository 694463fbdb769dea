"""What the supervisor reacts to: typed, frozen, past-tense events, and the clock it reads.

Output pumps, exit watchers, readiness probes and backoff timers post *what happened*
(``ProcessExited``); users, the proxy and, later, a control socket post *what is asked*
(``RestartRequested``). :meth:`devstack.supervisor.Supervisor._handle` is the one consumer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# Events: what happened (past tense) or what was asked for. Frozen, posted to one queue.
@dataclass(frozen=True)
class ProcessStarted:
    name: str
    pid: int


@dataclass(frozen=True)
class ProcessExited:
    name: str
    pid: int
    returncode: int


@dataclass(frozen=True)
class ServiceBecameReady:
    name: str
    pid: int
    elapsed_seconds: float


@dataclass(frozen=True)
class ReadinessOverdue:
    name: str
    pid: int


@dataclass(frozen=True)
class StartFailed:
    name: str
    reason: str


@dataclass(frozen=True)
class BackoffElapsed:
    name: str
    attempt: int


@dataclass(frozen=True)
class StartRequested:
    name: str


@dataclass(frozen=True)
class StopRequested:
    name: str


@dataclass(frozen=True)
class RestartRequested:
    name: str


@dataclass(frozen=True)
class ShutdownRequested:
    force: bool = False


@dataclass(frozen=True)
class ShutdownFinished:
    pass


Event = (
    ProcessStarted
    | ProcessExited
    | ServiceBecameReady
    | ReadinessOverdue
    | StartFailed
    | BackoffElapsed
    | StartRequested
    | StopRequested
    | RestartRequested
    | ShutdownRequested
    | ShutdownFinished
)
