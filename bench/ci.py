"""Section: ``devstack run -- CMD`` in CI, devstack's own overhead around a command.

Two stacks: the example stack (simon in Python, startup in Node.js, both with a health check)
and twenty trivial services (``python -m http.server $PORT``). Each round, alternating:

- on their own (the anchor): every service's command started directly and at once, as devstack
  starts them, with its ``PORT``; the time until every one is ready (its health path answers
  2xx, or its port accepts), then from SIGTERM to all until every one has exited;
- ``devstack run --port 0 -- sh -c 'date +%s.%N'``: from spawning ``devstack run`` until the
  command starts (the timestamp it prints; devstack starts it once every service is ready and
  the proxy serves), and from then until ``devstack run`` has exited
  (it stops the stack and returns once every process is gone).

devstack's start overhead is the first figure minus the services' own time to ready; its
teardown is the second. The first run in a fresh ``DEVSTACK_HOME`` makes the CA: a round that is
not counted does that first, as a user's machine has it already.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.contender import (
    PYTHON,
    devstack_argv,
    devstack_certificate,
    devstack_env,
    write_manifest,
)
from bench.edit import EXAMPLES, NOT_COPIED
from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.poll import wait_until
from bench.ports import free_ports, is_ready
from bench.report import Row, Table, format_rounds, value_at_most

logger = logging.getLogger(__name__)

START_SECONDS = 60.0
POLL_SECONDS = 0.002
START_LIMIT_MS = 100.0
TEARDOWN_LIMIT_MS = 200.0
TRIVIAL_SERVICES = 20
FLOOR_SCRIPT = Path(__file__).with_name("floor.py")
COMMAND = ["sh", "-c", "date +%s.%N; cat /proc/$PPID/task/*/schedstat 2>/dev/null"]
"""What ``devstack run`` runs: it prints when it started, then the CPU time devstack (its parent)
has used so far, per thread (Linux's ``schedstat``: nanoseconds on a CPU first), and ends."""


@dataclass(frozen=True)
class CiSettings:
    rounds: int


FULL = CiSettings(rounds=5)
QUICK = CiSettings(rounds=2)


@dataclass(frozen=True)
class Service:
    """One service as started directly: its command line (``$PORT`` expanded by a shell), its
    folder, and the path whose 2xx says it is ready (``None``: its port accepting)."""

    command: str
    cwd: Path
    health: str | None


@dataclass(frozen=True)
class Subject:
    name: str
    manifest: Path
    services: Mapping[str, Service]


@dataclass
class Figures:
    own_ready: list[float] = field(default_factory=list)
    own_stop: list[float] = field(default_factory=list)
    to_command: list[float] = field(default_factory=list)
    teardown: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """devstack's own CPU seconds until the command started (where ``/proc`` says)."""
    floor_to_command: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)
    """The same two for :mod:`bench.floor`, the least a Python orchestrator does."""

    @property
    def overheads(self) -> list[float]:
        """Each round's start overhead: to the command, minus that round's own time to ready."""
        return self._minus_own_ready(self.to_command)

    @property
    def floor_overheads(self) -> list[float]:
        return self._minus_own_ready(self.floor_to_command)

    def _minus_own_ready(self, to_command: list[float]) -> list[float]:
        return [ours - own for ours, own in zip(to_command, self.own_ready, strict=True)]


def example_stack(folder: Path) -> Subject:
    """A copy of ``examples/``: its manifest as it is, its services as the manifest runs them."""
    if shutil.which("node") is None:
        raise BenchError("node is not on PATH: the example stack's startup service needs it")
    copy = folder / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns(*NOT_COPIED, "tests"))
    return Subject("example stack", copy / "devstack.yaml", {
        "simon": Service(f"{shlex.quote(PYTHON)} server.py", copy / "simon", "/healthz"),
        "startup": Service("node server.js", copy / "startup", "/healthz"),
    })


def trivial_stack(folder: Path) -> Subject:
    command = f"{shlex.quote(PYTHON)} -m http.server $PORT --bind 127.0.0.1"
    services = {f"s{i:02d}": Service(command, folder, None) for i in range(1, TRIVIAL_SERVICES + 1)}
    manifest = write_manifest(folder, {"services": {
        name: {"command": service.command} for name, service in services.items()
    }})
    return Subject(f"{TRIVIAL_SERVICES} trivial services", manifest, services)


