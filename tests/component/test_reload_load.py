"""No request fails because of a reload: real processes, the real supervisor and the real proxy.

A small service answers its version (read from a file at start) and the size of the body it
got; it shuts down gracefully on SIGTERM (stops listening, closes idle keep-alive connections,
finishes the requests it is answering). Clients send requests through the HTTPS proxy without
pause, verifying devstack's CA: plain GETs on one session (the fast lane, with its pooled
keep-alive connections) and small POSTs on another (handed over to the full proxy), while the
test reloads the service ten times in a row through :meth:`Supervisor.reload`, in both reload
modes. Every answer must be a 200, each client must never see an older version after a newer
one, and every new version must answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from devstack.manifest.spec import ReloadMode, ServiceSpec
from devstack.proxy.server import Proxy
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState
from tests.component.test_proxy_harness import supervised, use_lane, verified_client
from tests.conditions import async_wait_until

RELOADS = 10
GET_CLIENTS = 3
POST_CLIENTS = 2
SERVICE = """\
import asyncio, os, pathlib, signal, sys

VERSION = pathlib.Path("version.txt").read_text().strip()
WORK_SECONDS = 0.005  # each answer takes a moment, so requests are in flight at a reload
if VERSION == "broken":
    print("RuntimeError: version 'broken' does not start", flush=True)
    sys.exit(1)


