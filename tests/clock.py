"""A clock for the supervisor that moves only when the test moves it."""

from __future__ import annotations

import asyncio


class ManualClock:
    """Implements :class:`devstack.run.events.Clock`: ``sleep`` waits until :meth:`advance` has
    moved ``now()`` past its deadline, so backoffs and readiness deadlines cost a test nothing and
    happen exactly when it says."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []
        """Every duration slept, in order (a sleep cut short by cancellation included)."""
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = asyncio.get_running_loop().create_future()
        sleeper = (self.time + seconds, wake)
        self._sleepers.append(sleeper)
        try:
            await wake
        finally:
            self._sleepers.remove(sleeper)

    @property
    def pending(self) -> list[float]:
        """How long from now each current sleeper still has to sleep, shortest first."""
        return sorted(deadline - self.time for deadline, _ in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time on and wake every sleeper whose deadline has come (they run at the loop's
        next turns). Deadlines are compared to the nanosecond: ``29.9 + 0.1`` is 30 here."""
        self.time += seconds
        for deadline, wake in self._sleepers:
            if deadline <= self.time + 1e-9 and not wake.done():
                wake.set_result(None)
