"""Which port each service gets, and who holds a port when it is not free.

A service that asks for ``port: 3000`` gets 3000 when nothing holds it on any loopback or
wildcard address. Otherwise devstack picks a free high port, says so in one line that names the
holder (``simon: port 3000 is held by pid 4242 (node server.js); using 49731``), and remembers
the pick in ``.devstack/ports.json`` so the next run gets the same one while it stays free.
A service with no port gets a stable free one the same way.

On each run, a service gets, in this order: its wanted port if free; else its previous pick if
still free; else a new pick. Picks never collide with each other, with any service's wanted port,
or with the proxy's ports.

The sticky file is small JSON, written atomically::

    {"version": 1, "services": {"simon": {"wanted": 3000, "port": 49731}}}

``port`` is the last port devstack *picked* for the service (not its wanted one): a service that
got its wanted port keeps its old pick on file for the next time the wanted port is taken.

Holder lookup reads ``/proc/net/tcp`` and ``/proc/net/tcp6`` for listening sockets on the port,
then scans ``/proc/*/fd`` once for a descriptor pointing at one of their inodes. Off Linux (no
``/proc``) it can only say that *another process* holds the port.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.config import StackSpec
from devstack.errors import PortError

log = logging.getLogger(__name__)

STICKY_FILE_NAME = "ports.json"
STICKY_VERSION = 1

PROBE_ADDRESSES: tuple[tuple[socket.AddressFamily, str], ...] = (
    (socket.AF_INET, "127.0.0.1"),
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET6, "::1"),
    (socket.AF_INET6, "::"),
)
"""A port counts as taken when any of these holds it."""

COMMAND_MAX_CHARS = 60
PICK_ATTEMPTS = 200
_TCP_LISTEN = "0A"
_PROC_NET_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ADDRESS_MISSING = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)
"""Bind errors that mean "this machine has no such address" (IPv6 off), not "port taken"."""


# --- who holds a port ------------------------------------------------------------------------


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


# --- is a port free, pick a free one ---------------------------------------------------------


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


def pick_free_port(avoid: Collection[int] = ()) -> int:
    """A high port the kernel chose (bind to 0), free on every probed address and not in
    ``avoid``. Ports rejected for being in ``avoid`` stay bound until the pick is made, so the
    kernel cannot hand them out again."""
    rejected: list[socket.socket] = []
    try:
        for _ in range(PICK_ATTEMPTS):
            sock = _bind_any_port()
            port: int = sock.getsockname()[1]
            if port in avoid:
                rejected.append(sock)
                continue
            sock.close()
            if is_port_free(port):
                return port
    finally:
        for sock in rejected:
            sock.close()
    raise PortError(
        f"could not find a free TCP port in {PICK_ATTEMPTS} tries; "
        "check the ephemeral range in /proc/sys/net/ipv4/ip_local_port_range"
    )


def _bind_any_port() -> socket.socket:
    """A socket bound to port 0 on the dual-stack wildcard (or IPv4 only, where IPv6 is off),
    so the kernel picks a port no wildcard listener of either family holds."""
    with contextlib.suppress(OSError):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    return sock


# --- assigning ports to services -------------------------------------------------------------


@dataclass(frozen=True)
class PortAssignment:
    """The port one service gets, and why it is not the one it asked for."""

    service: str
    wanted: int | None
    port: int
    """What the service actually gets."""
    holder: PortHolder | None = None
    """Who held ``wanted``, when the service was moved because a process holds it."""
    reason: str | None = None
    """Why ``wanted`` was not given when no process holds it (``is devstack's proxy port``)."""

    @property
    def moved(self) -> bool:
        return self.wanted is not None and self.port != self.wanted

    def message(self) -> str | None:
        """The one-line notice for a moved service, or None when it got its wanted port."""
        if not self.moved:
            return None
        if self.holder is not None:
            why = f"is held by {self.holder}"
        else:
            why = self.reason or "is not available"
        return f"{self.service}: port {self.wanted} {why}; using {self.port}"


@dataclass(frozen=True)
class PortProbe:
    """The questions :func:`assign_ports` asks the OS; tests pass stand-ins."""

    is_free: Callable[[int], bool] = is_port_free
    holder: Callable[[int], PortHolder | None] = find_holder
    pick: Callable[[Collection[int]], int] = pick_free_port


def assign_ports(
    spec: StackSpec, *, proxy_port: int | None = None, probe: PortProbe | None = None
) -> dict[str, PortAssignment]:
    """Decide every service's port, reading and updating ``spec.state_dir / "ports.json"``.

    ``proxy_port`` overrides ``spec.proxy.port`` as the port no service may get. Nothing is
    printed or logged about moved services: the caller shows each ``message()``.
    """
    path = spec.state_dir / STICKY_FILE_NAME
    wanted = {name: service.port for name, service in spec.services.items()}
    previous = load_sticky(path)
    assignments = decide_ports(
        wanted, previous, reserved=_proxy_ports(spec, proxy_port), probe=probe or PortProbe()
    )
    save_sticky(path, sticky_picks(assignments, previous), wanted)
    return assignments


def _proxy_ports(spec: StackSpec, override: int | None) -> dict[int, str]:
    reserved: dict[int, str] = {}
    if override is not None:
        reserved[override] = "is devstack's proxy port"
    elif spec.proxy.enabled:
        reserved[spec.proxy.port] = "is devstack's proxy port"
    if spec.proxy.enabled and spec.proxy.http_port is not None:
        reserved.setdefault(spec.proxy.http_port, "is devstack's proxy HTTP port")
    return reserved


def decide_ports(
    wanted: Mapping[str, int | None],
    previous: Mapping[str, int],
    *,
    reserved: Mapping[int, str],
    probe: PortProbe,
) -> dict[str, PortAssignment]:
    """The pure decision, in three passes so that picks stay stable:

    1. services get their wanted port when it is free, not reserved, and not an earlier
       service's wanted port;
    2. the others get their previous pick when it is still free and clashes with nothing;
    3. the rest get a new pick, avoiding everything above.

    ``reserved`` maps ports no service may get (the proxy's) to the reason, for the notice.
    """
    result: dict[str, PortAssignment] = {}
    refused: dict[str, tuple[PortHolder | None, str | None]] = {}
    taken: set[int] = set(reserved)
    taken.update(port for port in wanted.values() if port is not None)
    claimed: dict[int, str] = {}  # wanted port -> first service that asked for it
    for name, port in wanted.items():
        if port is None:
            continue
        if port in reserved:
            refused[name] = (None, reserved[port])
        elif port in claimed:
            refused[name] = (None, f"is wanted by service '{claimed[port]}' too")
        elif probe.is_free(port):
            result[name] = PortAssignment(name, port, port)
        else:
            refused[name] = _refusal(probe, port)
        claimed.setdefault(port, name)
    pending = [name for name in wanted if name not in result]
    for name in pending:
        port = previous.get(name)
        if port is not None and port not in taken and probe.is_free(port):
            result[name] = _moved(name, wanted[name], port, refused.get(name))
            taken.add(port)
    for name in pending:
        if name not in result:
            port = probe.pick(frozenset(taken))
            result[name] = _moved(name, wanted[name], port, refused.get(name))
            taken.add(port)
    return {name: result[name] for name in wanted}


def _refusal(probe: PortProbe, port: int) -> tuple[PortHolder | None, str | None]:
    holder = probe.holder(port)
    if holder is not None:
        return holder, None
    # Taken, yet nobody listens: a bound-only socket, or a port this user may not bind.
    return None, "cannot be bound (in use without listening, or needs privileges)"


def _moved(
    name: str, wanted: int | None, port: int, refusal: tuple[PortHolder | None, str | None] | None
) -> PortAssignment:
    holder, reason = refusal or (None, None)
    return PortAssignment(name, wanted, port, holder=holder, reason=reason)


def sticky_picks(
    assignments: Mapping[str, PortAssignment], previous: Mapping[str, int]
) -> dict[str, int]:
    """The picks to remember: this run's pick for services that did not get their wanted port,
    the previous pick (kept for next time) for those that did. Services gone from the
    manifest are forgotten."""
    picks: dict[str, int] = {}
    for name, assignment in assignments.items():
        if assignment.wanted is None or assignment.port != assignment.wanted:
            picks[name] = assignment.port
        elif name in previous:
            picks[name] = previous[name]
    return picks


# --- the sticky file -------------------------------------------------------------------------


def load_sticky(path: Path) -> dict[str, int]:
    """The previous picks, service name -> port. A missing file means none; an unreadable or
    malformed one is ignored with a warning (it only costs the picks' stability)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("ignoring %s: cannot read it (%s); ports will be picked afresh", path, exc)
        return {}
    try:
        return _parse_sticky(json.loads(raw))
    except ValueError as exc:  # includes JSON and Unicode decoding errors
        log.warning(
            "ignoring %s: not a devstack ports file (%s); ports will be picked afresh", path, exc
        )
        return {}


def _parse_sticky(data: object) -> dict[str, int]:
    if not isinstance(data, dict) or data.get("version") != STICKY_VERSION:
        raise ValueError(f'expected an object with "version": {STICKY_VERSION}')
    services = data.get("services")
    if not isinstance(services, dict):
        raise ValueError('expected "services" to be an object')
    picks: dict[str, int] = {}
    for name, entry in services.items():
        port = entry.get("port") if isinstance(entry, dict) else None
        # bool is an int subclass; a hand-edited `true` is no port.
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            picks[name] = port
    return picks


def render_sticky(picks: Mapping[str, int], wanted: Mapping[str, int | None]) -> str:
    """The sticky file's text for ``picks`` (``wanted`` is recorded for people reading it)."""
    data = {
        "version": STICKY_VERSION,
        "services": {
            name: {"wanted": wanted.get(name), "port": port} for name, port in picks.items()
        },
    }
    return json.dumps(data, indent=2) + "\n"


def save_sticky(path: Path, picks: Mapping[str, int], wanted: Mapping[str, int | None]) -> None:
    """Write the picks atomically (a temporary file beside ``path``, then ``os.replace``),
    creating the folder if needed; nothing is written when the file already says the same, or
    when there is nothing to remember and no file yet.

    A failure is logged, not raised: the stack runs fine without remembering its picks.
    """
    text = render_sticky(picks, wanted)
    current = _read_text(str(path))
    if current == text or (current is None and not picks):
        return
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("cannot save port picks to %s (%s); they will not stick across runs", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