async def main():
    stopping = asyncio.Event()
    idle, handlers = set(), set()

    async def serve(reader, writer):
        handlers.add(asyncio.current_task())
        try:
            while not stopping.is_set():
                idle.add(writer)
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                idle.discard(writer)
                length = 0
                for line in head.split(b"\\r\\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                await asyncio.sleep(WORK_SECONDS)
                answer = f"{VERSION} {len(body)}".encode()
                writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n"
                             b"Content-Length: %d\\r\\n\\r\\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            idle.discard(writer)
            writer.close()
            handlers.discard(asyncio.current_task())

    server = await asyncio.start_server(serve, "127.0.0.1", int(os.environ["PORT"]))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    print(f"version {VERSION} listening", flush=True)
    await stopping.wait()
    server.close()  # no new connections; idle keep-alive ones are closed, busy ones finish
    for writer in list(idle):
        writer.close()
    await asyncio.gather(*handlers, return_exceptions=True)
    print(f"version {VERSION} drained", flush=True)


asyncio.run(main())
"""


@dataclasses.dataclass
class Load:
    """What the clients saw."""

    answers: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    versions: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Per client, the versions answered, in order (repeats collapsed)."""
    latest: str = ""

    def saw(self, client: str, version: str) -> None:
        self.answers += 1
        self.latest = version
        seen = self.versions.setdefault(client, [])
        if not seen or seen[-1] != version:
            seen.append(version)


@dataclasses.dataclass
class Stack:
    supervisor: Supervisor
    proxy: Proxy
    root: Path
    output: io.BytesIO
    load: Load = dataclasses.field(default_factory=Load)
    generation: int = 0
    """Bumped after each reload: the GET clients open new connections, which start on the fast
    lane (a connection handed over to the full proxy stays there)."""

    @property
    def printed(self) -> str:
        return self.output.getvalue().decode()

    async def reload_to(self, version: str) -> None:
        """Write ``version`` and reload while GETs are on the fast lane; return once a client
        got an answer from it."""
        lane = self.proxy.fast_lane
        assert lane is not None
        await async_wait_until(lambda: lane.connections, message="GETs on the fast lane")
        (self.root / "version.txt").write_text(version)
        self.supervisor.reload("web", (str(self.root / "version.txt"),))
        await async_wait_until(
            lambda: self.load.latest == version,
            timeout=20,
            message=f"version {version} to answer; printed:\n{self.printed}",
        )
        await async_wait_until(
            lambda: self.supervisor.status("web").is_ready,
            message=f"web to be ready on version {version}",
        )
        self.generation += 1


TIMEOUT = aiohttp.ClientTimeout(total=30)


async def _request(
    stack: Stack, name: str, session: aiohttp.ClientSession, body: bytes | None
) -> None:
    url = f"{stack.proxy.url}/v"
    try:
        request = session.get(url) if body is None else session.post(url, data=body)
        async with request as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        stack.load.failures.append(f"{name}: {exc!r}")
        return
    if response.status != 200:
        stack.load.failures.append(f"{name}: {response.status} {text[:300]}")
        return
    version, _, size = text.partition(" ")
    assert int(size) == len(body or b""), text
    stack.load.saw(name, version)


async def _gets(stack: Stack, name: str, done: asyncio.Event) -> None:
    """Plain GETs (the fast lane), on new connections after each reload."""
    while not done.is_set():
        generation = stack.generation
        async with verified_client(timeout=TIMEOUT) as session:
            while not done.is_set() and stack.generation == generation:
                await _request(stack, name, session, None)


async def _posts(stack: Stack, name: str, done: asyncio.Event) -> None:
    """Small POSTs (handed over to the full proxy)."""
    async with verified_client(timeout=TIMEOUT) as session:
        while not done.is_set():
            await _request(stack, name, session, b"x" * 100)


@asynccontextmanager
async def loaded_stack(root: Path, mode: ReloadMode) -> AsyncIterator[Stack]:
    """The service at version 1 behind the proxy, under load from every client."""
    (root / "service.py").write_text(SERVICE)
    (root / "version.txt").write_text("1")
    web = ServiceSpec(name="web", command=f"{sys.executable} service.py", cwd=root, reload=mode)
    async with supervised(web) as (supervisor, proxy, output):
        stack = Stack(supervisor, proxy, root, output)
        done = asyncio.Event()
        clients = [
            asyncio.ensure_future(_gets(stack, f"get{i}", done)) for i in range(GET_CLIENTS)
        ] + [
            asyncio.ensure_future(_posts(stack, f"post{i}", done)) for i in range(POST_CLIENTS)
        ]
        try:
            await async_wait_until(lambda: stack.load.answers >= 20, message="a first load")
            yield stack
        finally:
            done.set()
            await asyncio.wait_for(asyncio.gather(*clients), 30)


def run(root: Path, mode: ReloadMode, scenario: Callable[[Stack], Awaitable[None]]) -> Stack:
    async def main() -> Stack:
        async with loaded_stack(root, mode) as stack:
            await scenario(stack)
        return stack

    with use_lane("fast"):
        stack = asyncio.run(main())
    assert stack.load.failures == [], "\n".join(stack.load.failures[:20]) + "\n" + stack.printed
    for client, versions in stack.load.versions.items():
        assert versions == sorted(versions, key=int), f"{client} went back a version: {versions}"
    return stack


@pytest.mark.parametrize("mode", [ReloadMode.RESTART, ReloadMode.BLUE_GREEN])
def test_no_request_fails_during_ten_reloads_in_a_row(tmp_path: Path, mode: ReloadMode) -> None:
    async def scenario(stack: Stack) -> None:
        for version in range(2, RELOADS + 2):
            await stack.reload_to(str(version))

    stack = run(tmp_path, mode, scenario)
    printed = stack.printed
    assert printed.count("web: reloading (version.txt changed)") == RELOADS
    assert printed.count("web: reloaded in") == RELOADS
    assert stack.load.latest == str(RELOADS + 1)
    assert stack.load.answers > 100


def test_blue_green_keeps_the_old_version_serving_when_the_new_one_does_not_start(
    tmp_path: Path,
) -> None:
    async def scenario(stack: Stack) -> None:
        await stack.reload_to("2")
        (stack.root / "version.txt").write_text("broken")
        stack.supervisor.reload("web", ("version.txt",))
        await async_wait_until(
            lambda: stack.supervisor.status("web").has_failed_reload,
            timeout=20,
            message="the new version's failure",
        )
        failed = stack.supervisor.status("web")
        assert failed.state is ServiceState.READY
        assert failed.reason == "reload failed: the new version exited with code 1"
        assert failed.last_lines == ("RuntimeError: version 'broken' does not start",)
        answers = stack.load.answers
        await async_wait_until(
            lambda: stack.load.answers >= answers + 50, message="more answers after the failure"
        )
        assert stack.load.latest == "2", "the old version keeps answering"
        await stack.reload_to("3")  # the fix
        assert stack.supervisor.status("web").reason is None

    stack = run(tmp_path, ReloadMode.BLUE_GREEN, scenario)
    assert (
        "web: reload failed: the new version exited with code 1 (last output: RuntimeError: "
        "version 'broken' does not start); the previous version keeps serving on port"
    ) in stack.printed
