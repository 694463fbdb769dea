"""One OS process of a service, once spawned: exit watched, output pumped, stopped with escalation.

The service's *family* is the unit (:class:`devstack.run.guardian.Family`): its process group,
so signals go to the group (``npm -> node`` grandchildren go too), and every descendant that left
the group on purpose (``setsid``, a double fork), found by the mark in its environment. A stop is
finished only when no live process of the family is left; one that cannot be stopped is named by
pid and command. The guardian is told about every family, so nothing survives even ``kill -9``
of devstack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from devstack.run.guardian import (
    SHARED_LOOK_SECONDS,
    Guardian,
    command_of,
    group_members,
    is_alive,
)
from devstack.run.output import LineSplitter
from devstack.run.spawn import Spawned

logger = logging.getLogger(__name__)

GROUP_POLL_SECONDS = 0.01
KILL_GRACE_SECONDS = 2.0
"""After SIGKILL, how long to wait for the kernel to tear the group down before giving up."""
READ_BYTES = 256 * 1024
"""The most read from a service's output pipe per wake-up (what asyncio's pipe transport reads)."""

OutputHandler = Callable[[list[bytes]], None]


class _OutputPump:
    """Reads a service's output pipe whenever it has data, and hands whole lines on."""

    def __init__(self, fd: int, on_output: OutputHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._on_output = on_output
        self._loop = loop
        self._pending: list[bytes] = []
        self._splitter = LineSplitter(self._pending.append)
        self.done: asyncio.Future[None] = loop.create_future()
        """Resolves at end-of-file, once the last line has been handed on."""
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._splitter.feed(data)
            self._deliver()
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._splitter.close()
        self._deliver()
        self.done.set_result(None)

    def _deliver(self) -> None:
        if self._pending:
            lines = self._pending[:]
            self._pending.clear()
            self._on_output(lines)


class ServiceProcess:
    """A spawned command and its process group, watched from the event loop as soon as it is
    made: its exit through a pidfd, its output through its pipe."""

    def __init__(
        self,
        name: str,
        spawned: Spawned,
        *,
        on_output: OutputHandler,
        guardian: Guardian | None = None,
        stop_timeout_seconds: float = 5.0,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.name = name
        self._popen = spawned.popen
        self._family = spawned.family
        self._guardian = guardian
        self.stop_timeout_seconds = stop_timeout_seconds
        self.started_at = spawned.spawned_at
        """``time.monotonic()`` when the process was spawned."""
        self._group_gone = False
        self._exited: asyncio.Future[int] = loop.create_future()
        self._exit_poller: asyncio.Task[None] | None = None
        self._watch_exit(loop)
        self._output = _OutputPump(spawned.output_fd, on_output, loop)
        logger.debug("%s: started pid %d: %s", name, self.pid, self._popen.args)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        popen, exited = self._popen, self._exited
        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
            self._exit_poller = loop.create_task(self._poll_exit())
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
        while (returncode := self._popen.poll()) is None:  # noqa: ASYNC110 - no pidfd to wait on
            await asyncio.sleep(0.05)
        if not self._exited.done():
            self._exited.set_result(returncode)

    async def wait(self) -> int:
        """Wait for the main process to exit; its exit code (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    async def drained(self, timeout: float) -> None:
        """Wait (bounded) until every line written to the service's output has been handled."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._output.done), timeout)

    async def stop(self, timeout: float | None = None, *, force: bool = False) -> int | None:
        """SIGTERM the family, wait up to ``timeout`` for it to be gone, then SIGKILL; always
        reap. Survivors (out of devstack's reach) are named in a warning.

        Also used after the main process exited by itself, to take down what it left behind.
        """
        if self._group_gone:
            return self.returncode
        timeout = self.stop_timeout_seconds if timeout is None else timeout
        pgid = self._popen.pid
        if not force and not await self._signal_and_wait(signal.SIGTERM, timeout):
            logger.info(
                "%s: still running %.1fs after SIGTERM; sending SIGKILL", self.name, timeout
            )
            force = True
        is_gone = not force or await self._signal_and_wait(signal.SIGKILL, KILL_GRACE_SECONDS)
        if not is_gone or self._family.unreachable:
            self._name_survivors()
        self._group_gone = True
        if self._guardian is not None:
            self._guardian.forget(pgid)
        await self.drained(timeout=1.0)
        return self.returncode

    async def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        """Signal the family, and wait up to ``timeout`` for it to be gone; whatever joined it
        meanwhile (a fork during the stop) gets the signal too. False: not gone in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        family = self._family
        family.signal_group(sig)
        # The group first, and every other stop of this wave signals its own before anyone reads
        # /proc (a read of every process, slow beside a signal). Then a look up to
        # SHARED_LOOK_SECONDS old will do for the escapees: whatever forked since is found by
        # the look taken once the group is gone. Stopping twenty services at once then reads
        # /proc once, not twenty times.
        await asyncio.sleep(0)
        escapees = family.signal_escapees(
            sig, family.escapees(since=time.monotonic() - SHARED_LOOK_SECONDS)
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        while True:
            # Cheap checks while something is known to live; one full look before saying "gone",
            # taken after the group was seen empty (families stopping together share it).
            if group_members(family.pgid) or any(map(is_alive, escapees)):
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(GROUP_POLL_SECONDS)
                continue
            emptied = time.monotonic()
            await asyncio.sleep(0)  # the other families seen empty in this turn look once
            late = [pid for pid in family.escapees(since=emptied)
                    if pid not in family.unreachable]
            if not late:
                return self._exited.done()
            escapees = family.signal(sig, late)

    def _name_survivors(self) -> None:
        survivors = self._family.members()
        if not survivors:
            return
        logger.warning(
            "%s: %d process(es) of this service could not be stopped and are left running: %s",
            self.name,
            len(survivors),
            ", ".join(f"pid {pid} ({command_of(pid)})" for pid in survivors),
        )

