"""When to start a crashed service again: exponential backoff and a crash-loop limit.

A pure policy object driven by the supervisor's clock. Each exit that comes sooner than
``healthy_seconds`` after its start counts as a failure in a row; a run that lasted longer resets
the count (it was healthy for a while, so this crash is news, not a loop). The n-th failure in a
row waits ``initial_seconds * factor**(n-1)``, capped at ``max_seconds``; after ``max_failures`` in
a row the service is given up on (so ``max_failures - 1`` restarts are tried).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial_seconds: float = 0.5
    factor: float = 2.0
    max_seconds: float = 30.0
    healthy_seconds: float = 10.0
    max_failures: int = 5
    failures: int = 0

    def next_delay(self, *, now: float, started_at: float) -> float | None:
        """Record an exit; the delay before the next start, or None to give up."""
        if now - started_at >= self.healthy_seconds:
            self.failures = 0
        self.failures += 1
        if self.failures >= self.max_failures:
            return None
        delay = self.initial_seconds * self.factor ** (self.failures - 1)
        return min(delay, self.max_seconds)

    def reset(self) -> None:
        self.failures = 0
