"""``devstack run -- CMD``: one command run against the stack this process runs, then the stack
stops and devstack exits with the command's status.

The command starts once every service is ready and the proxy serves (or is not started, and the
stack stops, when ``ready_seconds`` pass first), with the caller's environment plus what
services get: the stack's variables (``DEVSTACK_URL``, ``DEVSTACK_<NAME>_URL``/``_PORT``) and
the CA trust variables. It shares devstack's terminal and process group, so Ctrl-C in a terminal
reaches it directly; signals sent to devstack alone (SIGTERM from a CI runner, SIGINT when
devstack is not the terminal's foreground) are passed on to it. While it runs, a signal never
stops the stack under it: the stack stops once the command has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.control.detach import exit_status, print_tails
from devstack.errors import ServiceStartError
from devstack.manifest.env import stack_variables
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState

EXIT_NOT_RUN = 1
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130
TROUBLED = (ServiceState.CRASHED, ServiceState.FAILED, ServiceState.BACKOFF)


@dataclass(frozen=True)
class Command:
    argv: Sequence[str]
    ready_seconds: float
    """How long the services get to be ready before the command would start."""


class OneShot:
    """Runs :attr:`command` against the stack; :attr:`code` is devstack's exit status once it
    is known (the command's, or why it never ran)."""

    def __init__(self, command: Command, logs_dir: Path) -> None:
        self.command = command
        self.logs_dir = logs_dir
        self.code: int | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def run(self, supervisor: Supervisor, proxy_url: str | None,
                  trust: Mapping[str, str], serving: asyncio.Event) -> None:
        """Wait for the services and for the proxy to serve (``serving``), run the command,
        then ask the stack to stop."""
        try:
            if await self._ready(supervisor, serving):
                await self._run_command(supervisor, proxy_url, trust)
        except asyncio.CancelledError:
            if self.code is None:  # stopped from outside (`devstack down`) before it could run
                print("error: the stack was stopped before the command could start",
                      file=sys.stderr)
                self.code = EXIT_NOT_RUN
            raise
        finally:
            supervisor.request_shutdown()

    async def _ready(self, supervisor: Supervisor, serving: asyncio.Event) -> bool:
        seconds = self.command.ready_seconds
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(supervisor.started)
                await serving.wait()
        except TimeoutError:
            waiting = [s.name for s in supervisor.statuses()
                       if not s.is_ready and s.state is not ServiceState.DONE]
            if not serving.is_set():
                waiting.append("the proxy")
            print(f"error: not ready after {seconds:g}s: {', '.join(waiting)}", file=sys.stderr)
            self._print_tails(waiting)
            self.code = ServiceStartError.exit_code
            return False
        except ServiceStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self._print_tails([s.name for s in supervisor.statuses() if s.state in TROUBLED])
            self.code = exc.exit_code
            return False
        return True

    async def _run_command(self, supervisor: Supervisor, proxy_url: str | None,
                           trust: Mapping[str, str]) -> None:
        ports = {s.name: s.port for s in supervisor.statuses()}
        env = dict(os.environ)
        if proxy_url is not None:
            env.update(trust)
        env.update(stack_variables(ports, proxy_url))
        argv = self.command.argv
        try:
            self._process = await asyncio.create_subprocess_exec(*argv, env=env)
        except OSError as exc:
            print(f"error: cannot run {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
            self.code = EXIT_NOT_FOUND
            return
        try:
            self.code = exit_status(await self._process.wait())
        except asyncio.CancelledError:  # devstack fails under the command: it stops too
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            raise
        finally:
            self._process = None
        if self.code != 0:
            self._print_tails([s.name for s in supervisor.statuses()
                               if s.restarts or s.state in TROUBLED])

    def on_signal(self, signum: int) -> bool:
        """devstack got ``signum``: True when it was the command's (passed on, or already
        delivered by the terminal), so the stack must keep running under it."""
        process = self._process
        if process is None:
            if self.code is None:
                self.code = EXIT_INTERRUPTED
            return False
        if signum != signal.SIGINT or not is_terminal_foreground():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        return True

    def _print_tails(self, names: Sequence[str]) -> None:
        if names:
            print_tails(self.logs_dir, names)


def is_terminal_foreground() -> bool:
    """Whether devstack runs in the foreground of a terminal: a Ctrl-C there was sent to its
    whole process group, the command included."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False
