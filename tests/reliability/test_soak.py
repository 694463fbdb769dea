"""The soak: minutes of mixed traffic (plain requests, uploads, server-sent events, websockets)
through the real proxy to two real services under the real supervisor, while one of them is
reloaded, restarted and killed with SIGKILL at random. Deselected by default; run it with

    .venv/bin/python -m pytest -m soak -s tests/reliability/test_soak.py

``DEVSTACK_SOAK_SECONDS`` (default 120) sets its length, ``DEVSTACK_SOAK_SEED`` the chaos's draws.

What is excused, and only that (:meth:`Timeline.excuse`):

- a plain request or an upload to the victim that overlapped a kill's window: from the SIGKILL
  until the supervisor shows the victim ready again with another process. Until then devstack
  answers what it knows (held requests, then 503 when still not ready after ``wait_seconds``;
  502 while the victim is crashed or given up on after crashes in a row), by design;
- a stream (event stream, websocket) to the victim that overlapped any fault's window (a kill, a
  restart or a reload, until the victim is ready again): the proxy ends those on purpose when
  their process goes, so that browsers reconnect to the new one.

Anything else fails the test: any failure on the service left alone, a plain request or upload
to the victim across a restart or a reload (the proxy holds those until the new process is
ready), any failure to the victim while it was ready. A failure is reported with its answer
(status and body, where devstack's pages name the victim's state) and the victim's timeline
around it (faults, and every state the supervisor showed).

At the end: the proxy's process (this one) has no more file descriptors, asyncio tasks or memory
than a small bound over what it had once warm, and no process of the stack is left. The figures
are printed (``-s``).

The whole run is bounded by the test itself (:data:`BUDGET_SECONDS`, an ``asyncio.timeout``
around it, so the stack is stopped and cleaned up), and pytest-timeout's limit is set above that
with its ``thread`` method: its default ``signal`` method raises from a SIGALRM handler into
whatever bytecode runs, which under uvloop is mostly swallowed (``Exception in callback
Loop._read_from_self``) and otherwise lands inside a request (a 502) or between an ``async
with``'s ``__aexit__()`` call and its await ("coroutine 'Timeout.__aexit__' was never awaited").
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import html
import io
import os
import random
import re
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from devstack.manifest.spec import ProxySpec, RouteSpec, ServiceSpec, StackSpec
from devstack.proxy.routing import certificate_hosts
from devstack.proxy.server import Proxy
from devstack.run.output import Printer
from devstack.run.spawn import Spawner
from devstack.run.starter import SpawningStarter
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState
from devstack.tls.ca import ServerCertificate, load_or_create_ca
from tests.component.test_proxy_harness import use_lane, verified_client
from tests.component.test_supervisor import free_ports
from tests.reliability.escapees import carrying, kill_all, new_token

SECONDS = float(os.environ.get("DEVSTACK_SOAK_SECONDS", "120"))
CLIENTS = 12
CALM_SECONDS = 5.0
WAIT_SECONDS = 30.0
"""The proxy's ``wait_seconds``: how long it holds a request for a service that is coming."""
REQUEST_SECONDS = WAIT_SECONDS + 15.0
"""Deadline of one request: past the proxy's hold, so a held request gets devstack's answer."""
READY_SECONDS = 30.0
STOP_SECONDS = 30.0
BUDGET_SECONDS = SECONDS + 2 * (CALM_SECONDS + REQUEST_SECONDS) + READY_SECONDS + 60.0
"""The whole run, start to stop, at most (the test fails past it, after cleaning up)."""
KINDS = ("hello", "hello", "upload", "events", "ws")
STREAMS = ("events", "ws")
"""Answers that last: when their service's process goes away the proxy ends them on purpose
(a close frame 1012 or 1001, an event stream ended), so that browsers reconnect to the new
one."""
REPO = Path(__file__).resolve().parents[2]
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()
AROUND_SECONDS = 3.0
"""A failure is reported with the victim's timeline from this long before it started."""

pytestmark = [
    pytest.mark.soak,
    pytest.mark.timeout(BUDGET_SECONDS + 60, method="thread"),
]


