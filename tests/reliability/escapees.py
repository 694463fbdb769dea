"""Finding the processes a test's services left behind: by a token the test put in their
environment, so a test only ever looks at (and cleans up) what it started itself."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal


def new_token() -> str:
    return f"reliability-{secrets.token_hex(8)}"


def with_token(env: dict[str, str], token: str) -> dict[str, str]:
    return {**env, "RELIABILITY_TOKEN": token}


def carrying(token: str) -> list[int]:
    """Live processes (not zombies) whose environment carries ``RELIABILITY_TOKEN=token``."""
    needle = f"RELIABILITY_TOKEN={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found




def kill_all(token: str) -> None:
    """SIGKILL whatever still carries ``token`` (a failed test's leftovers)."""
    for pid in carrying(token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
