"""Section: the soak. Minutes of mixed traffic through devstack's proxy while one service is
edited, restarted and killed at random; at the end, what must hold: nothing failed on the service
left alone, devstack holds no more descriptors or memory than a small bound over what it held
once warm, and no process of the stack outlives ``devstack up``.

``devstack up --port 0`` runs (watching files, as users run it) on a generated manifest with two
services, each a copy of ``bench/soak_service.py`` in its own folder: ``steady``, left alone, and
``target``, faulted. Routes ``/steady`` and ``/target`` lead to them. The bench's client (aiohttp,
over HTTPS verified against devstack's CA) keeps :data:`CLIENTS` requests in flight, each one
picked at random: a plain GET (twice as likely), a 256 KiB upload whose SHA-256 is echoed, a
server-sent event stream of five events, a websocket echoing three messages; to either service.

Meanwhile, after a random pause (:data:`PAUSE_SECONDS`, seeded, the seed printed), the target
gets one of three faults: a real save of its source (``reload``, atomic replace and in-place
write alternating), ``devstack restart target`` (the control socket), or SIGKILL of its process
(its pid from ``devstack status --json``). After each one the bench waits, asking ``devstack
status --json``, until the target is ready again with a new pid; that interval is the fault's.

A failed request to the target is *in flight during a fault* when it overlapped a fault's
interval (from the fault until :data:`GRACE_SECONDS` after the target was back): streams are
ended on purpose when their process goes (browsers reconnect), and a kill loses what was in
flight. Every other failure is counted apart.

devstack's file descriptors (``/proc/PID/fd``) and ``VmRSS`` are sampled once warm (after a
warm-up: calm traffic, one fault of each kind, calm traffic; then the client closed and a quiet
second) and again the same way after a calm phase that follows the faults, and six times during
the faults (traffic on), to show whether a growth levels off. Its asyncio tasks cannot be seen
from outside; the in-process pytest soak (``tests/reliability/test_soak.py``) checks those.
devstack and everything it starts carry a token in their environment; after SIGINT to devstack
and its exit, any live process carrying it is one left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import procfs
from bench.contender import (
    PROXY_LINE,
    PYTHON,
    UP_LINE,
    devstack_argv,
    devstack_ca,
    devstack_env,
    write_manifest,
)
from bench.edit import save
from bench.errors import BenchError
from bench.launcher import Launched, Launcher
from bench.poll import wait_until
from bench.report import Row, Table, value_at_most

logger = logging.getLogger(__name__)

SERVICE_SCRIPT = Path(__file__).resolve().parent / "soak_service.py"
STEADY = "steady"
TARGET = "target"
SERVICES = (STEADY, TARGET)
KINDS = ("get", "get", "upload", "events", "ws")
"""What each request is, drawn at random: plain GETs twice as often as the others."""
KIND_NAMES = ("get", "upload", "events", "ws")
FAULTS = ("edit", "restart", "kill")
CLIENTS = 8
"""Requests in flight at once: enough to keep every kind going through every fault, few enough
that the bench's own client does not take the 2-core machine from devstack."""
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
EVENTS = 5
WS_MESSAGES = 3
REQUEST_SECONDS = 30.0
"""Deadline of one request (a stream included); past it the request counts as failed."""
PAUSE_SECONDS = (1.0, 4.0)
"""Between a fault's end (the target ready again) and the next fault: at least a second, so an
edit is never taken for the service writing into its own watch set (devstack's loop detector)."""
GRACE_SECONDS = 1.0
"""How long after the target is back a failure still counts as the fault's."""
SETTLE_SECONDS = 60.0
"""Deadline for the target to be ready again, with a new process, after a fault."""
KILL_STREAK = 3
HEALTHY_SECONDS = 10.5
"""A process killed within devstack's ``healthy_seconds`` (10 s) of its start is a crash in a
row, and after five devstack gives up on the service. At most :data:`KILL_STREAK` kills in a row
(fewer than ten seconds apart, no edit between): a drawn kill beyond that becomes an edit, which
forgives earlier crashes."""
CLI_SECONDS = 30.0
START_SECONDS = 60.0
STOP_SECONDS = 20.0
QUIET_SECONDS = 1.0
"""Between closing the client and sampling devstack's descriptors and memory."""
LEFT_GRACE_SECONDS = 1.0
"""After devstack exited, how long its stack's processes get to be gone (a last signal's
delivery); what still lives then was left behind."""
FD_BOUND = 16
TRACE_PARTS = 6
RSS_BOUND_MB = 20.0
EDIT_LINE = re.compile(r'^EDIT = ".*"$', re.MULTILINE)
TOKEN_VARIABLE = "DEVSTACK_BENCH_SOAK"