class Unexpected(Exception):
    """An answer that is not the service's: what came instead (a status and body, a frame)."""

    def __init__(self, status: int | None, body: str) -> None:
        super().__init__(f"{status} {gist(body)}" if status is not None else gist(body))
        self.status = status
        self.body = body


_HEAD = re.compile(r"<head>.*?</head>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def gist(text: str, limit: int = 400) -> str:
    """An answer's text made short: an HTML page's words (devstack's pages name the service's
    state, exit and reason), whitespace collapsed."""
    text = html.unescape(_TAG.sub(" ", _HEAD.sub("", text)))
    return " ".join(text.split())[:limit]


@dataclass(frozen=True)
class Moment:
    at: float
    what: str
    is_state: bool = False
    """A state of the victim (else a fault, or a phase)."""


@dataclass(frozen=True)
class Failure:
    service: str
    kind: str
    started: float
    ended: float
    error: str
    victim: str
    """The victim's state when the failure came back."""


@dataclass
class Timeline:
    """What happened to the victim (faults, and every state the supervisor showed), and every
    request's outcome; all times ``time.monotonic()``."""

    began: float = field(default_factory=time.monotonic)
    ok: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    faults: list[tuple[float, str, int | None]] = field(default_factory=list)
    """``(when, kind, pid)``: the pid killed (a kill), or serving when asked (else)."""
    ready: list[tuple[float, int]] = field(default_factory=list)
    """``(when, pid)``: each time the victim was seen ready with a process."""

    def note(self, what: str, at: float | None = None, *, is_state: bool = False) -> None:
        self.moments.append(Moment(time.monotonic() if at is None else at, what, is_state))

    def fault(self, kind: str, pid: int | None, state: ServiceState) -> None:
        at = time.monotonic()
        self.faults.append((at, kind, pid))
        self.note(f"{kind}{f' pid {pid}' if pid is not None else ''} (victim {state})", at)

    def state(self, state: ServiceState, pid: int | None, text: str) -> None:
        at = time.monotonic()
        if state is ServiceState.READY and pid is not None:
            self.ready.append((at, pid))
        self.note(text, at, is_state=True)

    def back(self, at: float, gone: int | None) -> float:
        """When the victim was next seen ready after ``at`` with a process other than ``gone``
        (infinity: never)."""
        start = bisect.bisect_right(self.ready, (at, sys.maxsize))
        return next((when for when, pid in self.ready[start:] if pid != gone), float("inf"))

    def windows(self, kinds: tuple[str, ...]) -> list[tuple[float, float, str]]:
        return [(at, self.back(at, pid), kind) for at, kind, pid in self.faults if kind in kinds]

    def excuse(self, failure: Failure) -> str | None:
        """Why ``failure`` is the chaos's (see the module's docstring), or ``None``."""
        if failure.service != "victim":
            return None
        kinds = ("kill", "restart", "reload") if failure.kind in STREAMS else ("kill",)
        for at, back, kind in self.windows(kinds):
            if at <= failure.ended and failure.started <= back:
                return kind
        return None

    def judge(self) -> tuple[Counter[str], list[Failure]]:
        """The failures excused, counted by what excuses them; those not excused."""
        excused: Counter[str] = Counter()
        unexcused = []
        for failure in self.failures:
            why = self.excuse(failure)
            if why is None:
                unexcused.append(failure)
            else:
                excused[f"{failure.service} {failure.kind} (during a {why})"] += 1
        return excused, unexcused

    def record(
        self, service: str, kind: str, started: float, error: BaseException | None, victim: str
    ) -> None:
        if error is None:
            self.ok[f"{service} {kind}"] += 1
            return
        text = str(error) if isinstance(error, Unexpected) else f"{type(error).__name__}: {error}"
        self.failures.append(Failure(service, kind, started, time.monotonic(), text, victim))

    def t(self, at: float) -> str:
        return f"{at - self.began:+8.2f}"

    def explain(self, failure: Failure) -> str:
        """The failure, its answer, and the victim's timeline around it."""
        lines = [
            f"{failure.service} {failure.kind}, {self.t(failure.started)} .. "
            f"{self.t(failure.ended)} s: {failure.error[:600]} [victim then: {failure.victim}]"
        ]
        since, until = failure.started - AROUND_SECONDS, failure.ended + 0.5
        around = [m for m in self.moments if since <= m.at <= until]
        before = [m for m in self.moments if m.at < since and m.is_state][-1:]  # the state then
        lines += [f"    {self.t(m.at)}  {m.what}" for m in before + around]
        return "\n".join(lines)


@pytest.fixture
def token() -> Iterator[str]:
    token = new_token()
    try:
        yield token
    finally:
        kill_all(token)


@asynccontextmanager
async def soak_stack(tmp_path: Path, token: str) -> AsyncIterator[tuple[Supervisor, Proxy]]:
    command = f"{sys.executable} bench/soak_service.py"  # the bench's soak runs it too
    env = {"PYTHONPATH": str(REPO), "RELIABILITY_TOKEN": token}
    services = {
        name: ServiceSpec(name=name, command=command, cwd=REPO, env=env, stop_timeout_seconds=2)
        for name in ("steady", "victim")
    }
    spec = StackSpec(
        manifest_path=tmp_path / "devstack.yaml",
        services=services,
        routes=(
            RouteSpec(path="/steady", service="steady"),
            RouteSpec(path="/victim", service="victim"),
        ),
        proxy=ProxySpec(port=0, wait_seconds=WAIT_SECONDS),
    )
    ports = dict(zip(spec.services, free_ports(2), strict=True))
    printer = Printer(spec.services, stream=io.BytesIO(), colour=False)
    supervisor = Supervisor(spec, ports, printer, starter=SpawningStarter(Spawner(ports)))
    running = asyncio.ensure_future(supervisor.run())
    try:
        await asyncio.wait_for(supervisor.started, READY_SECONDS)
        context = ServerCertificate(load_or_create_ca(), certificate_hosts(spec)).context
        async with Proxy(spec, supervisor, context, port=0) as proxy:
            yield supervisor, proxy
    finally:
        supervisor.request_shutdown()
        await asyncio.wait_for(running, STOP_SECONDS)


async def one_request(client: aiohttp.ClientSession, base: str, service: str, kind: str) -> None:
    """One request of ``kind``; :class:`Unexpected` (with the answer) when it is not the
    service's."""
    url = f"{base}/{service}"
    if kind == "hello":
        async with client.get(f"{url}/hello") as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200 or not text.startswith("hello"):
                raise Unexpected(resp.status, text)
    elif kind == "upload":
        async with client.post(f"{url}/upload", data=UPLOAD) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200 or text != UPLOAD_SHA:
                raise Unexpected(resp.status, text)
    elif kind == "events":
        async with client.get(f"{url}/events?n=5") as resp:
            body = await resp.read()
            if resp.status != 200 or body.count(b"data: ") != 5:
                raise Unexpected(resp.status, body.decode(errors="replace"))
    else:
        async with client.ws_connect(f"{url}/ws") as socket:
            for i in range(3):
                await socket.send_str(f"ping {i}")
                message = await socket.receive(timeout=10)
                if message.data != f"ping {i}":
                    raise Unexpected(None, f"websocket message {i}: {message.type.name} "
                                           f"{message.data!r} {message.extra!r}")  # fmt: skip


def snapshot() -> tuple[int, int, int]:
    """This process's open descriptors, asyncio tasks and peak memory (bytes)."""
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    return fds, tasks, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def described(supervisor: Supervisor) -> str:
    status = supervisor.status("victim")
    text = f"{status.state}"
    if status.pid is not None:
        text += f" pid {status.pid}"
    if status.reason:
        text += f" ({status.reason})"
    return text


@dataclass
class Soak:
    """The phases of one run on a stack that is up: calm traffic, traffic with faults, calm
    traffic again; the victim's states followed throughout (:meth:`watch`)."""

    supervisor: Supervisor
    client: aiohttp.ClientSession
    base: str
    rng: random.Random
    timeline: Timeline
    faults: Counter[str] = field(default_factory=Counter)

    async def run(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        watching = asyncio.ensure_future(self.watch())
        try:
            await self.calm(CALM_SECONDS)
            before = snapshot()
            self.timeline.note("faults begin")
            until = time.monotonic() + SECONDS
            await asyncio.gather(self.chaos(until), *(self.traffic(i, until)
                                                      for i in range(CLIENTS)))  # fmt: skip
            self.timeline.note("faults end")
            await self.calm(CALM_SECONDS)
            after = snapshot()
            assert self.supervisor.status("steady").state is ServiceState.READY
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        return before, after

    async def watch(self) -> None:
        """Every state of the victim the supervisor shows, as it shows it."""
        shown = None
        while True:
            status = self.supervisor.status("victim")
            if (status.state, status.pid) != shown:
                shown = status.state, status.pid
                self.timeline.state(status.state, status.pid,
                                    f"victim {described(self.supervisor)}")  # fmt: skip
            await self.supervisor.changed()

    async def traffic(self, seed: int, until: float) -> None:
        local = random.Random(seed)
        while time.monotonic() < until:
            service = local.choice(["steady", "victim"])
            kind = local.choice(KINDS)
            started = time.monotonic()
            error: BaseException | None = None
            try:
                async with asyncio.timeout(REQUEST_SECONDS):
                    await one_request(self.client, self.base, service, kind)
            except (Unexpected, aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
                error = exc
            self.timeline.record(service, kind, started, error, described(self.supervisor))

    async def chaos(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))  # the chaos schedule
            status = self.supervisor.status("victim")
            fault = self.rng.choice(["restart", "reload", "kill"])
            if fault == "kill" and status.pid is not None:
                self.timeline.fault("kill", status.pid, status.state)
                os.kill(status.pid, signal.SIGKILL)
            elif fault == "restart":
                self.timeline.fault("restart", status.pid, status.state)
                self.supervisor.restart("victim")
            else:
                fault = "reload"  # a kill drawn while no process runs is a reload
                self.timeline.fault("reload", status.pid, status.state)
                self.supervisor.reload("victim", ("soak_service.py",))
            self.faults[fault] += 1

    async def calm(self, seconds: float) -> None:
        """Traffic with no fault, so pools fill (before) or every fault has settled (after):
        what is measured then is what stays."""
        until = time.monotonic() + seconds
        await asyncio.gather(*(self.traffic(1000 + i, until) for i in range(CLIENTS)))
        status = await self.supervisor.wait_ready("victim", READY_SECONDS)
        assert status.is_ready, f"the victim is not ready again after the faults: {status}"


def test_mixed_traffic_while_a_service_is_reloaded_restarted_and_killed(
    tmp_path: Path, token: str
) -> None:
    seed = int(os.environ.get("DEVSTACK_SOAK_SEED", "4242"))
    timeline = Timeline()
    soaks: list[Soak] = []

    async def main() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        async with soak_stack(tmp_path, token) as (supervisor, proxy), verified_client() as client:
            soaks.append(Soak(supervisor, client, proxy.url, random.Random(seed), timeline))
            return await soaks[0].run()

    async def bounded() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        try:
            async with asyncio.timeout(BUDGET_SECONDS):
                return await main()
        except TimeoutError:
            pytest.fail(f"the soak did not end within {BUDGET_SECONDS:g} s")

    with use_lane("fast"):
        before, after = asyncio.run(bounded())
    leftovers = carrying(token)
    excused, unexcused = timeline.judge()
    longest = max((back - at for at, back, _ in timeline.windows(("kill",))), default=0.0)
    print(
        f"\nsoak: {SECONDS:.0f} s, seed {seed}, faults {dict(soaks[0].faults)}, ok "
        f"{sum(timeline.ok.values())} ({dict(timeline.ok)}), failed and excused {dict(excused)}, "
        f"failed and not excused {len(unexcused)}; victim back after a kill in at most "
        f"{longest:.2f} s; fds {before[0]} -> {after[0]}, tasks {before[1]} -> {after[1]}, "
        f"peak memory {before[2] / 2**20:.0f} -> {after[2] / 2**20:.0f} MiB; "
        f"processes left: {len(leftovers)}"
    )
    assert unexcused == [], (
        f"{len(unexcused)} failed request(s) not explained by a fault (times in s from the "
        f"start; seed {seed}):\n" + "\n".join(timeline.explain(f) for f in unexcused[:10])
    )
    assert after[0] - before[0] <= 20, "file descriptors grew"
    assert after[1] - before[1] <= 20, "asyncio tasks grew"
    assert after[2] - before[2] <= 64 * 2**20, "memory grew"
    assert leftovers == []
