"""Which port each service gets.

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

Whether a port is free and who holds it is asked of :mod:`devstack.netstat.holders`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import PortError
from devstack.manifest.spec import StackSpec
from devstack.netstat.holders import PortHolder, find_holder, is_port_free

log = logging.getLogger(__name__)

STICKY_FILE_NAME = "ports.json"
STICKY_VERSION = 1

PICK_ATTEMPTS = 200


# --- is a port free, pick a free one ---------------------------------------------------------


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
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current == text or (current is None and not picks):
        return
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only when the record changes: not on the way to the first spawn

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
