"""Section C: hot reload, devstack against what a user would otherwise assemble: the same service
restarted by watchfiles' own CLI (``watchfiles --filter python 'python server.py' DIR``) behind
Caddy (``reverse_proxy``, ``tls internal``).

For each subject (the bench's hello service, then the simon example; see :mod:`bench.edit`),
each contender runs its own copy of the service's files, and all three run at once: devstack
with the default ``reload: restart``, devstack with ``reload: blue-green``, and the baseline (see
:mod:`bench.stack` for the contenders and how one edit is measured):

- own start and stop: the service started directly (``PORT=P python server.py``), from spawn
  until it is ready as devstack judges it (its health path answers 2xx, else its port accepts),
  and from SIGTERM until it exited, once a round, alternating with the
  edits (so the target's anchor is measured in the same conditions);
- edit to new response: a real save of the service's source (atomic replace and in-place write
  alternating), then a keep-alive HTTPS client through the proxy asks every 5 ms until the answer
  carries the edit's token; the contenders alternate edit by edit, the order rotating;
- failed requests under load (hello only): ``wrk`` puts a steady, paced load on the proxy while
  the service is reloaded by edits; every non-2xx/3xx answer and socket error counts.

Then idle CPU: devstack watching a service whose folder holds 10,000 files, and watchfiles' CLI
watching the same tree, side by side over the same window (CPU time from schedstat, nanosecond
steps); then one edit there, to show that the tree is really watched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import procfs
from bench.contender import start_watchfiles
from bench.edit import HELLO, SIMON, Subject
from bench.launcher import Launcher
from bench.load import PacedWrk, WrkResult
from bench.poll import wait_until
from bench.ports import free_port, is_ready
from bench.report import (
    Row,
    Table,
    format_rounds,
    percentile,
    value_at_most,
    value_below,
)
from bench.stack import (
    BASELINE,
    DEVSTACK,
    DEVSTACK_BLUE_GREEN,
    START_SECONDS,
    WATCHED,
    Reload,
    Stack,
    baseline_stack,
    devstack_stack,
    edit_and_wait,
)

logger = logging.getLogger(__name__)

SLACK_SECONDS = 0.050
"""The target: a median edit-to-new-response within the service's own start time plus this."""
IDLE_CPU_LIMIT_PERCENT = 0.5
SETTLE_SECONDS = 1.0
"""Quiet time before the idle window once both are up, for the watchers' initial scans."""
LOAD_CONNECTIONS = 4
LOAD_PAUSE_MS = 10
"""Each wrk connection waits this long between an answer and its next request: a steady load
(a few hundred requests a second) that keeps requests in flight through every reload without
taking the machine from the reloads it measures."""
LOAD_LEAD_SECONDS = 0.5
"""How long wrk runs before the first edit of a block."""
LOAD_BLOCK = 5
"""Reloads under one wrk run; the contenders alternate block by block."""
TREE_FANOUT = 100
"""The idle tree: this many folders of files (10,000 files: 100 folders of 100)."""


@dataclass(frozen=True)
class ReloadSettings:
    edits: int
    """Edits per subject and contender for edit-to-new-response."""
    reloads_under_load: int
    idle_seconds: float
    files: int = 10_000


FULL = ReloadSettings(edits=20, reloads_under_load=20, idle_seconds=5.0)
QUICK = ReloadSettings(edits=5, reloads_under_load=5, idle_seconds=2.0)


@dataclass
class SubjectFigures:
    own_starts: list[float] = field(default_factory=list)
    own_stops: list[float] = field(default_factory=list)
    """Seconds from SIGTERM until it exited, started directly (a reload waits for this too)."""
    reloads: dict[str, list[Reload]] = field(default_factory=dict)
    under_load: dict[str, list[WrkResult]] = field(default_factory=dict)
    """wrk's reports by contender, one per block of reloads."""
    polled_under_load: dict[str, int] = field(default_factory=dict)

    @property
    def own_start(self) -> float:
        return statistics.median(self.own_starts)