def on_their_own(launcher: Launcher, subject: Subject) -> tuple[float, float]:
    """Every service started directly and at once: seconds until all are ready, and from
    SIGTERM until all have exited."""
    ports = free_ports(len(subject.services))
    began = time.monotonic()
    started: list[tuple[Launched, int, Service]] = []
    try:
        for (name, service), port in zip(subject.services.items(), ports, strict=True):
            env = dict(os.environ, PORT=str(port), HOST="127.0.0.1")
            launched = launcher.start(name, ["sh", "-c", f"exec {service.command}"], env=env,
                                      cwd=service.cwd)
            started.append((launched, port, service))
        pending = list(started)

        def all_ready() -> bool:
            for entry in list(pending):
                launched, port, service = entry
                launched.check_running("starting")
                if is_ready(port, service.health):
                    pending.remove(entry)
            return not pending

        wait_until(all_ready, timeout=START_SECONDS, interval=POLL_SECONDS,
                   message=f"{subject.name}'s services, started directly, to be ready")
        ready = time.monotonic() - began
        stopping = time.monotonic()
        for launched, _, _ in started:
            launched.interrupt(signal.SIGTERM)
        wait_until(lambda: all(launched.has_exited for launched, _, _ in started),
                   timeout=START_SECONDS, interval=POLL_SECONDS,
                   message=f"{subject.name}'s services to exit after SIGTERM")
        return ready, time.monotonic() - stopping
    finally:
        for launched, _, _ in started:
            launcher.stop(launched)


def through_run(
    launcher: Launcher, subject: Subject, home: Path
) -> tuple[float, float, float | None]:
    """``devstack run`` with :data:`COMMAND`: seconds from its spawn until the command started,
    from then until ``devstack run`` exited, and devstack's CPU seconds until the command
    started (``None`` without ``/proc``)."""
    argv = devstack_argv("run", "--port", "0", "-f", str(subject.manifest), "--", *COMMAND)
    began = time.time()
    output = run_to_end(launcher, "devstack run", subject, argv, env=devstack_env(home),
                        cwd=subject.manifest.parent)  # fmt: skip
    ended = time.time()
    to_command, cpu = command_figures(output, began, subject)
    return to_command, ended - (began + to_command), cpu


def through_floor(
    launcher: Launcher, subject: Subject, home: Path, folder: Path
) -> tuple[float, float | None]:
    """:mod:`bench.floor` with :data:`COMMAND` on the subject's services (on free ports): seconds
    from its spawn until the command started, and its CPU seconds until then."""
    ports = free_ports(len(subject.services))
    plan = [{"command": service.command, "cwd": str(service.cwd), "port": port,
             "health": service.health}
            for service, port in zip(subject.services.values(), ports, strict=True)]  # fmt: skip
    plan_file = folder / "floor-plan.json"
    plan_file.write_text(json.dumps(plan))
    argv = [PYTHON, str(FLOOR_SCRIPT), str(subject.manifest), str(plan_file),
            str(devstack_certificate(home)), "--", *COMMAND]  # fmt: skip
    began = time.time()
    output = run_to_end(launcher, "the floor", subject, argv, env=dict(os.environ), cwd=folder)
    return command_figures(output, began, subject)


def run_to_end(launcher: Launcher, what: str, subject: Subject, argv: list[str], *,
               env: dict[str, str], cwd: Path) -> str:  # fmt: skip
    """Run ``argv`` until it exits (it must succeed) and return its output."""
    launched = launcher.start(what.replace(" ", "-"), argv, env=env, cwd=cwd)
    try:
        wait_until(lambda: launched.has_exited, timeout=START_SECONDS, interval=POLL_SECONDS,
                   message=f"{what} on {subject.name} to exit")
    finally:
        launcher.stop(launched)
    if launched.popen.returncode != 0:
        raise BenchError(f"{what} on {subject.name} exited {launched.popen.returncode}:\n"
                         f"{launched.tail()}")
    return launched.output()


def command_figures(output: str, began: float, subject: Subject) -> tuple[float, float | None]:
    """From :data:`COMMAND`'s output: seconds from ``began`` until it started, and its parent's
    CPU seconds until then (``None`` without ``/proc``)."""
    stamps = [line for line in output.splitlines() if line.replace(".", "", 1).isdigit()]
    if not stamps:
        raise BenchError(f"the command on {subject.name} printed no timestamp:\n{output[-2000:]}")
    threads = [line.split() for line in output.splitlines()]
    cpu_ns = [int(f[0]) for f in threads if len(f) == 3 and all(x.isdigit() for x in f)]
    return float(stamps[-1]) - began, sum(cpu_ns) / 1e9 if cpu_ns else None