@dataclass(frozen=True)
class SoakSettings:
    seconds: float
    """How long the faults go on (traffic runs throughout)."""
    calm_seconds: float
    """Traffic without faults before the warm sample and again before the last one."""


FULL = SoakSettings(seconds=120.0, calm_seconds=5.0)
QUICK = SoakSettings(seconds=30.0, calm_seconds=3.0)


@dataclass(frozen=True)
class Failure:
    service: str
    kind: str
    started: float
    ended: float
    error: str


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    settled: float
    """When the target was seen ready again with a new process."""


@dataclass(frozen=True)
class Sample:
    fds: int
    rss_mb: float


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    """Requests that succeeded, by ``"service kind"``."""
    failures: list[Failure] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    recoveries: int = 0
    """Times the target was found given up on and restarted (should stay 0)."""

    def record(self, service: str, kind: str, started: float, error: str | None) -> None:
        if error is None:
            self.ok[f"{service} {kind}"] += 1
        else:
            self.failures.append(Failure(service, kind, started, time.monotonic(), error))


@dataclass(frozen=True)
class SoakResult:
    seed: int
    seconds: float
    """How long the faults went on."""
    total_seconds: float
    """From the first request to the last."""
    tally: Tally
    warm: Sample
    end: Sample
    left: tuple[str, ...]
    """Processes of the stack alive after devstack exited: ``"PID command"``."""
    trace: tuple[Sample, ...] = ()
    """devstack's descriptors and memory every :data:`TRACE_PARTS`-th of the faults' time, with
    traffic on: whether a growth levels off or goes on."""
    warm_up_faults: int = 0
    """Faults before the warm sample (one of each kind), included in the tally's."""


def fault_of(failure: Failure, faults: Sequence[Fault], grace: float = GRACE_SECONDS
             ) -> Fault | None:
    """The first fault ``failure`` overlapped (from the fault until ``grace`` seconds after the
    target was back), or ``None``."""
    return next((fault for fault in faults
                 if fault.at <= failure.ended and failure.started <= fault.settled + grace), None)


def during_fault(failure: Failure, faults: Sequence[Fault], grace: float = GRACE_SECONDS) -> bool:
    """Whether ``failure`` overlapped a fault."""
    return fault_of(failure, faults, grace) is not None


def classify(
    failures: Sequence[Failure], faults: Sequence[Fault], grace: float = GRACE_SECONDS
) -> dict[str, list[Failure]]:
    """Failures on the steady service; on the target during a fault; on the target otherwise."""
    found: dict[str, list[Failure]] = {"steady": [], "fault": [], "other": []}
    for failure in failures:
        if failure.service != TARGET:
            found["steady"].append(failure)
        elif during_fault(failure, faults, grace):
            found["fault"].append(failure)
        else:
            found["other"].append(failure)
    return found


def _by_kind(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} {counts[kind]:,}" for kind in KIND_NAMES)


