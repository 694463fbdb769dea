"""Running the tools trust stores are changed with (``update-ca-certificates``, ``security``,
``certutil``): no input, output captured, a deadline, and one exception that says what failed."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

COMMAND_TIMEOUT_SECONDS = 120.0


class CommandFailed(Exception):
    """A store's command could not run or exited non-zero; ``str()`` says which and why."""


def run(command: Sequence[str]) -> str:
    """Run ``command``; its output, or :class:`CommandFailed` saying why it failed."""
    done = spawn(command)
    if done.returncode != 0:
        raise CommandFailed(failure(command, done))
    return done.stdout


def spawn(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` whatever its exit code; :class:`CommandFailed` only if it cannot run."""
    try:
        return subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{command[0]} not found") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(f"{shlex.join(command)} failed: {exc}") from exc


def failure(command: Sequence[str], done: subprocess.CompletedProcess[str]) -> str:
    """One line: the command and the end of what it said (or its exit code)."""
    output = " ".join((done.stderr.strip() or done.stdout.strip()).split())[-300:]
    return f"{shlex.join(command)} failed: {output or f'exit code {done.returncode}'}"
