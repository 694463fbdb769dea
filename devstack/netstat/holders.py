"""Who holds a port, and whether it is free: facts about the machine's sockets, asked both when
ports are assigned to services and when the proxy's own port turns out taken.

Holder lookup reads ``/proc/net/tcp`` and ``/proc/net/tcp6`` for listening sockets on the port,
then scans ``/proc/*/fd`` once for a descriptor pointing at one of their inodes. Off Linux (no
``/proc``) it can only say that *another process* holds the port.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

PROBE_ADDRESSES: tuple[tuple[socket.AddressFamily, str], ...] = (
    (socket.AF_INET, "127.0.0.1"),
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET6, "::1"),
    (socket.AF_INET6, "::"),
)
"""A port counts as taken when any of these holds it."""

COMMAND_MAX_CHARS = 60
_TCP_LISTEN = "0A"
_PROC_NET_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ADDRESS_MISSING = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)
"""Bind errors that mean "this machine has no such address" (IPv6 off), not "port taken"."""


@dataclass(frozen=True)
class PortHolder:
    """The process listening on a port, as far as we may know it."""

    pid: int | None
    command: str | None
    """``/proc/<pid>/cmdline`` joined with spaces, shortened to about 60 characters."""

    def __str__(self) -> str:
        if self.pid is None:
            return "another process"
        if not self.command:
            return f"pid {self.pid}"
        return f"pid {self.pid} ({self.command})"


UNKNOWN_HOLDER = PortHolder(pid=None, command=None)


def listening_inodes(table: str, port: int) -> frozenset[int]:
    """Inodes of the LISTEN sockets on ``port`` in the text of ``/proc/net/tcp`` or ``tcp6``.

    Lines look like ``0: 0100007F:0BB8 00000000:0000 0A ... uid timeout inode ...``; the local
    port is the hex after the colon of the second field, the state is the fourth field (``0A``
    is LISTEN) and the inode the tenth. The header and malformed lines are skipped.
    """
    inodes: set[int] = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            if int(port_hex, 16) != port:
                continue
            inode = int(fields[9])
        except ValueError:
            continue
        if inode:
            inodes.add(inode)
    return frozenset(inodes)


def shorten_command(argv: list[str], limit: int = COMMAND_MAX_CHARS) -> str:
    """One line for a command line: arguments joined with spaces, whitespace runs collapsed,
    cut to ``limit`` characters with ``...``."""
    text = " ".join(" ".join(argv).split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def find_holder(port: int) -> PortHolder | None:
    """The process listening on ``port`` (TCP, IPv4 or IPv6), or None when nothing listens.

    Returns :data:`UNKNOWN_HOLDER` (``another process``) when a listener exists but its process
    cannot be seen (another user's, another container's), or when ``/proc`` is missing and a
    bind says the port is taken. Never raises on processes that vanish while scanning.
    """
    tables = [text for text in map(_read_text, _PROC_NET_TABLES) if text is not None]
    if not tables:
        return None if is_port_free(port) else UNKNOWN_HOLDER
    inodes: set[int] = set()
    for table in tables:
        inodes |= listening_inodes(table, port)
    if not inodes:
        return None
    pid = _pid_owning_socket(frozenset(f"socket:[{inode}]" for inode in inodes))
    if pid is None:
        return UNKNOWN_HOLDER
    return PortHolder(pid=pid, command=_command_of(pid))


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _pids() -> Iterator[int]:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            yield int(entry)


def _pid_owning_socket(links: frozenset[str]) -> int | None:
    """The first pid with a descriptor whose link is one of ``links`` (``socket:[inode]``)."""
    for pid in _pids():
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:  # gone, a zombie, or not ours to look at
            continue
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:  # closed meanwhile, or the process exited
                continue
            if target in links:
                return pid
    return None


def _command_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    if not argv:  # kernel threads and zombies have an empty cmdline
        comm = (_read_text(f"/proc/{pid}/comm") or "").strip()
        return comm or None
    return shorten_command(argv)


def is_port_free(port: int) -> bool:
    """True when ``port`` can be bound on each of 127.0.0.1, 0.0.0.0, ::1 and ::.

    ``SO_REUSEADDR`` is set so that connections lingering in TIME_WAIT do not count, as they
    do not for a service that sets it too (the kernel requires both sides to). Addresses
    the machine lacks (IPv6 disabled) are skipped. A port the user may not bind (below
    ``ip_unprivileged_port_start``) counts as taken: the service could not bind it either.
    """
    return all(_can_bind(family, host, port) for family, host in PROBE_ADDRESSES)


def _can_bind(family: socket.AddressFamily, host: str, port: int) -> bool:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in _ADDRESS_MISSING:
            return True
        raise
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Only the IPv6 side: the IPv4 addresses are probed on their own.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in _ADDRESS_MISSING
    return True
