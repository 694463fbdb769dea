"""``python -m bench --profile``: where devstack's proxy spends its time under load.

Starts the proxy section's python-service stack, puts ``wrk -t1 -c50`` on devstack's HTTPS port
and samples the devstack process with py-spy (``pip install py-spy``) meanwhile. Prints the
functions with the most samples of their own (where the CPU is spent) and the most samples
including their callees (which part of the request path costs what), in % of all samples.
The raw collapsed stacks are kept when ``--profile-output FILE`` is given, for a flame graph.
"""

from __future__ import annotations

import collections
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench import load, proxy
from bench.errors import BenchError
from bench.launcher import Launcher
from bench.poll import wait_until

logger = logging.getLogger(__name__)

SAMPLES_PER_SECOND = 250
TOP = 25
Ranking = list[tuple[str, int]]
"""Frames with their sample counts, most first."""
_STARTUP = re.compile(
    r"<frozen runpy>|devstack/(__main__|cli|commands)\.py|^run \(devstack/app\.py"
    r"|^Runner\.run \(asyncio/runners\.py"
)
"""Frames every synchronous stack passes through on its way to the event loop."""
_LINE = re.compile(r":\d+\)$")
"""A frame's line number: samples are counted per function, all its lines together."""


@dataclass(frozen=True)
class Profile:
    samples: int
    own: Ranking
    inclusive: Ranking
    requests_per_second: float

    def render(self) -> str:
        lines = [
            "## Profile: devstack's proxy under wrk -t1 -c50, in front of the python service",
            "",
            f"{self.samples} samples at {SAMPLES_PER_SECOND}/s while serving "
            f"{self.requests_per_second:,.0f} req/s",
            "",
            "own samples (where the CPU is spent):",
        ]
        lines += [f"  {100 * n / self.samples:5.1f}%  {frame}" for frame, n in self.own]
        lines += ["", "including callees (what each step of a request costs):"]
        lines += [f"  {100 * n / self.samples:5.1f}%  {frame}" for frame, n in self.inclusive]
        return "\n".join(lines)


def parse_collapsed(text: str, top: int = TOP) -> tuple[int, Ranking, Ranking]:
    """py-spy's ``--format raw`` (one ``frame;frame;... count`` line per stack) -> the total
    and the ``top`` frames by own and by inclusive samples. The frames between the interpreter's
    start and the event loop (runpy, ``main``, ``Runner.run``) are left out of the inclusive
    list: they say nothing about a request."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    ranked = [(f, n) for f, n in inclusive.most_common() if not _STARTUP.search(f)][:top]
    return total, own.most_common(top), ranked


def run(launcher: Launcher, folder: Path, seconds: int, output: Path | None) -> Profile:
    if shutil.which("py-spy") is None:
        raise BenchError("py-spy is not installed; pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    wrk = load.Wrk(folder)
    raw = output or folder / "profile.txt"
    upstream = proxy.PYTHON_UPSTREAM
    with proxy.running(launcher, folder / "stack", folder / "devstack-home", upstream, 0) as stack:
        door = stack.doors[0]
        wrk.run(door.url, connections=proxy.CONNECTIONS, seconds=1)
        argv = [
            "py-spy", "record", "--pid", str(stack.devstack.pid), "--duration", str(seconds),
            "--rate", str(SAMPLES_PER_SECOND), "--format", "raw", "--output", str(raw),
            "--nonblocking",
        ]
        spy = launcher.start("py-spy", argv)
        result = wrk.run(door.url, connections=proxy.CONNECTIONS, seconds=seconds)
        wait_until(
            lambda: spy.has_exited, timeout=seconds + 30, message="py-spy to write its profile"
        )
        if spy.popen.returncode != 0 or not raw.is_file():
            raise BenchError(f"py-spy failed (exit {spy.popen.returncode}):\n{spy.tail()}")
    total, own, inclusive = parse_collapsed(raw.read_text())
    if total == 0:
        raise BenchError(f"py-spy recorded no samples of devstack; its output:\n{spy.tail()}")
    return Profile(total, own, inclusive, result.requests_per_second)
