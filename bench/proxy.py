"""Section B: devstack's HTTPS proxy against Caddy, in front of the same upstream process.

For each upstream (a small aiohttp service, then nginx ``return 200``), devstack runs it as its
one service with one route ``/`` to it (``devstack up --port 0``), Caddy is started in front of
that same process, and the upstream itself is the plain-HTTP anchor ("direct"). Every contender
must first answer 200 with the expected body (curl verifying devstack's CA and Caddy's internal
CA). Then, rotating the order of the contenders from round to round:

- requests/s: ``wrk -t1 -c50`` over HTTPS;
- added latency with one connection: ``wrk -t1 -c1``, the proxy's average / p50 / p99 minus
  the direct one's from the same round;
- streaming (nginx only): one large download with curl, MB/s;
- at the end, the peak RSS (``VmHWM``) of the devstack and Caddy processes.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import load, procfs
from bench.contender import (
    BIG_FILE_PATH,
    HELLO_BODY,
    NGINX_BODY,
    FrontDoor,
    devstack_ca,
    hello_port,
    hello_service,
    nginx_service,
    start_caddy,
    start_devstack,
    stop_devstack,
    write_manifest,
)
from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.report import (
    Row,
    Table,
    Target,
    format_rounds,
    ratio_at_least,
    ratio_at_most,
    value_below,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTIONS = 50
RSS_LIMIT_MB = 80.0


@dataclass(frozen=True)
class ProxySettings:
    load_rounds: int
    """Rounds of the req/s figure, the noisiest one."""
    rounds: int
    """Rounds of the latency and streaming figures."""
    load_seconds: int
    latency_seconds: int
    warmup_seconds: int
    """Durations in whole seconds: wrk takes nothing finer."""
    stream_bytes: int


FULL = ProxySettings(
    load_rounds=5, rounds=3, load_seconds=4, latency_seconds=3, warmup_seconds=1,
    stream_bytes=1 << 30,
)
QUICK = ProxySettings(
    load_rounds=1, rounds=1, load_seconds=2, latency_seconds=2, warmup_seconds=1,
    stream_bytes=256 << 20,
)


@dataclass(frozen=True)
class Upstream:
    """One upstream the proxies are put in front of."""

    label: str
    service: str
    body: bytes
    throughput_target: Target
    streams: bool
    """Whether it serves the large file the streaming figure downloads."""


PYTHON_UPSTREAM = Upstream("python service", "hello", HELLO_BODY, ratio_at_least(1.0), False)
NGINX_UPSTREAM = Upstream("nginx", "nginx", NGINX_BODY, ratio_at_least(0.7), True)


@dataclass
class Figures:
    """Per-round figures of one upstream, by contender name."""

    throughput: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    """CPU time (user + system) of the proxy process per request, in microseconds."""
    latency: dict[str, list[load.WrkResult]] = field(default_factory=dict)
    streaming: dict[str, list[float]] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    """devstack running one upstream, and Caddy in front of that same upstream process."""

    devstack: Launched
    caddy: Launched
    doors: tuple[FrontDoor, ...]
    """devstack, caddy and direct, in that order."""


@contextlib.contextmanager
def running(
    launcher: Launcher, folder: Path, home: Path, upstream: Upstream, stream_bytes: int
) -> Iterator[Stack]:
    """Start devstack (supervising ``upstream``) and Caddy, check that every front door answers
    200 with the expected body, and stop both at the end."""
    service: dict[str, Any] = (
        nginx_service(folder, stream_bytes) if upstream.streams else hello_service()
    )
    manifest = write_manifest(
        folder,
        {"services": {upstream.service: service},
         "routes": [{"path": "/", "service": upstream.service}]},
    )
    devstack, proxy_port = start_devstack(launcher, manifest, home, proxy=True)
    try:
        devstack.remember_descendants()
        # The hello service says which port devstack gave it; nginx's is fixed in its config.
        port = int(service["port"]) if upstream.streams else hello_port(devstack)
        caddy = start_caddy(launcher, folder / "caddy", port)
        assert caddy.process is not None
        try:
            doors = (
                FrontDoor("devstack", f"https://localhost:{proxy_port}/", devstack_ca(home),
                          devstack),
                caddy,
                FrontDoor("direct", f"http://127.0.0.1:{port}/"),
            )
            check_answers(doors, upstream.body)
            yield Stack(devstack, caddy.process, doors)
        finally:
            launcher.stop(caddy.process)
    finally:
        stop_devstack(launcher, devstack)


def run(launcher: Launcher, folder: Path, settings: ProxySettings) -> Table:
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "devstack-home"
    wrk = load.Wrk(folder)
    figures = {}
    for upstream in (PYTHON_UPSTREAM, NGINX_UPSTREAM):
        with running(
            launcher, folder / upstream.service, home, upstream, settings.stream_bytes
        ) as stack:
            figures[upstream.label] = measure(stack, upstream, wrk, settings)
    return tabulate(figures, settings)


def measure(stack: Stack, upstream: Upstream, wrk: load.Wrk, settings: ProxySettings) -> Figures:
    """Every figure of one upstream, the contenders alternated round by round."""
    doors = stack.doors
    figures = Figures()
    for door in doors:
        wrk.run(door.url, connections=CONNECTIONS, seconds=settings.warmup_seconds)

    def throughput(door: FrontDoor) -> float:
        before = procfs.cpu_seconds(door.process.pid) if door.process else 0.0
        result = wrk.run(door.url, connections=CONNECTIONS, seconds=settings.load_seconds)
        if door.process is not None:
            used = procfs.cpu_seconds(door.process.pid) - before
            figures.cpu_us.setdefault(door.name, []).append(1e6 * used / result.requests)
        figures.socket_errors[door.name] = (
            figures.socket_errors.get(door.name, 0) + result.socket_errors
        )
        return result.requests_per_second

    figures.throughput = alternate(
        doors, settings.load_rounds, throughput, f"{upstream.label} req/s"
    )
    figures.latency = alternate(
        doors,
        settings.rounds,
        lambda door: wrk.run(door.url, connections=1, seconds=settings.latency_seconds),
        f"{upstream.label} 1-connection latency",
    )
    if upstream.streams:
        figures.streaming = alternate(
            doors,
            settings.rounds,
            lambda door: load.download(
                door.url.rstrip("/") + BIG_FILE_PATH, door.cacert,
                expected_bytes=settings.stream_bytes,
            ).megabytes_per_second,
            f"{upstream.label} streaming MB/s",
        )
    for door in doors:
        if door.process is not None:
            figures.peak_mb[door.name] = procfs.memory(door.process.pid).peak_mb
    return figures


def check_answers(doors: Sequence[FrontDoor], body: bytes) -> None:
    """Every contender answers 200 with ``body``, its certificate verified by its own CA."""
    for door in doors:
        status, answer = load.fetch(door.url, door.cacert)
        if status != 200 or answer.strip() != body:
            raise BenchError(
                f"{door.name} at {door.url} answered {status} {answer[:200]!r}, "
                f"expected 200 {body!r}"
            )


def alternate(
    doors: Sequence[FrontDoor], rounds: int, figure: Callable[[FrontDoor], T], what: str
) -> dict[str, list[T]]:
    """``figure`` of every door in each round, the order rotated by one each round so no
    contender always runs first (or right after the heaviest one)."""
    results: dict[str, list[T]] = {door.name: [] for door in doors}
    for number in range(rounds):
        shift = number % len(doors)
        for door in [*doors[shift:], *doors[:shift]]:
            value = figure(door)
            results[door.name].append(value)
            shown = (
                f"{value.mean_us:.0f} us mean"
                if isinstance(value, load.WrkResult)
                else f"{value:,.0f}"
            )
            logger.info("proxy %s round %d/%d %-8s %s", what, number + 1, rounds, door.name, shown)
    return results


def tabulate(figures: dict[str, Figures], settings: ProxySettings) -> Table:
    table = Table(
        "Proxy: devstack vs Caddy, HTTPS over HTTP/1.1 in front of the same upstream process "
        f"(medians of {settings.load_rounds} round(s) for req/s, {settings.rounds} for the rest)",
        anchor="caddy",
    )
    median = statistics.median
    for label, f in figures.items():
        target = PYTHON_UPSTREAM.throughput_target if label == PYTHON_UPSTREAM.label else (
            NGINX_UPSTREAM.throughput_target
        )
        table.add(Row(f"req/s, {label}, {CONNECTIONS} connections",
                      median(f.throughput["devstack"]), median(f.throughput["caddy"]),
                      "req/s", target))
        table.add(Row(f"proxy CPU per request, {label} (user + system)",
                      median(f.cpu_us["devstack"]), median(f.cpu_us["caddy"]), "us"))
        table.note(
            f"{label} req/s per round: "
            + "; ".join(f"{name} {format_rounds(v, 'req/s')}" for name, v in f.throughput.items())
        )
    for label, f in figures.items():
        for stat in ("mean", "p50", "p99"):
            ours = _added(f.latency, "devstack", stat)
            theirs = _added(f.latency, "caddy", stat)
            table.add(Row(f"added latency {stat}, {label}, 1 connection", ours, theirs, "us",
                          ratio_at_most(1.0)))
        direct = f.latency["direct"]
        table.note(
            f"{label} direct latency (the anchor subtracted): mean "
            f"{median([r.mean_us for r in direct]):.0f} us, p50 "
            f"{median([r.p50_us for r in direct]):.0f} us, p99 "
            f"{median([r.p99_us for r in direct]):.0f} us"
        )
    for label, f in figures.items():
        if f.streaming:
            size = f"{settings.stream_bytes / (1 << 20):,.0f} MiB"
            table.add(Row(f"streaming one {size} body from {label}",
                          median(f.streaming["devstack"]), median(f.streaming["caddy"]),
                          "MB/s", ratio_at_least(0.8)))
            table.note(
                "streaming per round: "
                + "; ".join(f"{n} {format_rounds(v, 'MB/s')}" for n, v in f.streaming.items())
            )
    ours_peak = max(f.peak_mb.get("devstack", 0.0) for f in figures.values())
    theirs_peak = max(f.peak_mb.get("caddy", 0.0) for f in figures.values())
    table.add(Row("proxy process peak RSS (VmHWM), after all runs", ours_peak, theirs_peak, "MB",
                  value_below(RSS_LIMIT_MB)))
    errors = {
        name: sum(f.socket_errors.get(name, 0) for f in figures.values())
        for name in ("devstack", "caddy", "direct")
    }
    table.note(f"wrk socket errors (connect/read/write/timeout): {errors}")
    return table


def _added(latency: dict[str, list[load.WrkResult]], name: str, stat: str) -> float:
    """Median over rounds of (``name``'s latency - direct latency in the same round)."""
    of = LATENCY_STATS[stat]
    pairs = zip(latency[name], latency["direct"], strict=True)
    return statistics.median(of(ours) - of(direct) for ours, direct in pairs)


LATENCY_STATS: dict[str, Callable[[load.WrkResult], float]] = {
    "mean": lambda r: r.mean_us,
    "p50": lambda r: r.p50_us,
    "p99": lambda r: r.p99_us,
}
