"""Upstream faults, on both lanes: a service that answers wrongly, partly or not at all gets
the client a 502 page (504 for silence), or a response that is visibly cut (the connection
closes before the framing says the body is complete); never a complete wrong answer. The
proxy stays up: after every fault the next request is served.

Complements tests/component/test_proxy.py (refused, never answering, an answer cut short by
its length, garbage instead of a status line, a pooled connection the service closed,
``Expect: 100-continue``), which these do not repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from devstack.manifest.spec import RouteSpec
from tests.component.test_proxy_harness import (
    StandInDirectory,
    make_spec,
    running_proxy,
    verified_client,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FAULTS: dict[str, tuple[bytes, str]] = {
    # name: (what the service writes before it closes, what the client must see)
    "chunked-cut": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "cut"),
    "chunked-cut-in-a-chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nhello",
        "cut",
    ),
    "chunk-size-junk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        "cut",
    ),
    "length-cut-in-the-head": (b"HTTP/1.1 200 OK\r\nContent-Len", "502"),
    "closed-at-once": (b"", "502"),
    "no-status-line": (b"hello\r\n\r\n", "502"),
    "status-out-of-range": (b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    # found by the answer fuzzer: passed on by the fast lane, a 500 and a traceback on the full
    "nul-in-the-reason": (b"HTTP/1.1 404 Not\x00Found\r\nContent-Length: 4\r\n\r\nnope", "502"),
    "cr-in-the-reason": (b"HTTP/1.1 404 Not\rFound\r\nContent-Length: 4\r\n\r\nnope", "502"),
    "status-junk": (b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok", "502"),
    "field-without-colon": (b"HTTP/1.1 200 OK\r\nBad Field\r\nContent-Length: 2\r\n\r\nok", "502"),
    "nul-in-a-field": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "502"),
    "cr-in-a-field": (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", "502"),
    "space-before-colon": (b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok", "502"),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "502"),
    "two-lengths": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nokxyz",
        "502",
    ),
    "length-negative": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", "502"),
    "length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        "502",
    ),
    "huge-field": (b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * (1024 * 1024) + b"\r\n\r\n", "502"),
    "interim-then-close": (b"HTTP/1.1 100 Continue\r\n\r\n", "502"),
    "switching-protocols-unasked": (b"HTTP/1.1 101 Switching Protocols\r\n\r\nhello", "502"),
}


@asynccontextmanager
async def faulty_service() -> AsyncIterator[int]:
    """A service answering ``/<fault>`` with that fault's bytes, then closing; anything else
    with a plain ``ok``, kept alive."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                fault = FAULTS.get(target.removeprefix("/api/"))
                writer.write(OK if fault is None else fault[0])
                await writer.drain()
                if fault is not None:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def outcome(client: aiohttp.ClientSession, url: str) -> str:
    """``502``/``504`` (a proxy page), ``cut`` (a response whose body never completes), or
    what else came: ``<status> <body>``, a complete answer."""
    try:
        async with client.get(url) as resp:
            if resp.status in (502, 504) and resp.headers.get("X-Devstack") == "proxy":
                await resp.read()
                return str(resp.status)
            body = await resp.read()
            return f"{resp.status} {body[:60]!r}"
    except aiohttp.ClientPayloadError:
        return "cut"
    except aiohttp.ClientResponseError as exc:  # the proxy passed on what the client refused
        return f"passed on: {exc.message[:60]}"


def test_every_fault_is_a_502_or_a_cut_and_the_proxy_stays_up(tmp_path: Path, lane: str) -> None:
    async def main() -> dict[str, str]:
        wrong = {}
        async with faulty_service() as port:
            spec = make_spec(tmp_path, {"api": port}, (RouteSpec(path="/api", service="api"),))
            async with (
                running_proxy(spec, StandInDirectory({"api": port})) as proxy,
                verified_client() as client,
            ):
                for name, (_, expected) in FAULTS.items():
                    got = await outcome(client, f"{proxy.url}/api/{name}")
                    if got != expected:
                        wrong[name] = got
                    assert await outcome(client, f"{proxy.url}/api/fine") == "200 b'ok'", name
        return wrong

    assert asyncio.run(main()) == {}


def test_a_pooled_connection_closed_by_the_service_never_loses_or_repeats_a_post(
    tmp_path: Path, lane: str
) -> None:
    # The service answers and closes without saying so (no Connection: close): the proxy's
    # pooled connection is dead when the next request comes. Each POST must reach the service
    # exactly once, and each client get its own answer.
    bodies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(f.split(b":")[1]) for f in head.split(b"\r\n")
                          if f.lower().startswith(b"content-length:"))  # fmt: skip
            body = await reader.readexactly(length)
            bodies.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            spec = make_spec(tmp_path, {"api": port}, (RouteSpec(path="/api", service="api"),))
            async with (
                running_proxy(spec, StandInDirectory({"api": port})) as proxy,
                verified_client() as client,
            ):
                for i in range(20):
                    data = b"post %d" % i
                    async with client.post(f"{proxy.url}/api/x", data=data) as resp:
                        assert (resp.status, await resp.read()) == (200, data), i
        finally:
            server.close()
            await server.wait_closed()
        assert bodies == [b"post %d" % i for i in range(20)]

    asyncio.run(main())
