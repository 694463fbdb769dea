"""The seams the proxy tests share: a stand-in service directory, real upstream servers on
port 0, a proxy with a real certificate from devstack's CA, and a client that verifies it.

Run as a program it starts a proxy in front of one always-ready service, so a test can watch
the proxy's memory from outside:
``python -m tests.component.test_proxy_harness UPSTREAM_PORT fast|full`` prints the proxy's
port on stdout and serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from devstack.manifest.spec import ProxySpec, RouteSpec, ServiceSpec, StackSpec
from devstack.proxy.routing import certificate_hosts
from devstack.proxy.server import Proxy, ProxyTimeouts
from devstack.run.output import Printer
from devstack.run.spawn import Spawner
from devstack.run.starter import SpawningStarter
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState, ServiceStatus
from devstack.tls.ca import ServerCertificate, client_context, load_or_create_ca
from tests.component.test_supervisor import free_ports


class StandInDirectory:
    """What the supervisor shows the proxy, scripted by the test: ``set()`` a status and
    every ``wait_ready`` caller sees it at once."""

    def __init__(self, ports: Mapping[str, int]) -> None:
        self._statuses = {
            name: ServiceStatus(name=name, state=ServiceState.READY, port=port)
            for name, port in ports.items()
        }
        self._changed = asyncio.Event()
        self.waiting = 0
        """How many requests are waiting in ``wait_ready`` right now."""

    def status(self, name: str) -> ServiceStatus:
        return self._statuses[name]

    def set(self, name: str, state: ServiceState, **changes: object) -> None:
        current = self._statuses[name]
        self._statuses[name] = dataclasses.replace(current, state=state, **changes)  # type: ignore[arg-type]
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    async def wait_ready(self, name: str, timeout: float) -> ServiceStatus:
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    status = self._statuses[name]
                    if status.is_ready or not (
                        status.state.is_coming or status.state is ServiceState.STOPPING
                    ):
                        return status
                    await self._changed.wait()
        except TimeoutError:
            return self._statuses[name]
        finally:
            self.waiting -= 1


def make_spec(
    root: Path,
    services: Mapping[str, int],
    routes: tuple[RouteSpec, ...] = (),
    **proxy: object,
) -> StackSpec:
    return StackSpec(
        manifest_path=root / "devstack.yaml",
        services={
            name: ServiceSpec(name=name, command="true", cwd=root, port=port)
            for name, port in services.items()
        },
        routes=routes,
        proxy=ProxySpec(port=0, **proxy),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def upstream(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 port 0; yield the port it got."""
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port: int = runner.addresses[0][1]
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_upstream(answer: bytes, *, close_after: bool) -> AsyncIterator[int]:
    """A hand-written service: reads one request head per exchange and writes ``answer``
    byte for byte (for answers aiohttp would never send), closing after it if asked."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port: int = server.sockets[0].getsockname()[1]
        yield port
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def running_proxy(
    spec: StackSpec,
    directory: StandInDirectory,
    timeouts: ProxyTimeouts | None = None,
) -> AsyncIterator[Proxy]:
    certificate = ServerCertificate(load_or_create_ca(), certificate_hosts(spec))
    context = certificate.context
    async with Proxy(
        spec, directory, context, port=0, timeouts=timeouts or ProxyTimeouts()
    ) as proxy:
        yield proxy


@asynccontextmanager
async def supervised(
    service: ServiceSpec, *, stop_seconds: float = 20
) -> AsyncIterator[tuple[Supervisor, Proxy, io.BytesIO]]:
    """One real service under the real supervisor, behind the real proxy (on a free port), and
    what the supervisor printed; stopped (within ``stop_seconds``) on the way out."""
    spec = StackSpec(
        manifest_path=service.cwd / "devstack.yaml",
        services={service.name: service},
        proxy=ProxySpec(port=0),
    )
    ports = dict(zip(spec.services, free_ports(1), strict=True))
    output = io.BytesIO()
    printer = Printer(spec.services, stream=output, colour=False)
    supervisor = Supervisor(spec, ports, printer, starter=SpawningStarter(Spawner(ports)))
    running = asyncio.ensure_future(supervisor.run())
    try:
        await asyncio.wait_for(supervisor.started, 20)
        context = ServerCertificate(load_or_create_ca(), certificate_hosts(spec)).context
        async with Proxy(spec, supervisor, context, port=0) as proxy:
            yield supervisor, proxy, output
    finally:
        supervisor.request_shutdown()
        await asyncio.wait_for(running, stop_seconds)


@asynccontextmanager
async def verified_client(**kwargs: object) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts devstack's CA only, and does not touch bodies or cookies."""
    connector = aiohttp.TCPConnector(ssl=client_context())
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        **kwargs,  # type: ignore[arg-type]
    ) as session:
        yield session


LANES = ("fast", "full")
"""The two ways ``devstack up`` runs the proxy: ``fast``, plain requests on the fast lane and
the rest handed over to the full proxy; ``full``, every request on the full proxy, as with
``-v`` (only the full proxy writes the access log)."""


@contextmanager
def use_lane(lane: str) -> Iterator[None]:
    """Proxies started inside run as ``devstack up`` runs them in ``lane`` (one of
    :data:`LANES`), on uvloop. The event loop policy and the access log's level are set on the
    way in and restored on the way out."""
    if lane not in LANES:
        raise ValueError(f"no lane {lane!r}: expected one of {', '.join(LANES)}")
    access_log = logging.getLogger("devstack.access")
    level = access_log.level
    if lane == "full":
        access_log.setLevel(logging.DEBUG)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(None)
        access_log.setLevel(level)


async def _serve_forever(upstream_port: int) -> None:
    directory = StandInDirectory({"web": upstream_port})
    spec = make_spec(Path.cwd(), {"web": upstream_port})
    async with running_proxy(spec, directory) as proxy:
        print(proxy.port, flush=True)
        loop = asyncio.get_running_loop()
        # Serve until the test closes our stdin (blocking read kept off the loop).
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    with use_lane(sys.argv[2]):
        asyncio.run(_serve_forever(int(sys.argv[1])))