def tabulate(result: SoakResult) -> Table:
    tally = result.tally
    classes = classify(tally.failures, tally.faults)
    table = Table(
        f"Soak: mixed traffic through the proxy while a service is edited, restarted and "
        f"killed ({result.seconds:.0f} s of faults)",
        anchor="bound",
    )
    requests = sum(tally.ok.values()) + len(tally.failures)
    table.add(Row("requests, both services (all kinds)", requests, None, "requests"))
    table.add(Row("steady: failed requests", len(classes["steady"]), None, "requests",
                  value_at_most(0)))
    table.add(Row("target: failed, in flight during a fault", len(classes["fault"]), None,
                  "requests"))
    table.add(Row("target: failed, outside any fault", len(classes["other"]), None, "requests"))
    table.add(Row("devstack file descriptors, growth warm -> end",
                  result.end.fds - result.warm.fds, None, "fds", value_at_most(FD_BOUND)))
    table.add(Row("devstack RSS, growth warm -> end", result.end.rss_mb - result.warm.rss_mb,
                  None, "MB", value_at_most(RSS_BOUND_MB)))
    table.add(Row("processes of the stack left after devstack stopped", len(result.left), None,
                  "processes", value_at_most(0)))
    for service in SERVICES:
        ok = Counter({k.split(" ", 1)[1]: n for k, n in tally.ok.items()
                      if k.startswith(f"{service} ")})
        failed = Counter(f.kind for f in tally.failures if f.service == service)
        table.note(f"{service}: ok {_by_kind(ok)}; failed {_by_kind(failed)}")
    for fault_kind in FAULTS:
        cut = Counter(f.kind for f in classes["fault"]
                      if (fault := fault_of(f, tally.faults)) and fault.kind == fault_kind)
        if cut:
            article = "an" if fault_kind == "edit" else "a"
            table.note(f"target, failed during {article} {fault_kind}: {_by_kind(cut)}")
    if classes["other"]:
        table.note(f"target, failed outside any fault: "
                   f"{_by_kind(Counter(f.kind for f in classes['other']))}")
    faults = Counter(fault.kind for fault in tally.faults)
    back = sorted(fault.settled - fault.at for fault in tally.faults)
    back_text = (f"; target back (ready, new pid) {back[len(back) // 2]:.2f} s after a fault "
                 f"(median), at most {back[-1]:.2f} s") if back else ""
    table.note(
        f"faults: {', '.join(f'{kind} {faults[kind]}' for kind in FAULTS)}"
        f"{f' ({result.warm_up_faults} in the warm-up)' if result.warm_up_faults else ''}"
        f"{back_text}; recoveries from a given-up target: {tally.recoveries}"
    )
    table.note(
        f"seed {result.seed} (`--soak-seed {result.seed}` replays the draws, not the timing); "
        f"{result.seconds:.0f} s of faults, {result.total_seconds:.0f} s of traffic, "
        f"{CLIENTS} requests in flight"
    )
    table.note(
        f"devstack: {result.warm.fds} -> {result.end.fds} fds, {result.warm.rss_mb:.1f} -> "
        f"{result.end.rss_mb:.1f} MB RSS (warm: after traffic and one fault of each kind; end: "
        f"after the faults; each after calm traffic and the client closed); bounds "
        f"+{FD_BOUND} fds, +{RSS_BOUND_MB:g} MB. Its asyncio tasks are not visible from "
        "outside: the in-process pytest soak (tests/reliability/test_soak.py, -m soak) bounds "
        "them"
    )
    if result.trace:
        table.note(
            f"devstack during the faults, {len(result.trace)} samples evenly spaced (traffic "
            f"on): {' / '.join(str(s.fds) for s in result.trace)} fds, "
            f"{' / '.join(f'{s.rss_mb:.0f}' for s in result.trace)} MB RSS"
        )
    if result.left:
        table.note(f"left behind: {'; '.join(result.left)}")
    examples = classes["steady"][:3] + classes["other"][:3]
    for failure in examples:
        table.note(f"failure ({failure.service} {failure.kind}): {failure.error[:200]}")
    table.note(
        f"a target failure is during a fault when the request overlapped one: from the fault "
        f"until {GRACE_SECONDS:g} s after the target was ready again with a new process"
    )
    return table


# --- the run -------------------------------------------------------------------------------------


class Unexpected(Exception):
    """An answer that is not what the service sends."""


async def one_request(client: aiohttp.ClientSession, base: str, service: str, kind: str) -> None:
    url = f"{base}/{service}"
    if kind == "get":
        async with client.get(f"{url}/hello") as resp:
            text = await resp.text()
            if resp.status != 200 or not text.startswith("hello from"):
                raise Unexpected(f"GET {resp.status}: {text[:100]!r}")
    elif kind == "upload":
        async with client.post(f"{url}/upload", data=UPLOAD) as resp:
            text = await resp.text()
            if resp.status != 200 or text != UPLOAD_SHA:
                raise Unexpected(f"upload {resp.status}: {text[:100]!r}")
    elif kind == "events":
        async with client.get(f"{url}/events?n={EVENTS}") as resp:
            body = await resp.read()
            if resp.status != 200 or body.count(b"data: ") != EVENTS:
                raise Unexpected(f"events {resp.status}: {body[:100]!r}")
    else:
        async with client.ws_connect(f"{url}/ws") as ws:
            for i in range(WS_MESSAGES):
                await ws.send_str(f"ping {i}")
                message = await ws.receive(timeout=REQUEST_SECONDS)
                if message.data != f"ping {i}":
                    raise Unexpected(f"ws: {message.type.name} {str(message.data)[:100]!r}")


