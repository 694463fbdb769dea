"""Every process the bench starts, and the guarantee that none outlives the run.

Each program is started in its own session (so a Ctrl-C on the bench's terminal reaches only the
bench, which then stops things in order), with stdout and stderr in a log file. The processes it
starts in turn (devstack's and honcho's services, nginx workers) are remembered by pid and start
time as soon as the bench sees them, so they can be stopped even after their parent died and
they were re-parented to init. :meth:`Launcher.close` stops whatever is left: SIGTERM to each
group and remembered process, then SIGKILL after a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from bench import procfs
from bench.errors import BenchError
from bench.poll import wait_until

logger = logging.getLogger(__name__)

STOP_SECONDS = 5.0
"""How long a stopped program gets between SIGTERM and SIGKILL."""


class Launched:
    """One program the bench started, with its output in ``log``."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.identity = procfs.identify(popen.pid) or procfs.Identity(popen.pid, -1)
        self.remembered: set[procfs.Identity] = set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def has_exited(self) -> bool:
        return self.popen.poll() is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remember_descendants(self) -> list[procfs.Identity]:
        """Note every live process below this one (to stop them at the end) and return them."""
        found = procfs.descendants(self.pid)
        self.remembered.update(found)
        return found

    def tail(self, lines: int = 15) -> str:
        """The last lines of the program's output, for error messages."""
        try:
            text = self.output()
        except OSError:
            return "(no output)"
        kept = text.rstrip().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in kept) or "    (no output)"

    def check_running(self, doing: str) -> None:
        if self.has_exited:
            raise BenchError(
                f"{self.name} exited with code {self.popen.returncode} while {doing}; "
                f"its output ({self.log}):\n{self.tail()}"
            )

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Send ``signum`` to the program itself (not its group), like a Ctrl-C to it alone."""
        if not self.has_exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


class Launcher:
    """Starts programs and stops all of them (and whatever they started) on ``close()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._launched: list[Launched] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Launched:
        program = argv[0]
        if "/" not in program and shutil.which(program) is None:
            raise BenchError(f"{program} is not on PATH; see bench/README.md for what to install")
        log = self.folder / f"{name}-{len(self._launched)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        launched = Launched(name, popen, log)
        self._launched.append(launched)
        logger.debug("started %s (pid %d): %s", name, popen.pid, " ".join(argv))
        return launched

    def stop(self, launched: Launched, *, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM the program's group and everything remembered below it; SIGKILL what is
        still alive after ``timeout`` seconds; reap the program."""
        launched.remember_descendants()
        _signal_all(launched, signal.SIGTERM)
        try:
            wait_until(
                lambda: _all_gone(launched),
                timeout=timeout,
                message=f"{launched.name} and its children to exit after SIGTERM",
            )
        except BenchError:
            logger.warning("%s did not stop within %g s; killing it", launched.name, timeout)
            _signal_all(launched, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            launched.popen.wait(timeout=timeout)

    def close(self) -> None:
        """Stop every program still running, newest first."""
        for launched in reversed(self._launched):
            if not _all_gone(launched):
                self.stop(launched)
        self._launched.clear()


def _signal_all(launched: Launched, signum: int) -> None:
    if not launched.has_exited:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(launched.pid, signum)  # its own session: the group id is its pid
    for identity in launched.remembered:
        if procfs.is_same_alive(identity):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(identity.pid, signum)


def _all_gone(launched: Launched) -> bool:
    return launched.has_exited and not any(
        procfs.is_same_alive(identity) for identity in launched.remembered
    )
