"""Websockets and event streams open through the proxy when their service reloads are closed
cleanly: the client's websocket gets a close frame, its event stream ends (the last chunk of a
chunked answer, not a cut connection), and reconnecting reaches the new process.

Real processes, the real supervisor and the real proxy, in both lanes (an event stream is a
plain GET, relayed on the fast lane when it is on; websockets always go through the full
proxy) and both reload modes. The service is an ordinary aiohttp app that keeps both open and
does nothing about them on SIGTERM (its event stream sends a keep-alive comment every 0.1 s, as
event streams do): aiohttp's ``run_app`` then waits for their handlers, so only the proxy
letting go of them ends the old process before its stop timeout, set long here so that a SIGKILL
cannot pass for a clean close.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from devstack.manifest.spec import ReloadMode, ServiceSpec
from devstack.proxy.departure import is_leaving
from devstack.proxy.server import Proxy
from devstack.run.supervisor import Supervisor
from devstack.status import ServiceState, ServiceStatus
from devstack.tls.ca import client_context
from tests.component.test_proxy_harness import (
    LANES,
    StandInDirectory,
    make_spec,
    running_proxy,
    supervised,
    upstream,
    use_lane,
    verified_client,
)
from tests.conditions import async_wait_until

STOP_TIMEOUT_SECONDS = 30.0
"""Far longer than any wait below: a stream ended by the SIGKILL after it is a failure."""
CLOSED_WITHIN_SECONDS = 5.0
SERVICE = """\
import asyncio, os
from aiohttp import web


async def socket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"pid": os.getpid()})
    async for _ in ws:
        pass
    return ws


async def events(request):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(f"data: {os.getpid()}\\n\\n".encode())
    while True:  # open until the client goes: its keep-alive comment fails to go out
        await asyncio.sleep(0.1)
        await response.write(b":\\n\\n")


