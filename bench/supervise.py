"""Section A: devstack as a supervisor, against honcho on the same twenty services.

Each round starts ``devstack up --no-proxy`` and ``honcho start`` in turn (the order alternates
from round to round) on the same kind of manifest: twenty ``python -m http.server PORT`` services
on fresh free ports, the very same command line in both. For each run the bench measures, from
outside:

- time to all listening: from spawn until every port accepts a connection (polled every 5 ms);
- time to all ready (devstack only): from spawn until devstack prints ``20 service(s) up``;
- the supervisor's own memory when all are up (``VmRSS`` and ``VmHWM`` of that one process);
- its CPU while idle: ``utime + stime`` over a window with nothing happening, % of one core;
- shutdown: from SIGINT to the supervisor until it and every process below it are gone.
"""

from __future__ import annotations

import logging
import shlex
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.contender import PYTHON, UP_LINE, devstack_argv, devstack_env, write_manifest
from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.poll import wait_until
from bench.ports import free_ports, port_accepts
from bench.report import Row, Table, format_rounds, ratio_at_most, value_below

logger = logging.getLogger(__name__)

START_SECONDS = 60.0
STOP_SECONDS = 20.0
STOP_POLL_SECONDS = 0.002
RSS_LIMIT_MB = 60.0
IDLE_CPU_LIMIT_PERCENT = 0.5
SHUTDOWN_LIMIT_SECONDS = 1.0


@dataclass(frozen=True)
class SupervisorSettings:
    rounds: int
    idle_seconds: float
    services: int = 20


FULL = SupervisorSettings(rounds=5, idle_seconds=3.0)
QUICK = SupervisorSettings(rounds=2, idle_seconds=1.0)


@dataclass(frozen=True)
class Sample:
    listening_seconds: float
    ready_seconds: float | None
    stop_seconds: float
    memory: procfs.Memory
    idle_cpu_seconds: float
    idle_seconds: float
    exit_code: int


def service_command(port: int) -> str:
    return f"{shlex.quote(PYTHON)} -m http.server {port} --bind 127.0.0.1"


@dataclass(frozen=True)
class Supervisor:
    """How to start one of the two supervisors on a set of ports."""

    name: str
    reports_ready: bool
    start: Callable[[Launcher, Path, list[int]], Launched]


def _start_devstack(launcher: Launcher, folder: Path, ports: list[int]) -> Launched:
    services = {
        f"s{i:02d}": {"command": service_command(port), "port": port}
        for i, port in enumerate(ports, 1)
    }
    manifest = write_manifest(folder, {"services": services})
    argv = devstack_argv("up", "--no-proxy", "-f", str(manifest))
    return launcher.start(
        "devstack", argv, env=devstack_env(folder.parent / "devstack-home"), cwd=folder
    )


def _start_honcho(launcher: Launcher, folder: Path, ports: list[int]) -> Launched:
    folder.mkdir(parents=True, exist_ok=True)
    procfile = folder / "Procfile"
    procfile.write_text(
        "".join(f"s{i:02d}: {service_command(port)}\n" for i, port in enumerate(ports, 1))
    )
    argv = [PYTHON, "-m", "honcho", "start", "-f", str(procfile), "-d", str(folder)]
    return launcher.start("honcho", argv, cwd=folder)


DEVSTACK = Supervisor("devstack", reports_ready=True, start=_start_devstack)
HONCHO = Supervisor("honcho", reports_ready=False, start=_start_honcho)


def measure(
    launcher: Launcher, folder: Path, supervisor: Supervisor, settings: SupervisorSettings
) -> Sample:
    """One start, idle window and stop of ``supervisor`` on fresh ports."""
    ports = free_ports(settings.services)
    began = time.monotonic()
    launched = supervisor.start(launcher, folder, ports)
    listening_at, ready_at = _await_start(launched, supervisor, ports, began)
    services = launched.remember_descendants()
    if len(services) < settings.services:
        raise BenchError(
            f"{supervisor.name} runs {len(services)} processes below it, expected at least "
            f"{settings.services}; its output ({launched.log}):\n{launched.tail()}"
        )
    memory = procfs.memory(launched.pid)
    cpu_before, idle_began = procfs.cpu_seconds(launched.pid), time.monotonic()
    time.sleep(settings.idle_seconds)  # the measurement window itself: nothing to wait for
    idle_cpu = procfs.cpu_seconds(launched.pid) - cpu_before
    idle = time.monotonic() - idle_began

    interrupted = time.monotonic()
    launched.interrupt(signal.SIGINT)
    wait_until(
        lambda: launched.has_exited and not any(map(procfs.is_same_alive, services)),
        timeout=STOP_SECONDS,
        interval=STOP_POLL_SECONDS,
        message=f"{supervisor.name} and its {len(services)} processes to exit after SIGINT",
    )
    stopped = time.monotonic() - interrupted
    return Sample(
        listening_seconds=listening_at,
        ready_seconds=ready_at,
        stop_seconds=stopped,
        memory=memory,
        idle_cpu_seconds=idle_cpu,
        idle_seconds=idle,
        exit_code=launched.popen.returncode,
    )


