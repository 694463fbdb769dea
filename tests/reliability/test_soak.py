"""The soak: minutes of mixed traffic (plain requests, uploads, server-sent events, websockets)
through the real proxy to two real services under the real supervisor, while one of them is
reloaded, restarted and killed with SIGKILL at random. Deselected by default; run it with

    .venv/bin/python -m pytest -m soak -s tests/reliability/test_soak.py

``DEVSTACK_SOAK_SECONDS`` (default 120) sets its length. At the end: no failed request to the
service that was left alone; the proxy's process (this one) has no more file descriptors,
asyncio tasks or memory than a small bound over what it had once warm; and no process of the
stack is left. The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
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

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("DEVSTACK_SOAK_SECONDS", "120"))
CLIENTS = 12
CALM_SECONDS = 5.0
AFTER_KILL_SECONDS = 5.0
"""A killed service is crashed, then waits out its restart backoff (0.5 s) and starts: the
proxy answers 502 meanwhile, by design. A failure this soon after a kill is the kill's."""
KINDS = ("hello", "hello", "upload", "events", "ws")
STREAMS = ("events", "ws")
"""Answers that last: when their service's process goes away the proxy ends them on purpose
(a close frame 1012 or 1001, an event stream ended), so that browsers reconnect to the new
one. They are counted apart; every other request to the service under faults must succeed."""
REPO = Path(__file__).resolve().parents[2]
UPLOAD = os.urandom(256 * 1024)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    kills: list[float] = field(default_factory=list)
    """When the victim was killed (``time.monotonic()``)."""

    def record(
        self, service: str, kind: str, error: BaseException | None, started: float = 0.0
    ) -> None:
        key = f"{service} {kind}"
        if error is None:
            self.ok[key] += 1
        elif any(started - AFTER_KILL_SECONDS <= killed for killed in self.kills):
            key = f"{service} {kind} (in flight when killed)"
            self.failed[key] += 1
        else:
            self.failed[key] += 1
            if len(self.failures) < 20 or kind in ("hello", "upload"):
                self.failures.append(f"{key}: {str(error)[:300]!r}")


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
        proxy=ProxySpec(port=0, wait_seconds=30),
    )
    ports = dict(zip(spec.services, free_ports(2), strict=True))
    printer = Printer(spec.services, stream=io.BytesIO(), colour=False)
    supervisor = Supervisor(spec, ports, printer, starter=SpawningStarter(Spawner(ports)))
    running = asyncio.ensure_future(supervisor.run())
    try:
        await asyncio.wait_for(supervisor.started, 30)
        context = ServerCertificate(load_or_create_ca(), certificate_hosts(spec)).context
        async with Proxy(spec, supervisor, context, port=0) as proxy:
            yield supervisor, proxy
    finally:
        supervisor.request_shutdown()
        await asyncio.wait_for(running, 30)


async def one_request(client: aiohttp.ClientSession, base: str, service: str, kind: str) -> str:
    url = f"{base}/{service}"
    if kind == "hello":
        async with client.get(f"{url}/hello") as resp:
            assert resp.status == 200 and (await resp.text()).startswith("hello"), resp.status
    elif kind == "upload":
        async with client.post(f"{url}/upload", data=UPLOAD) as resp:
            assert resp.status == 200 and await resp.text() == UPLOAD_SHA, resp.status
    elif kind == "events":
        async with client.get(f"{url}/events?n=5") as resp:
            assert resp.status == 200, resp.status
            body = await resp.read()
            assert body.count(b"data: ") == 5, body
    else:
        async with client.ws_connect(f"{url}/ws") as socket:
            for i in range(3):
                await socket.send_str(f"ping {i}")
                message = await socket.receive(timeout=10)
                assert message.data == f"ping {i}", message
    return kind


def snapshot() -> tuple[int, int, int]:
    """This process's open descriptors, asyncio tasks and peak memory (bytes)."""
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    return fds, tasks, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_mixed_traffic_while_a_service_is_reloaded_restarted_and_killed(
    tmp_path: Path, token: str
) -> None:
    rng = random.Random(int(os.environ.get("DEVSTACK_SOAK_SEED", "4242")))
    tally = Tally()
    faults: Counter[str] = Counter()

    async def main() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        async with soak_stack(tmp_path, token) as (supervisor, proxy), verified_client() as client:
            base = proxy.url

            async def traffic(seed: int, until: float) -> None:
                local = random.Random(seed)
                while time.monotonic() < until:
                    service = local.choice(["steady", "victim"])
                    kind = local.choice(KINDS)
                    started = time.monotonic()
                    try:
                        await one_request(client, base, service, kind)
                        tally.record(service, kind, None)
                    except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
                        tally.record(service, kind, exc, started)

            async def chaos(until: float) -> None:
                while time.monotonic() < until:
                    await asyncio.sleep(rng.uniform(0.5, 2.0))  # the chaos schedule
                    status = supervisor.status("victim")
                    fault = rng.choice(["restart", "reload", "kill"])
                    if fault == "kill" and status.pid is not None:
                        tally.kills.append(time.monotonic())
                        os.kill(status.pid, signal.SIGKILL)
                    elif fault == "restart":
                        supervisor.restart("victim")
                    else:
                        supervisor.reload("victim", ("soak_service.py",))
                    faults[fault] += 1

            async def calm(seconds: float) -> None:
                """Traffic with no fault, so pools fill (before) or every fault has settled
                (after): what is measured then is what stays."""
                until = time.monotonic() + seconds
                await asyncio.gather(*(traffic(1000 + i, until) for i in range(CLIENTS)))
                await supervisor.wait_ready("victim", 30)

            await calm(CALM_SECONDS)
            before = snapshot()
            until = time.monotonic() + SECONDS
            await asyncio.gather(chaos(until), *(traffic(i, until) for i in range(CLIENTS)))
            await calm(CALM_SECONDS)
            after = snapshot()
            assert supervisor.status("steady").state is ServiceState.READY
        return before, after

    with use_lane("fast"):
        before, after = asyncio.run(main())
    leftovers = carrying(token)
    steady_failed = sum(n for key, n in tally.failed.items() if key.startswith("steady"))
    print(
        f"\nsoak: {SECONDS:.0f} s, faults {dict(faults)}, ok {sum(tally.ok.values())} "
        f"({dict(tally.ok)}), failed {dict(tally.failed)}; "
        f"fds {before[0]} -> {after[0]}, tasks {before[1]} -> {after[1]}, "
        f"peak memory {before[2] / 2**20:.0f} -> {after[2] / 2**20:.0f} MiB; "
        f"processes left: {len(leftovers)}"
    )
    assert steady_failed == 0, tally.failures
    cut = [key for key in tally.failed if key.endswith(("hello", "upload"))]
    assert cut == [], [f for f in tally.failures if "hello" in f or "upload" in f]
    assert after[0] - before[0] <= 20, "file descriptors grew"
    assert after[1] - before[1] <= 20, "asyncio tasks grew"
    assert after[2] - before[2] <= 64 * 2**20, "memory grew"
    assert leftovers == []