@dataclass(frozen=True)
class Idle:
    seconds: float
    cpu_seconds: dict[str, float]
    edit_seconds: float
    """One edit to new response through devstack with the large tree watched."""


def run(launcher: Launcher, folder: Path, settings: ReloadSettings) -> Table:
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "devstack-home"
    wrk = PacedWrk(folder, pause_ms=LOAD_PAUSE_MS)
    figures: dict[str, SubjectFigures] = {}
    for subject in (HELLO, SIMON):
        where = folder / subject.name
        with contextlib.ExitStack() as running:
            ours = running.enter_context(devstack_stack(
                launcher, where / DEVSTACK, home, subject, subject.install(where / "ours"),
                watch=WATCHED,
            ))
            blue_green = running.enter_context(devstack_stack(
                launcher, where / "blue-green", home, subject,
                subject.install(where / "ours-blue-green"), watch=WATCHED, blue_green=True,
            ))
            theirs = running.enter_context(baseline_stack(
                launcher, where / "baseline", subject, subject.install(where / "theirs")
            ))
            direct = subject.install(where / "direct")
            found = edit_alternately(
                (ours, blue_green, theirs), subject, settings.edits,
                functools.partial(own_lifecycle, launcher, direct, subject),
            )
            if subject is HELLO:
                under_load(launcher, (ours, blue_green, theirs), subject, wrk, settings, found)
        figures[subject.name] = found
    idle = measure_idle(launcher, folder / "idle", home, settings)
    return tabulate(figures, idle, settings)


def own_lifecycle(launcher: Launcher, service_dir: Path, subject: Subject) -> tuple[float, float]:
    """The service started directly, on its own: seconds from spawn until it is ready as its
    manifest says (its health path answers 2xx, else its port accepts), and from SIGTERM until
    it has exited."""
    port = free_port()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    began = time.monotonic()
    launched = launcher.start(subject.name, subject.argv, env=env, cwd=service_dir)

    def ready() -> bool:
        launched.check_running("starting")
        return is_ready(port, subject.health)

    try:
        wait_until(ready, timeout=START_SECONDS, interval=0.002,
                   message=f"{subject.name} to be ready on {port}")
        started = time.monotonic() - began
        stopping = time.monotonic()
        launched.interrupt(signal.SIGTERM)
        wait_until(lambda: launched.has_exited, timeout=START_SECONDS, interval=0.002,
                   message=f"{subject.name} to exit after SIGTERM")
        return started, time.monotonic() - stopping
    finally:
        launcher.stop(launched)


def edit_alternately(stacks: Sequence[Stack], subject: Subject, edits: int,
                     own: Callable[[], tuple[float, float]]) -> SubjectFigures:
    """``edits`` rounds of one edit of each stack's copy and one start and stop of the service
    on its own (``own``), the order rotating from round to round."""
    found = SubjectFigures()
    steps: list[Callable[[], str]] = []
    for stack in stacks:
        def edit(stack: Stack = stack) -> str:
            reload = edit_and_wait(stack, subject)
            found.reloads.setdefault(stack.name, []).append(reload)
            return f"{stack.name:<16} {1000 * reload.seconds:.0f} ms"
        steps.append(edit)

    def alone() -> str:
        started, stopped = own()
        found.own_starts.append(started)
        found.own_stops.append(stopped)
        return f"{'on its own':<16} start {1000 * started:.0f} ms, stop {1000 * stopped:.0f} ms"

    steps.append(alone)
    for number in range(edits):
        shift = number % len(steps)
        for step in [*steps[shift:], *steps[:shift]]:
            logger.info("reload %s round %d/%d %s", subject.name, number + 1, edits, step())
    return found