def _await_start(
    launched: Launched, supervisor: Supervisor, ports: list[int], began: float
) -> tuple[float, float | None]:
    """Seconds from ``began`` until every port accepts, and until the supervisor says ready."""
    pending = set(ports)
    listening_at: float | None = None
    ready_at: float | None = None

    def started() -> bool:
        nonlocal listening_at, ready_at
        launched.check_running("starting its services")
        pending.difference_update([port for port in pending if port_accepts(port)])
        now = time.monotonic() - began
        if not pending and listening_at is None:
            listening_at = now
        if supervisor.reports_ready and ready_at is None and UP_LINE.search(launched.output()):
            ready_at = now
        return listening_at is not None and (ready_at is not None or not supervisor.reports_ready)

    wait_until(
        started,
        timeout=START_SECONDS,
        message=f"{supervisor.name}'s {len(ports)} services to listen",
    )
    assert listening_at is not None
    return listening_at, ready_at


def run(launcher: Launcher, folder: Path, settings: SupervisorSettings) -> Table:
    samples: dict[str, list[Sample]] = {DEVSTACK.name: [], HONCHO.name: []}
    for number in range(settings.rounds):
        order = (DEVSTACK, HONCHO) if number % 2 == 0 else (HONCHO, DEVSTACK)
        for supervisor in order:
            sample = measure(
                launcher, folder / f"round-{number + 1}-{supervisor.name}", supervisor, settings
            )
            samples[supervisor.name].append(sample)
            logger.info(
                "supervisor round %d/%d %-8s listening %.3f s, ready %s, stop %.3f s",
                number + 1,
                settings.rounds,
                supervisor.name,
                sample.listening_seconds,
                "-" if sample.ready_seconds is None else f"{sample.ready_seconds:.3f} s",
                sample.stop_seconds,
            )
    return tabulate(samples[DEVSTACK.name], samples[HONCHO.name], settings)


def tabulate(ours: list[Sample], theirs: list[Sample], settings: SupervisorSettings) -> Table:
    n = settings.services
    table = Table(
        f"Supervisor: {n} services, devstack up --no-proxy vs honcho start "
        f"(medians of {settings.rounds} rounds)",
        anchor="honcho",
    )

    def median(samples: list[Sample], figure: Callable[[Sample], float | None]) -> float | None:
        values = [v for v in map(figure, samples) if v is not None]
        return statistics.median(values) if values else None

    def idle_percent(samples: list[Sample]) -> float:
        # Summed over the rounds: one clock tick is 10 ms, too coarse for a single window.
        return 100 * sum(s.idle_cpu_seconds for s in samples) / sum(s.idle_seconds for s in samples)

    listening = median(theirs, lambda s: s.listening_seconds)
    rows = [
        Row("time to all listening", median(ours, lambda s: s.listening_seconds), listening,
            "s", ratio_at_most(1.0)),
        Row("time to all ready (devstack's report)", median(ours, lambda s: s.ready_seconds),
            listening, "s", ratio_at_most(1.0)),
        Row("shutdown: SIGINT to every process gone", median(ours, lambda s: s.stop_seconds),
            median(theirs, lambda s: s.stop_seconds), "s", value_below(SHUTDOWN_LIMIT_SECONDS)),
        Row("supervisor RSS when all ready (VmRSS)", median(ours, lambda s: s.memory.rss_mb),
            median(theirs, lambda s: s.memory.rss_mb), "MB", value_below(RSS_LIMIT_MB)),
        Row("supervisor peak RSS (VmHWM)", median(ours, lambda s: s.memory.peak_mb),
            median(theirs, lambda s: s.memory.peak_mb), "MB", value_below(RSS_LIMIT_MB)),
        Row(f"supervisor CPU while idle ({settings.idle_seconds:g} s x {settings.rounds})",
            idle_percent(ours), idle_percent(theirs), "%", value_below(IDLE_CPU_LIMIT_PERCENT)),
    ]
    for row in rows:
        table.add(row)
    for name, samples in (("devstack", ours), ("honcho", theirs)):
        table.note(
            f"{name} per round: listening "
            f"{format_rounds([s.listening_seconds for s in samples], 's')}; shutdown "
            f"{format_rounds([s.stop_seconds for s in samples], 's')}; exit codes "
            f"{sorted({s.exit_code for s in samples})}"
        )
    table.note(
        f"services: `{PYTHON} -m http.server PORT --bind 127.0.0.1` on fresh free ports each "
        f"run, the same command line for both; idle CPU target: < {IDLE_CPU_LIMIT_PERCENT:g} % "
        "of one core (\"near zero\")"
    )
    return table