def measure(launcher: Launcher, subject: Subject, home: Path, rounds: int) -> Figures:
    through_run(launcher, subject, home)  # not counted: the CA is made, the files cached
    found = Figures()

    def ours() -> str:
        to_command, teardown, cpu = through_run(launcher, subject, home)
        found.to_command.append(to_command)
        found.teardown.append(teardown)
        used = ""
        if cpu is not None:
            found.cpu.append(cpu)
            used = f" (devstack's CPU until then {1000 * cpu:.0f} ms)"
        return f"devstack run: command after {1000 * to_command:.0f} ms{used}, " \
               f"torn down in {1000 * teardown:.0f} ms"

    def floor() -> str:
        to_command, cpu = through_floor(launcher, subject, home, subject.manifest.parent)
        found.floor_to_command.append(to_command)
        used = ""
        if cpu is not None:
            found.floor_cpu.append(cpu)
            used = f" (its CPU until then {1000 * cpu:.0f} ms)"
        return f"the floor: command after {1000 * to_command:.0f} ms{used}"

    def theirs() -> str:
        ready, stop = on_their_own(launcher, subject)
        found.own_ready.append(ready)
        found.own_stop.append(stop)
        return f"on their own: ready in {1000 * ready:.0f} ms, stopped in {1000 * stop:.0f} ms"

    steps: list[Callable[[], str]] = [ours, theirs, floor]
    for number in range(rounds):
        for step in steps if number % 2 == 0 else reversed(steps):
            logger.info("ci %s round %d/%d %s", subject.name, number + 1, rounds, step())
    return found


def run(launcher: Launcher, folder: Path, settings: CiSettings) -> Table:
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "devstack-home"
    figures = {}
    for subject in (example_stack(folder / "examples"), trivial_stack(folder / "trivial")):
        figures[subject.name] = measure(launcher, subject, home, settings.rounds)
    return tabulate(figures, settings)


def tabulate(figures: Mapping[str, Figures], settings: CiSettings) -> Table:
    table = Table(
        f"devstack run -- CMD: devstack's own time around a command (medians of "
        f"{settings.rounds} rounds)",
        anchor="services alone",
    )
    for name, found in figures.items():
        own_ready = 1000 * statistics.median(found.own_ready)
        own_stop = 1000 * statistics.median(found.own_stop)
        table.add(Row(f"{name}: spawn of `devstack run` to CMD's start",
                      1000 * statistics.median(found.to_command), own_ready, "ms"))
        table.add(Row(f"{name}: start overhead (the above minus the services' own ready)",
                      1000 * statistics.median(found.overheads), None, "ms",
                      value_at_most(START_LIMIT_MS)))
        if found.cpu:
            table.add(Row(f"{name}: devstack's own CPU until CMD starts (every thread)",
                          1000 * statistics.median(found.cpu), None, "ms"))
        if found.floor_to_command:
            table.add(Row(f"{name}: the floor's start overhead (a bare Python orchestrator)",
                          1000 * statistics.median(found.floor_overheads), None, "ms"))
        if found.floor_cpu:
            table.add(Row(f"{name}: the floor's CPU until CMD starts",
                          1000 * statistics.median(found.floor_cpu), None, "ms"))
        table.add(Row(f"{name}: teardown, CMD's end to every process gone",
                      1000 * statistics.median(found.teardown), own_stop, "ms",
                      value_at_most(TEARDOWN_LIMIT_MS)))
        table.note(
            f"{name}: on their own, all ready in "
            f"{format_rounds([1000 * s for s in found.own_ready], 'ms')}, all exited after "
            f"SIGTERM in {format_rounds([1000 * s for s in found.own_stop], 'ms')}; devstack run "
            f"to CMD {format_rounds([1000 * s for s in found.to_command], 'ms')}, teardown "
            f"{format_rounds([1000 * s for s in found.teardown], 'ms')}; the floor to CMD "
            f"{format_rounds([1000 * s for s in found.floor_to_command], 'ms')}"
        )
    table.note(
        "CMD is `sh -c 'date +%s.%N; cat /proc/$PPID/task/*/schedstat'` (it prints when it "
        "started, then devstack's CPU time so far); the services alone are "
        "started at once with their PORT and polled every 2 ms (health path, else the port); "
        "the floor (bench/floor.py) reads the manifest with PyYAML, spawns the services, "
        "listens with TLS on uvloop and polls them every 2 ms, nothing more: what any Python "
        "orchestrator pays at least; "
        f"targets: start overhead <= {START_LIMIT_MS:.0f} ms, teardown <= "
        f"{TEARDOWN_LIMIT_MS:.0f} ms"
    )
    return table