@dataclass
class Deadline:
    at: float = math.inf


async def traffic(client: aiohttp.ClientSession, base: str, rng: random.Random,
                  until: Deadline, tally: Tally) -> None:
    while time.monotonic() < until.at:
        service, kind = rng.choice(SERVICES), rng.choice(KINDS)
        started = time.monotonic()
        error = None
        try:
            await asyncio.wait_for(one_request(client, base, service, kind), REQUEST_SECONDS)
        except (Unexpected, aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        tally.record(service, kind, started, error)


class Cli:
    """``devstack COMMAND -f MANIFEST ...`` against the running stack, off the event loop."""

    def __init__(self, manifest: Path, home: Path, devstack: Launched) -> None:
        self.manifest = manifest
        self.env = devstack_env(home)
        self.devstack = devstack

    async def __call__(self, command: str, *args: str) -> str:
        argv = devstack_argv(command, "-f", str(self.manifest), *args)
        process = await asyncio.create_subprocess_exec(
            *argv, env=self.env, cwd=self.manifest.parent, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), CLI_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise BenchError(f"`devstack {command}` did not answer within {CLI_SECONDS:g} s; "
                             f"devstack's output:\n{self.devstack.tail()}") from None
        if process.returncode != 0:
            raise BenchError(f"`devstack {command} {' '.join(args)}` exited "
                             f"{process.returncode}: {err.decode(errors='replace').strip()}\n"
                             f"devstack's output:\n{self.devstack.tail()}")
        return out.decode()

    async def target(self) -> dict[str, Any]:
        import json

        document = json.loads(await self("status", "--json"))
        for entry in document["services"]:
            if entry["name"] == TARGET:
                return dict(entry)
        raise BenchError(f"`devstack status --json` does not list {TARGET}: {document}")


async def settle(cli: Cli, old_pid: int | None, tally: Tally, doing: str) -> tuple[float, int]:
    """Ask devstack's status until the target is ready with a process other than ``old_pid``;
    a target given up on is restarted (counted). Returns when, and its pid."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        cli.devstack.check_running(doing)
        entry = await cli.target()
        if entry["ready"] and entry["pid"] is not None and entry["pid"] != old_pid:
            return time.monotonic(), int(entry["pid"])
        if entry["state"] == "failed":
            logger.warning("soak: %s was given up on (%s); restarting it", TARGET, entry["reason"])
            tally.recoveries += 1
            await cli("restart", TARGET)
        if time.monotonic() > deadline:
            raise BenchError(f"the target was not ready with a new process {SETTLE_SECONDS:g} s "
                             f"after {doing} (last status: {entry}); devstack's output:\n"
                             f"{cli.devstack.tail()}")
        await asyncio.sleep(0.2)


@dataclass
class Chaos:
    cli: Cli
    rng: random.Random
    script: Path
    tally: Tally
    token: str
    pid: int
    settled_at: float
    edits: int = 0
    kill_streak: int = 0

    def draw(self) -> str:
        kind = self.rng.choice(FAULTS)
        if time.monotonic() - self.settled_at >= HEALTHY_SECONDS:
            self.kill_streak = 0
        if kind == "kill" and self.kill_streak >= KILL_STREAK:
            kind = "edit"
        return kind

    def edit(self) -> None:
        self.edits += 1
        text = self.script.read_text()
        new, count = EDIT_LINE.subn(f'EDIT = "{edit_token(self.edits)}"', text)
        if count != 1:
            raise BenchError(f"expected one EDIT line in {self.script}, found {count}")
        save(self.script, new, in_place=self.edits % 2 == 0)

    async def kill(self) -> None:
        """SIGKILL to the target's process, its pid from ``devstack status --json`` and checked
        to carry the soak's token (never a stranger that reused a pid)."""
        entry = await self.cli.target()
        pid = entry["pid"]
        if not entry["ready"] or pid is None or not carries(int(pid), self.token):
            raise BenchError(f"`devstack status --json` gave the target as {entry}, not a "
                             f"ready process of this stack; devstack's output:\n"
                             f"{self.cli.devstack.tail()}")
        self.pid = int(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    async def fault(self, kind: str) -> None:
        """One fault of the target, then its wait until the target is back."""
        at = time.monotonic()
        if kind == "kill":
            self.kill_streak += 1
            await self.kill()
        elif kind == "restart":
            await self.cli("restart", TARGET)
        else:
            self.kill_streak = 0
            self.edit()
        self.settled_at, self.pid = await settle(
            self.cli, self.pid, self.tally, f"a {kind} of the target"
        )
        self.tally.faults.append(Fault(kind, at, self.settled_at))
        logger.debug("soak: %s, back after %.2f s", kind, self.settled_at - at)

    async def each_once(self) -> None:
        """One fault of each kind, in a drawn order (the warm-up: every path taken once)."""
        for kind in self.rng.sample(FAULTS, len(FAULTS)):
            await asyncio.sleep(self.rng.uniform(*PAUSE_SECONDS))
            await self.fault(kind)

    async def run(self, until: float) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*PAUSE_SECONDS))
            if time.monotonic() >= until:
                return
            await self.fault(self.draw())