def under_load(launcher: Launcher, stacks: Sequence[Stack], subject: Subject, wrk: PacedWrk,
               settings: ReloadSettings, figures: SubjectFigures) -> None:
    """Reloads with wrk's paced load through each proxy, in blocks of :data:`LOAD_BLOCK`, the
    contenders alternating block by block."""
    blocks = math.ceil(settings.reloads_under_load / LOAD_BLOCK)
    done = {stack.name: 0 for stack in stacks}
    for block in range(blocks):
        shift = block % len(stacks)
        for stack in [*stacks[shift:], *stacks[:shift]]:
            count = min(LOAD_BLOCK, settings.reloads_under_load - done[stack.name])
            running = wrk.start(launcher, stack.door.url, connections=LOAD_CONNECTIONS)
            try:
                # The method, not a wait for something: the load runs a moment before the
                # first edit, so every reload lands on requests in flight.
                time.sleep(LOAD_LEAD_SECONDS)
                polled = sum(edit_and_wait(stack, subject).failures for _ in range(count))
            finally:
                result = wrk.finish(running)
                launcher.stop(running)
            done[stack.name] += count
            figures.under_load.setdefault(stack.name, []).append(result)
            figures.polled_under_load[stack.name] = (
                figures.polled_under_load.get(stack.name, 0) + polled
            )
            logger.info("reload under load block %d/%d %-16s %d reloads, %d requests, %d failed",
                        block + 1, blocks, stack.name, count, result.requests,
                        result.socket_errors + result.bad_status)


def make_tree(root: Path, files: int) -> None:
    """``files`` small files in folders of :data:`TREE_FANOUT`, as a source tree might hold."""
    for index in range(files):
        folder = root / f"pkg{index // TREE_FANOUT:03d}"
        if index % TREE_FANOUT == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module{index % TREE_FANOUT:03d}.py").write_text(f"VALUE = {index}\n")


def measure_idle(launcher: Launcher, folder: Path, home: Path, settings: ReloadSettings) -> Idle:
    """devstack (watching everything under its service's folder, the default) and watchfiles'
    CLI on the same folder of ``settings.files`` files, their CPU over the same quiet window;
    then one edit through devstack, to show the tree is really watched."""
    service_dir = HELLO.install(folder / "src")
    make_tree(service_dir / "tree", settings.files)
    with devstack_stack(launcher, folder, home, HELLO, service_dir) as ours:
        watcher = start_watchfiles(launcher, HELLO.command, service_dir, free_port())
        try:
            time.sleep(SETTLE_SECONDS)  # part of the method: the window starts after a quiet second
            watched = {DEVSTACK: ours.programs[0].pid, BASELINE: watcher.pid}
            before = {name: procfs.run_seconds(pid) for name, pid in watched.items()}
            began = time.monotonic()
            time.sleep(settings.idle_seconds)  # the measurement window itself
            cpu = {name: procfs.run_seconds(pid) - before[name] for name, pid in watched.items()}
            seconds = time.monotonic() - began
        finally:
            launcher.stop(watcher)
        logger.info("reload idle over %.1f s with %d files: %s", seconds, settings.files,
                    ", ".join(f"{n} {100 * c / seconds:.2f} %" for n, c in cpu.items()))
        edit = edit_and_wait(ours, HELLO)
    return Idle(seconds, cpu, edit.seconds)