app = web.Application()
app.router.add_get("/ws", socket)
app.router.add_get("/events", events)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None)
"""


@dataclass
class Stack:
    supervisor: Supervisor
    proxy: Proxy
    service: Path
    output: io.BytesIO

    @property
    def printed(self) -> str:
        return self.output.getvalue().decode()


@asynccontextmanager
async def running_stack(root: Path, mode: ReloadMode) -> AsyncIterator[Stack]:
    service = root / "service.py"
    service.write_text(SERVICE)
    service_spec = ServiceSpec(name="web", command=f"{sys.executable} service.py", cwd=root,
                               reload=mode, stop_timeout_seconds=STOP_TIMEOUT_SECONDS)  # fmt: skip
    async with supervised(service_spec, stop_seconds=STOP_TIMEOUT_SECONDS + 10) as (
        supervisor, proxy, output
    ):
        yield Stack(supervisor, proxy, service, output)


async def open_socket(session: aiohttp.ClientSession, stack: Stack
                      ) -> tuple[aiohttp.ClientWebSocketResponse, int]:  # fmt: skip
    """A websocket to the service through the proxy, and the pid of the process it reached."""
    ws = await session.ws_connect(stack.proxy.url.replace("https", "wss") + "/ws",
                                  ssl=client_context(), autoping=False)  # fmt: skip
    async with asyncio.timeout(10):
        hello = await ws.receive()
    assert hello.type is aiohttp.WSMsgType.TEXT, hello
    return ws, json.loads(hello.data)["pid"]


async def open_stream(session: aiohttp.ClientSession, stack: Stack
                      ) -> tuple[aiohttp.ClientResponse, int]:  # fmt: skip
    """An event stream from the service through the proxy, and the pid of its process."""
    response = await session.get(f"{stack.proxy.url}/events")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    async with asyncio.timeout(10):
        line = await response.content.readline()
    assert line.startswith(b"data: "), line
    return response, int(line.removeprefix(b"data: "))


@pytest.mark.parametrize("mode", [ReloadMode.RESTART, ReloadMode.BLUE_GREEN])
@pytest.mark.parametrize("lane", LANES)
def test_a_reload_closes_websockets_and_ends_event_streams_cleanly(
    tmp_path: Path, lane: str, mode: ReloadMode
) -> None:
    async def main() -> None:
        # Two clients, as a page's socket and its event stream use two connections.
        async with running_stack(tmp_path, mode) as stack, verified_client() as sockets, \
                verified_client() as streams:  # fmt: skip
            ws, old_pid = await open_socket(sockets, stack)
            stream, stream_pid = await open_stream(streams, stack)
            assert stream_pid == old_pid

            stack.supervisor.reload("web", (str(stack.service),))

            try:
                async with asyncio.timeout(CLOSED_WITHIN_SECONDS):
                    closing = await ws.receive()
            except TimeoutError:
                raise AssertionError("the websocket was left open after the reload") from None
            assert closing.type is aiohttp.WSMsgType.CLOSE, f"no close frame: {closing}"
            assert closing.data in (1001, 1012), f"close code {closing.data} ({closing.extra})"
            try:
                async with asyncio.timeout(CLOSED_WITHIN_SECONDS):
                    rest = await stream.content.read()  # a cut stream raises ClientPayloadError
            except TimeoutError:
                raise AssertionError("the event stream was left open after the reload") from None
            assert (b"\n" + rest).endswith(b"\n\n"), rest  # whole events, then the end
            stream.release()

            await async_wait_until(
                lambda: "web: reloaded in" in stack.printed, timeout=CLOSED_WITHIN_SECONDS,
                message=f"the reload to end before the stop timeout; printed:\n{stack.printed}",
            )  # fmt: skip
            new_pid = stack.supervisor.status("web").pid
            assert new_pid != old_pid
            ws, pid = await open_socket(sockets, stack)
            assert pid == new_pid, "a new websocket reaches the new process"
            await ws.close()
            stream, pid = await open_stream(streams, stack)
            assert pid == new_pid, "a new event stream reaches the new process"
            stream.close()

    with use_lane(lane):
        asyncio.run(main())


def broken_app() -> web.Application:
    """A service whose connections break without a close frame or the end of the stream."""

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        assert request.transport is not None
        request.transport.close()
        return ws

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        assert request.transport is not None
        request.transport.close()  # no last chunk: the answer is incomplete
        return response

    app = web.Application()
    app.router.add_get("/ws", socket)
    app.router.add_get("/events", events)
    return app


@pytest.mark.parametrize("lane", LANES)
def test_a_service_that_breaks_off_gets_the_client_a_close_frame_and_a_cut_stream(
    tmp_path: Path, lane: str
) -> None:
    async def main() -> None:
        async with upstream(broken_app()) as port:
            spec = make_spec(tmp_path, {"web": port})
            async with running_proxy(spec, StandInDirectory({"web": port})) as proxy, \
                    verified_client() as client:  # fmt: skip
                ws = await client.ws_connect(proxy.url.replace("https", "wss") + "/ws")
                async with asyncio.timeout(10):
                    assert (await ws.receive()).data == "hello"
                    closing = await ws.receive()
                assert closing.type is aiohttp.WSMsgType.CLOSE, f"no close frame: {closing}"
                assert (closing.data, closing.extra) == (1001, "service went away")
                async with client.get(f"{proxy.url}/events") as stream:
                    with pytest.raises(aiohttp.ClientPayloadError):
                        async with asyncio.timeout(10):
                            await stream.content.read()

    with use_lane(lane):
        asyncio.run(main())


def status(state: ServiceState, pid: int | None = 1, port: int = 3000) -> ServiceStatus:
    return ServiceStatus(name="web", state=state, port=port, pid=pid)


READY, STARTING = ServiceState.READY, ServiceState.STARTING


@pytest.mark.parametrize(
    ("before", "now", "leaving"),
    [
        (status(READY), status(ServiceState.RESTARTING), True),  # reload: restart
        (status(READY), status(ServiceState.STOPPING), True),  # stop, shutdown
        (status(READY), status(READY, pid=2, port=3001), True),  # blue-green switch
        (status(READY), status(STARTING, pid=2), True),  # a restart seen late
        (status(READY), status(ServiceState.BACKOFF, pid=None), True),  # crashed
        (status(STARTING), status(READY), False),  # the same process, now ready
        (status(READY), status(READY), False),
        (status(ServiceState.RESTARTING), status(STARTING, pid=2), False),  # already told
        (status(ServiceState.PENDING, pid=None), status(STARTING), False),
    ],
)
def test_when_a_process_is_leaving(before: ServiceStatus, now: ServiceStatus,
                                   leaving: bool) -> None:  # fmt: skip
    assert is_leaving(before, now) is leaving
