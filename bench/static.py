"""Section D: static files, devstack's static route against Caddy's ``file_server``.

The same three files (1 KB, 64 KB and 1 MB of random bytes) in one folder, served by devstack
(``devstack up --port 0`` on a manifest with one route ``/`` to the folder, beside the small
Python service a manifest needs) and by Caddy (``file_server`` with ``tls internal`` on a free
loopback port, its state in the temporary folder). Each must first answer every file byte for
byte (curl verifying devstack's CA and Caddy's internal root). Then, rotating the order of the
two from round to round:

- requests/s for each file: ``wrk -t1 -c50`` over HTTPS, keep-alive;
- new connections/s: the same on the 1 KB file with ``Connection: close``, so every request
  opens a TCP connection and makes a TLS handshake (resumed with a session ticket when the
  server issued one: wrk keeps the last session of each connection);
- the CPU time each server process used per request during those runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import load, procfs
from bench.contender import (
    PYTHON,
    START_SECONDS,
    FrontDoor,
    devstack_ca,
    devstack_certificate,
    hello_service,
    start_devstack,
    stop_devstack,
    write_manifest,
)
from bench.errors import BenchError
from bench.launcher import Launcher
from bench.poll import wait_until
from bench.ports import free_port, port_accepts
from bench.report import Row, Table, Target, format_rounds, ratio_at_least

logger = logging.getLogger(__name__)

CONNECTIONS = 50
FILES = (("1 KB", "1k.bin", 1024), ("64 KB", "64k.bin", 64 * 1024), ("1 MB", "1m.bin", 1 << 20))
"""(label, name, size) of each file served."""
TARGETS = {"1 KB": ratio_at_least(1.0), "64 KB": ratio_at_least(1.0), "1 MB": ratio_at_least(0.8)}
NEW_CONNECTIONS = "new connections"
NEW_CONNECTIONS_TARGET = ratio_at_least(1.0)
FLOOR = "floor"
TLS_FLOOR_SCRIPT = Path(__file__).with_name("tls_floor.py")


@dataclass(frozen=True)
class StaticSettings:
    rounds: int
    seconds: int
    """Duration of each wrk run, in whole seconds (wrk takes nothing finer)."""
    warmup_seconds: int


FULL = StaticSettings(rounds=5, seconds=4, warmup_seconds=1)
QUICK = StaticSettings(rounds=1, seconds=2, warmup_seconds=1)


@dataclass
class Figures:
    """Per-round figures by row label, then by contender."""

    throughput: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cpu_us: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)


CADDYFILE = """\
{{
    admin off
    auto_https disable_redirects
    skip_install_trust
    http_port {http_port}
    https_port {port}
    storage file_system {{
        root {storage}
    }}
}}

https://localhost:{port} {{
    bind 127.0.0.1 [::1]
    tls internal
    root * {root}
    file_server
}}
"""


def write_files(folder: Path) -> dict[str, bytes]:
    """The files both servers serve, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for _, name, size in FILES:
        contents[name] = os.urandom(size)
        (folder / name).write_bytes(contents[name])
    return contents


def start_caddy_files(launcher: Launcher, folder: Path, root: Path) -> FrontDoor:
    """Caddy's ``file_server`` on ``root`` over HTTPS with its internal CA; its home, data and
    config folders under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    storage = folder / "data"
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(
        CADDYFILE.format(port=port, http_port=http_port, storage=storage, root=root)
    )
    env = dict(
        os.environ,
        HOME=str(folder),
        XDG_DATA_HOME=str(folder / "xdg-data"),
        XDG_CONFIG_HOME=str(folder / "xdg-config"),
    )
    argv = ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    launched = launcher.start("caddy", argv, env=env, cwd=folder)
    ca = storage / "pki" / "authorities" / "local" / "root.crt"

    def started() -> bool:
        launched.check_running("starting")
        return ca.is_file() and port_accepts(port)

    wait_until(started, timeout=START_SECONDS, message=f"caddy to listen on port {port}")
    return FrontDoor("caddy", f"https://localhost:{port}/", cacert=ca, process=launched)


class ClosingWrk(load.Wrk):
    """:class:`bench.load.Wrk` sending ``Connection: close``: one connection per request."""

    def __init__(self, folder: Path) -> None:
        self._script = folder / "wrk-close.lua"
        self._script.write_text('wrk.headers["Connection"] = "close"\n' + load.WRK_REPORT)


def start_tls_floor(launcher: Launcher, home: Path, file: Path) -> FrontDoor:
    """:mod:`bench.tls_floor` on a free port with devstack's certificate, serving ``file``."""
    port = free_port()
    argv = [PYTHON, str(TLS_FLOOR_SCRIPT), str(port), str(devstack_certificate(home)), str(file)]
    launched = launcher.start("tls-floor", argv)

    def started() -> bool:
        launched.check_running("starting")
        return port_accepts(port)

    wait_until(started, timeout=START_SECONDS, message=f"the TLS floor to listen on port {port}")
    return FrontDoor(FLOOR, f"https://localhost:{port}/", cacert=devstack_ca(home),
                     process=launched)  # fmt: skip


