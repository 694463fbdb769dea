"""Where a stack's control socket lives, and reaching a socket path of any length.

A unix socket's address holds at most 107 bytes, and a project folder can be deeper than
that. A longer path is reached through an open descriptor of its folder
(``/proc/self/fd/N/control.sock``, Linux), which names the same file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SOCKET_NAME = "control.sock"
MAX_ADDRESS_BYTES = 100
"""Below the kernel's 107-byte limit on a socket's path, leaving room for the terminating NUL."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name of ``path`` short enough to bind or connect to, valid inside the ``with``."""
    name = str(path)
    if len(os.fsencode(name)) <= MAX_ADDRESS_BYTES:
        yield name
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)
