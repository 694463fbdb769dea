"""The supervisor's lookouts: tasks that watch one process (its readiness, a start that takes too
long, its exit) or wait out a backoff, and post what happened as events. They never change a
service's state; :meth:`devstack.run.supervisor.Supervisor._handle` does, on their events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from devstack.manifest.spec import ServiceSpec
from devstack.run.events import (
    BackoffElapsed,
    Clock,
    Event,
    ProcessExited,
    ReadinessOverdue,
    ServiceBecameReady,
)
from devstack.run.readiness import Readiness
from devstack.run.starter import StartedProcess

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Lookout:
    """Posts to the supervisor's queue (``post``); runs its tasks through ``spawn`` so the
    supervisor owns (and cancels) them."""

    def __init__(
        self, post: Callable[[Event], None], spawn: Spawn, readiness: Readiness, clock: Clock
    ) -> None:
        self._post = post
        self._spawn = spawn
        self._readiness = readiness
        self._clock = clock

    def watch(self, spec: ServiceSpec, process: StartedProcess, port: int) -> None:
        """Probe the process's readiness on ``port`` while it runs (posting that it is ready,
        or overdue after ``health.timeout_seconds``); post its exit once its group is gone."""
        self._spawn(self._watch(spec, process, port))

    def wait_backoff(self, name: str, delay: float, attempt: int) -> None:
        self._spawn(self._wait_backoff(name, delay, attempt))

    async def _watch(self, spec: ServiceSpec, process: StartedProcess, port: int) -> None:
        probing = self._spawn(self._probe(spec, process, port))
        returncode = await process.wait()
        probing.cancel()
        await process.stop()  # whatever it left behind in its group goes too
        self._post(ProcessExited(spec.name, process.pid, returncode))

    async def _probe(self, spec: ServiceSpec, process: StartedProcess, port: int) -> None:
        health = spec.health
        if health.enabled:  # else: ready once started
            overdue = self._spawn(
                self._warn_overdue(spec.name, process.pid, health.timeout_seconds)
            )
            try:
                await self._readiness.wait(health, port)
            finally:
                overdue.cancel()
        elapsed = self._clock.now() - process.started_at
        self._post(ServiceBecameReady(spec.name, process.pid, elapsed))

    async def _warn_overdue(self, name: str, pid: int, timeout: float) -> None:
        await self._clock.sleep(timeout)
        self._post(ReadinessOverdue(name, pid))

    async def _wait_backoff(self, name: str, delay: float, attempt: int) -> None:
        await self._clock.sleep(delay)
        self._post(BackoffElapsed(name, attempt))
