"""Files only their owner may read: 0700 folders, 0600 files written atomically, and a lock
that serialises writers across processes (two ``devstack`` runs starting at once)."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from devstack.errors import TLSError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER: containers
        return f"uid{os.getuid()}"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make sure only the owner can enter it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tighten(path, 0o700)
    except OSError as exc:
        raise TLSError(
            f"cannot create the private folder {path}: {exc}; "
            "set DEVSTACK_HOME to a folder you can write to"
        ) from exc
    return path


def tighten(path: Path, mode: int) -> None:
    current = path.stat().st_mode & 0o777
    if current & ~mode:
        logger.warning("%s had mode %o; setting it to %o", path, current, mode)
        path.chmod(mode)


def write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename) with ``mode``."""
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")  # not secrets: 5 ms of imports
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TLSError(f"cannot write {path}: {exc}") from exc


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Serialize writers across processes (two ``devstack`` runs starting at once)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