def tabulate(figures: dict[str, SubjectFigures], idle: Idle, settings: ReloadSettings) -> Table:
    table = Table(
        f"Hot reload: devstack vs watchfiles' CLI + Caddy ({settings.edits} edits per service "
        "and contender, alternated)",
        anchor=BASELINE,
    )
    for name, found in figures.items():
        theirs = [1000 * r.seconds for r in found.reloads[BASELINE]]
        start_ms = 1000 * found.own_start
        stop_ms = 1000 * statistics.median(found.own_stops)
        for mode, limit in ((DEVSTACK_BLUE_GREEN, start_ms), (DEVSTACK, stop_ms + start_ms)):
            ours = [1000 * r.seconds for r in found.reloads[mode]]
            label = "blue-green" if mode == DEVSTACK_BLUE_GREEN else "restart (the default)"
            table.add(Row(f"{name}, {label}: edit to new response, median",
                          statistics.median(ours), statistics.median(theirs), "ms",
                          value_at_most(limit + 1000 * SLACK_SECONDS)))
            table.add(Row(f"{name}, {label}: edit to new response, p95", percentile(ours, 95),
                          percentile(theirs, 95), "ms"))
            table.add(Row(f"{name}, {label}: edit to new process spawned, median",
                          _median_ms(found.reloads[mode], "spawned_seconds"),
                          _median_ms(found.reloads[BASELINE], "spawned_seconds"), "ms"))
        failed = {n: sum(r.failures for r in rs) for n, rs in found.reloads.items()}
        table.note(
            f"{name} on its own (no proxy): spawn to ready {start_ms:.0f} ms, "
            f"median of {format_rounds([1000 * s for s in found.own_starts], 'ms')}; "
            f"SIGTERM to exit {1000 * statistics.median(found.own_stops):.0f} ms (median); "
            "polls not answered 2xx during the edits: "
            + ", ".join(f"{n} {count}" for n, count in failed.items())
        )
        table.note(f"{name} reload phases, medians from the save: " + "; ".join(
            f"{n}: old process gone {_shown(_median_ms(rs, 'gone_seconds'))}, new one spawned "
            f"{_shown(_median_ms(rs, 'spawned_seconds'))}, new answer "
            f"{_shown(_median_ms(rs, 'seconds'))}"
            for n, rs in found.reloads.items()
        ))
    for name, found in figures.items():
        if not found.under_load:
            continue
        reloads = settings.reloads_under_load
        results = found.under_load
        for mode in (DEVSTACK, DEVSTACK_BLUE_GREEN):
            table.add(Row(
                f"{name}: failed requests during {reloads} reloads under load ({mode})",
                _failed(results[mode]), _failed(results[BASELINE]), "requests",
                value_at_most(0),
            ))
        table.note(
            f"load: wrk -t1 -c{LOAD_CONNECTIONS}, {LOAD_PAUSE_MS} ms between an answer and the "
            "next request; " + "; ".join(
                f"{n}: {sum(r.requests for r in rs):,} requests, "
                f"{sum(r.bad_status for r in rs)} not 2xx/3xx, "
                f"{sum(r.socket_errors for r in rs)} socket errors, "
                f"{found.polled_under_load.get(n, 0)} failed polls"
                for n, rs in results.items()
            )
        )
    table.add(Row(
        f"idle CPU watching {settings.files:,} files (devstack process; watchfiles' CLI)",
        100 * idle.cpu_seconds[DEVSTACK] / idle.seconds,
        100 * idle.cpu_seconds[BASELINE] / idle.seconds, "%", value_below(IDLE_CPU_LIMIT_PERCENT),
    ))
    table.note(
        f"idle window {idle.seconds:.1f} s after a {SETTLE_SECONDS:g} s settle; then one edit "
        f"with the {settings.files:,} files watched: new response through devstack in "
        f"{1000 * idle.edit_seconds:.0f} ms"
    )
    table.note(
        "edits alternate an atomic replace (sibling renamed over the file) and an in-place "
        f"write; targets: median <= own start + {1000 * SLACK_SECONDS:.0f} ms with blue-green "
        "(the new process starts while the old one serves); with restart, which stops the old "
        "process before the new one may take its port, own stop + own start "
        f"+ {1000 * SLACK_SECONDS:.0f} ms; zero failed requests, idle CPU < "
        f"{IDLE_CPU_LIMIT_PERCENT:g} % of one core"
    )
    return table


def _median_ms(reloads: Sequence[Reload], phase: str) -> float | None:
    """The median of one phase of ``reloads`` (a :class:`Reload` field), in ms."""
    seen = [1000 * v for v in (getattr(r, phase) for r in reloads) if v is not None]
    return statistics.median(seen) if seen else None


def _shown(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f} ms"


def _failed(results: Sequence[WrkResult]) -> int:
    return sum(r.socket_errors + r.bad_status for r in results)
