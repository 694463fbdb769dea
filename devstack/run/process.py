"""One OS process of a service: spawned in its own session, output pumped, stopped with escalation.

The service's process group is the unit: signals go to the group (so ``npm -> node`` grandchildren
go too), and a stop is finished only when no live process is left in it. The guardian (see
:mod:`devstack.run.guardian`) is told about every group, so nothing survives even ``kill -9`` of
devstack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from devstack.errors import ServiceStartError
from devstack.run.guardian import Guardian, group_members, signal_group
from devstack.run.output import LineSplitter
from devstack.run.spawn import Spawned, spawn

logger = logging.getLogger(__name__)

GROUP_POLL_SECONDS = 0.01
KILL_GRACE_SECONDS = 2.0
"""After SIGKILL, how long to wait for the kernel to tear the group down before giving up."""

OutputHandler = Callable[[list[bytes]], None]


class _OutputPump(asyncio.Protocol):
    def __init__(self, on_output: OutputHandler, done: asyncio.Future[None]) -> None:
        self._pending: list[bytes] = []
        self._splitter = LineSplitter(self._pending.append)
        self._on_output = on_output
        self._done = done

    def data_received(self, data: bytes) -> None:
        self._splitter.feed(data)
        self._deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        self._splitter.close()
        self._deliver()
        if not self._done.done():
            self._done.set_result(None)

    def _deliver(self) -> None:
        if self._pending:
            lines = self._pending[:]
            self._pending.clear()
            self._on_output(lines)


class ServiceProcess:
    """A started command and its process group."""

    def __init__(
        self,
        name: str,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_output: OutputHandler,
        guardian: Guardian | None = None,
        stop_timeout_seconds: float = 5.0,
    ) -> None:
        self.name = name
        self.command = command
        self._cwd = cwd
        self._env = dict(env)
        self._on_output = on_output
        self._guardian = guardian
        self.stop_timeout_seconds = stop_timeout_seconds
        self._popen: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._group_gone = False
        self._stop_requested = False
        self.spawned_at = 0.0
        """``time.monotonic()`` when the process was spawned."""

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        if self._exited is None or not self._exited.done():
            return None
        return self._exited.result()

    async def start(self, spawned: Spawned | None = None) -> None:
        """Spawn the command (or adopt ``spawned``, started earlier) and begin watching it;
        ServiceStartError when it cannot be executed."""
        loop = asyncio.get_running_loop()
        if self._stop_requested:
            if spawned is not None:
                os.close(spawned.output_fd)
            raise ServiceStartError(f"{self.name}: stopped before it started")
        if spawned is None:
            # Popen forks and execs in well under a millisecond on an idle machine, as
            # asyncio's own subprocess support does; the exit is then watched via a pidfd.
            spawned = spawn(
                self.name,
                self.command,
                cwd=self._cwd,
                env=self._env,
                guardian=self._guardian,
                stop_timeout_seconds=self.stop_timeout_seconds,
            )
        self._popen = spawned.popen
        self.spawned_at = spawned.spawned_at
        self._exited = loop.create_future()
        self._watch_exit(loop)
        self._drained = loop.create_future()
        drained = self._drained
        pipe = os.fdopen(spawned.output_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: _OutputPump(self._on_output, drained), pipe)
        logger.debug("%s: started pid %d: %s", self.name, self._popen.pid, self._popen.args)

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        popen, exited = self._popen, self._exited
        assert popen is not None and exited is not None
        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
            loop.create_task(self._poll_exit())
            return

        def on_readable() -> None:
            returncode = popen.poll()
            if returncode is None:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(returncode)

        loop.add_reader(pidfd, on_readable)

    async def _poll_exit(self) -> None:
        assert self._popen is not None and self._exited is not None
        while (returncode := self._popen.poll()) is None:  # noqa: ASYNC110 - no pidfd to wait on
            await asyncio.sleep(0.05)
        if not self._exited.done():
            self._exited.set_result(returncode)

    async def wait(self) -> int:
        """Wait for the main process to exit; its exit code (negative: killed by that signal)."""
        assert self._exited is not None, "start() first"
        return await asyncio.shield(self._exited)

    async def drained(self, timeout: float) -> None:
        """Wait (bounded) until every line written to the service's output has been handled."""
        if self._drained is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)

    async def stop(self, timeout: float | None = None, *, force: bool = False) -> int | None:
        """SIGTERM the group, wait up to ``timeout`` for it to empty, then SIGKILL; always reap.

        Also used after the main process exited by itself, to take down what it left behind.
        """
        if self._popen is None:
            self._stop_requested = True
            return None
        if self._group_gone:
            return self.returncode
        timeout = self.stop_timeout_seconds if timeout is None else timeout
        pgid = self._popen.pid
        if not force:
            signal_group(pgid, signal.SIGTERM)
            if not await self._wait_group_empty(timeout):
                logger.info(
                    "%s: still running %.1fs after SIGTERM; sending SIGKILL", self.name, timeout
                )
                force = True
        if force:
            signal_group(pgid, signal.SIGKILL)
            if not await self._wait_group_empty(KILL_GRACE_SECONDS):
                logger.warning(
                    "%s: process group %d did not go away after SIGKILL", self.name, pgid
                )
        self._group_gone = True
        if self._guardian is not None:
            self._guardian.forget(pgid)
        await self.drained(timeout=1.0)
        return self.returncode

    async def _wait_group_empty(self, timeout: float) -> bool:
        assert self._popen is not None and self._exited is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        while group_members(self._popen.pid):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(GROUP_POLL_SECONDS)
        return self._exited.done()