@contextlib.contextmanager
def running(launcher: Launcher, folder: Path) -> Iterator[tuple[FrontDoor, FrontDoor, FrontDoor]]:
    """devstack and Caddy serving the same files, each checked byte for byte first; and the
    TLS floor serving the 1 KB file."""
    files = folder / "files"
    contents = write_files(files)
    # Readable by others: Caddy and devstack run as this user, but keep the bench's rule.
    files.chmod(0o755)
    manifest = write_manifest(
        folder / "devstack",
        {"services": {"hello": hello_service()},
         "routes": [{"path": "/", "static": str(files)}]},
    )
    home = folder / "devstack-home"
    devstack, proxy_port = start_devstack(launcher, manifest, home, proxy=True)
    try:
        caddy = start_caddy_files(launcher, folder / "caddy", files)
        assert caddy.process is not None
        try:
            floor = start_tls_floor(launcher, home, files / FILES[0][1])
            assert floor.process is not None
            try:
                doors = (
                    FrontDoor("devstack", f"https://localhost:{proxy_port}/", devstack_ca(home),
                              devstack),
                    caddy,
                )
                for door in doors:
                    for name, content in contents.items():
                        check(door, name, content)
                check(floor, FILES[0][1], contents[FILES[0][1]])
                yield (*doors, floor)
            finally:
                launcher.stop(floor.process)
        finally:
            launcher.stop(caddy.process)
    finally:
        stop_devstack(launcher, devstack)


def check(door: FrontDoor, name: str, content: bytes) -> None:
    status, body = load.fetch(door.url + name, door.cacert)
    if status != 200 or body != content:
        raise BenchError(
            f"{door.name} answered {status} with {len(body)} bytes for {name} "
            f"({len(content)} expected):\n" + (door.process.tail() if door.process else "")
        )


def run(launcher: Launcher, folder: Path, settings: StaticSettings) -> Table:
    folder.mkdir(parents=True, exist_ok=True)
    keep_alive, closing = load.Wrk(folder), ClosingWrk(folder)
    figures = Figures()
    with running(launcher, folder) as (devstack, caddy, floor):
        doors = (devstack, caddy)
        for door in doors:
            keep_alive.run(door.url + FILES[0][1], connections=CONNECTIONS,
                           seconds=settings.warmup_seconds)  # fmt: skip
        for label, name, _ in FILES:
            measure(doors, label, name, keep_alive, settings, figures)
        measure((*doors, floor), NEW_CONNECTIONS, FILES[0][1], closing, settings, figures)
    return tabulate(figures, settings)


def measure(doors: tuple[FrontDoor, ...], label: str, name: str, wrk: load.Wrk,
            settings: StaticSettings, figures: Figures) -> None:  # fmt: skip
    """req/s and CPU per request of one row, the contenders alternated round by round."""
    throughput = figures.throughput.setdefault(label, {door.name: [] for door in doors})
    cpu = figures.cpu_us.setdefault(label, {door.name: [] for door in doors})
    for number in range(settings.rounds):
        shift = number % len(doors)
        for door in [*doors[shift:], *doors[:shift]]:
            assert door.process is not None
            before = procfs.cpu_seconds(door.process.pid)
            result = wrk.run(door.url + name, connections=CONNECTIONS, seconds=settings.seconds)
            used = procfs.cpu_seconds(door.process.pid) - before
            throughput[door.name].append(result.requests_per_second)
            cpu[door.name].append(1e6 * used / result.requests)
            figures.socket_errors[door.name] = (
                figures.socket_errors.get(door.name, 0) + result.socket_errors
            )
            logger.info("static %s round %d/%d %-8s %s req/s", label, number + 1, settings.rounds,
                        door.name, f"{result.requests_per_second:,.0f}")  # fmt: skip


def tabulate(figures: Figures, settings: StaticSettings) -> Table:
    table = Table(
        "Static files: devstack's static route vs Caddy's file_server, HTTPS over HTTP/1.1 "
        f"(medians of {settings.rounds} round(s))",
        anchor="caddy",
    )
    median = statistics.median
    sizes = {label: size for label, _, size in FILES}
    for label, by_door in figures.throughput.items():
        target: Target = TARGETS.get(label, NEW_CONNECTIONS_TARGET)
        if label == NEW_CONNECTIONS:
            metric = f"new connections/s (Connection: close, 1 KB file), {CONNECTIONS} at once"
        else:
            metric = f"req/s, {label} file, {CONNECTIONS} connections"
        table.add(Row(metric, median(by_door["devstack"]), median(by_door["caddy"]), "req/s",
                      target))  # fmt: skip
        if FLOOR in by_door:
            table.add(Row(f"{metric}: the floor (a bare uvloop TLS server)",
                          median(by_door[FLOOR]), median(by_door["caddy"]), "req/s"))
        cpu = figures.cpu_us[label]
        table.add(Row(f"server CPU per request, {label} (user + system)",
                      median(cpu["devstack"]), median(cpu["caddy"]), "us"))  # fmt: skip
        table.note(f"{label} per round: " + "; ".join(
            f"{name} {format_rounds(values, 'req/s')}" for name, values in by_door.items()
        ) + _megabytes(by_door, sizes.get(label), median))  # fmt: skip
    table.note(f"wrk socket errors (connect/read/write/timeout): {figures.socket_errors}")
    table.note("the floor (bench/tls_floor.py): uvloop's TLS with the ssl module, devstack's "
               "certificate and one session ticket, the 1 KB file from memory in one write: "
               "what a new connection costs any Python front door")
    return table


def _megabytes(by_door: dict[str, list[float]], size: int | None,
               median: Callable[[list[float]], float]) -> str:  # fmt: skip
    if size is None:
        return ""
    rates = ", ".join(f"{name} {median(v) * size / 1e6:,.0f} MB/s" for name, v in by_door.items())
    return f" ({rates})"