def edit_token(number: int) -> str:
    return f"<edit {number}>"


def client_session(cafile: Path) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=str(cafile))
    # localhost pinned to 127.0.0.1, where devstack listens.
    connector = aiohttp.TCPConnector(ssl=context, family=socket.AF_INET, limit=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


def sample(pid: int) -> Sample:
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as exc:
        raise BenchError(f"cannot count devstack's file descriptors: {exc}") from exc
    return Sample(fds=fds, rss_mb=procfs.memory(pid).rss_mb)


async def soak(cli: Cli, base: str, cafile: Path, script: Path, settings: SoakSettings,
               seed: int, token: str) -> SoakResult:
    """The phases; the result's ``left`` is for the caller to fill once devstack is stopped."""
    tally = Tally()
    pid = cli.devstack.pid
    clients = random.Random(seed + 1)
    trace: list[Sample] = []

    async def watch(seconds: float) -> None:
        for _ in range(TRACE_PARTS):
            await asyncio.sleep(seconds / TRACE_PARTS)
            trace.append(sample(pid))

    async def phase(seconds: float, chaos: Chaos | None = None) -> None:
        async with client_session(cafile) as client:
            until = Deadline(time.monotonic() + seconds)
            jobs = [traffic(client, base, random.Random(clients.random()), until, tally)
                    for _ in range(CLIENTS)]
            if chaos is not None:
                jobs += [chaos.run(until.at), watch(seconds)]
            await asyncio.gather(*jobs)

    async def warm_up(chaos: Chaos) -> None:
        """Calm traffic, one fault of each kind, calm traffic again: every path taken once."""
        async with client_session(cafile) as client:
            until = Deadline()

            async def faults() -> None:
                await asyncio.sleep(settings.calm_seconds)
                await chaos.each_once()
                until.at = time.monotonic() + settings.calm_seconds

            jobs = [traffic(client, base, random.Random(clients.random()), until, tally)
                    for _ in range(CLIENTS)]
            await asyncio.gather(faults(), *jobs)

    settled_at, target_pid = await settle(cli, None, tally, "starting")
    chaos = Chaos(cli, random.Random(seed), script, tally, token, target_pid, settled_at)
    began = time.monotonic()
    logger.info("soak: warming up (traffic, one fault of each kind, traffic; seed %d)", seed)
    await warm_up(chaos)
    warm_up_faults = len(tally.faults)
    await asyncio.sleep(QUIET_SECONDS)
    warm = sample(pid)
    logger.info("soak: %g s of traffic and faults", settings.seconds)
    faulted = time.monotonic()
    await phase(settings.seconds, chaos)
    seconds = time.monotonic() - faulted
    logger.info("soak: %d faults; calm traffic (%g s)", len(tally.faults), settings.calm_seconds)
    await phase(settings.calm_seconds)
    total = time.monotonic() - began - QUIET_SECONDS
    await asyncio.sleep(QUIET_SECONDS)
    end = sample(pid)
    if chaos.edits:
        await check_last_edit(base, cafile, edit_token(chaos.edits), cli.devstack)
    return SoakResult(seed, seconds, total, tally, warm, end, left=(), trace=tuple(trace),
                      warm_up_faults=warm_up_faults)


async def check_last_edit(base: str, cafile: Path, token: str, devstack: Launched) -> None:
    """The target runs the last edit: the edits were real reloads."""
    url = f"{base}/{TARGET}/hello"
    async with client_session(cafile) as client, client.get(url) as resp:
        text = await resp.text()
    if token not in text:
        raise BenchError(f"the target answers {text!r}, not its last edit {token!r}; devstack's "
                         f"output:\n{devstack.tail()}")


def carries(pid: int, token: str) -> bool:
    """Whether ``pid`` is alive (not a zombie) and its environment carries the soak's token."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    return f"{TOKEN_VARIABLE}={token}".encode() in environ and procfs.is_alive(pid)


def carrying(token: str) -> list[int]:
    """Live processes (not zombies) whose environment carries the soak's token."""
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and carries(int(entry), token)]


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def stop_and_look(devstack: Launched, token: str) -> tuple[str, ...]:
    """SIGINT to devstack (a Ctrl-C), its exit awaited; then whatever still carries the token."""
    devstack.interrupt(signal.SIGINT)
    try:
        wait_until(lambda: devstack.has_exited, timeout=STOP_SECONDS, interval=0.05,
                   message="devstack to exit after SIGINT")
    except BenchError:
        logger.warning("soak: devstack did not exit within %g s of SIGINT", STOP_SECONDS)
    with contextlib.suppress(BenchError):
        wait_until(lambda: not carrying(token), timeout=LEFT_GRACE_SECONDS, interval=0.1,
                   message="the stack's processes to be gone")
    return tuple(f"{pid} {command_of(pid)}" for pid in carrying(token))


def install(folder: Path) -> dict[str, Any]:
    """A copy of the service per service folder, and the manifest's content."""
    services = {}
    for name in SERVICES:
        service_dir = folder / name
        service_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SERVICE_SCRIPT, service_dir / SERVICE_SCRIPT.name)
        services[name] = {
            "command": shlex.join([PYTHON, SERVICE_SCRIPT.name]),
            "cwd": str(service_dir),
            "watch": ["*.py"],
        }
    routes = [{"path": f"/{name}", "service": name} for name in SERVICES]
    return {"services": services, "routes": routes}


def start(launcher: Launcher, manifest: Path, home: Path, token: str) -> tuple[Launched, int]:
    env = dict(devstack_env(home), **{TOKEN_VARIABLE: token})
    argv = devstack_argv("up", "-f", str(manifest), "--port", "0")
    launched = launcher.start("devstack-soak", argv, env=env, cwd=manifest.parent)

    def started() -> bool:
        launched.check_running("starting its services")
        return UP_LINE.search(launched.output()) is not None

    wait_until(started, timeout=START_SECONDS, interval=0.05,
               message=f"devstack up on {manifest} to report")
    found = PROXY_LINE.search(launched.output())
    if found is None:
        raise BenchError(f"devstack up did not print its proxy's port:\n{launched.tail()}")
    return launched, int(found.group(1))


def run(launcher: Launcher, folder: Path, settings: SoakSettings, seed: int | None = None
        ) -> Table:
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    logger.info("soak: seed %d", seed)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder, install(folder))
    home = folder / "devstack-home"
    token = secrets.token_hex(8)
    devstack, port = start(launcher, manifest, home, token)
    try:
        devstack.remember_descendants()
        cafile = devstack_ca(home)
        cli = Cli(manifest, home, devstack)
        try:
            result = asyncio.run(soak(
                cli, f"https://localhost:{port}", cafile, folder / TARGET / SERVICE_SCRIPT.name,
                settings, seed, token,
            ))
        except KeyboardInterrupt:
            # Requests cut by the Ctrl-C would each be logged as "never retrieved" when collected.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            raise
        left = stop_and_look(devstack, token)
    finally:
        launcher.stop(devstack)
        for pid in carrying(token):  # what the launcher did not know of
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return tabulate(dataclasses.replace(result, left=left))
