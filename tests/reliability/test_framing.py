"""Request framing, on both lanes and under both of aiohttp's parsers: every ambiguous,
malformed or unsupported way to say where a request ends gets a 4xx (5xx for what is
well-formed but not supported) from the proxy itself, the connection closes, and no service
receives a byte (the stubs of tests/component/test_front_door.py record every byte).

What tests/component/test_front_door.py already proves on both lanes (head limits, Host forms,
HTTP/1.0 with Transfer-Encoding, CONNECT, the absolute form) is repeated here only as a row of
the table, to run it under the pure-Python parser too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.component.test_front_door import FrontDoor, connect, front_door
from tests.conditions import async_wait_until
from tests.reliability.raw import (
    CHUNKED_SMUGGLE,
    SMUGGLED,
    get,
    head_problems,
    post,
    split_requests,
)

REFUSED: dict[str, tuple[bytes, int | set[int]]] = {
    # Content-Length and Transfer-Encoding together, in either order (RFC 9112 section 6.3)
    "length-then-chunked": (
        post(
            b"Content-Length: %d" % len(CHUNKED_SMUGGLE),
            b"Transfer-Encoding: chunked",
            body=CHUNKED_SMUGGLE,
        ),
        400,
    ),
    "chunked-then-length": (
        post(
            b"Transfer-Encoding: chunked",
            b"Content-Length: %d" % len(CHUNKED_SMUGGLE),
            body=CHUNKED_SMUGGLE,
        ),
        400,
    ),
    # duplicate or malformed lengths
    "two-lengths": (post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), 400),
    "same-length-twice": (post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), 400),
    "length-list": (post(b"Content-Length: 5, 5", body=b"hello"), 400),
    "length-plus": (post(b"Content-Length: +5", body=b"hello"), 400),
    "length-negative": (post(b"Content-Length: -5", body=b"hello"), 400),
    "length-hex": (post(b"Content-Length: 0x5", body=b"hello"), 400),
    "length-two-numbers": (post(b"Content-Length: 5 5", body=b"hello"), 400),
    "length-underscore": (post(b"Content-Length: 1_0", body=b"helloworld"), 400),
    "length-beyond-64-bits": (post(b"Content-Length: 99999999999999999999999", body=b"x"), 400),
    "length-empty": (post(b"Content-Length: ", body=b"hello"), 400),
    "length-in-a-get": (get(b"Content-Length: %d" % len(SMUGGLED)) + SMUGGLED, 400),
    # obfuscated Transfer-Encoding
    "coding-xchunked": (post(b"Transfer-Encoding: xchunked", body=CHUNKED_SMUGGLE), 400),
    "coding-space-before-colon": (post(b"Transfer-Encoding : chunked", body=CHUNKED_SMUGGLE), 400),
    "coding-chunked-identity": (
        post(b"Transfer-Encoding: chunked, identity", body=CHUNKED_SMUGGLE),
        400,
    ),
    "coding-identity": (post(b"Transfer-Encoding: identity", body=CHUNKED_SMUGGLE), 400),
    "coding-chunked-twice": (
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=CHUNKED_SMUGGLE),
        400,
    ),
    "coding-gzip-chunked": (post(b"Transfer-Encoding: gzip, chunked", body=CHUNKED_SMUGGLE), 501),
    "coding-vertical-tab": (post(b"Transfer-Encoding:\x0bchunked", body=CHUNKED_SMUGGLE), 400),
    "coding-folded": (post(b"Transfer-Encoding:\r\n chunked", body=CHUNKED_SMUGGLE), 400),
    "chunked-in-http-1.0": (
        post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n", version=b"1.0"),
        400,
    ),
    # malformed chunks
    "chunk-size-negative": (
        post(b"Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "chunk-size-junk": (
        post(b"Transfer-Encoding: chunked", body=b"5 x\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "chunk-bare-lf": (post(b"Transfer-Encoding: chunked", body=b"5\nhello\n0\n\n"), 400),
    "chunk-without-crlf": (post(b"Transfer-Encoding: chunked", body=b"5\r\nhelloXX0\r\n\r\n"), 400),
    # line and field syntax
    "obs-fold": (post(b"X-Folded: a\r\n b", b"Content-Length: 0"), 400),
    "bare-lf-endings": (b"GET /api/x HTTP/1.1\nHost: {host}\nX-A: 1\n\n", 400),
    "bare-lf-in-a-field": (get(b"X-A: a\nTransfer-Encoding: chunked"), 400),
    "bare-cr-in-a-field": (get(b"X-A: a\rb"), 400),
    "nul-in-a-field": (get(b"X-A: a\x00b"), 400),
    "nul-in-the-target": (get(target=b"/api/x\x00"), 400),
    "space-in-a-name": (get(b"X A: b"), 400),
    "space-before-colon": (b"GET /api/x HTTP/1.1\r\nHost : {host}\r\n\r\n", 400),
    "empty-name": (get(b": b"), 400),
    "two-hosts": (get(b"Host: {host}"), 400),
    "no-host": (b"GET /api/x HTTP/1.1\r\n\r\n", 400),
    "method-junk": (get(line=b"G(ET /api/x HTTP/1.1"), 400),
    # versions
    "http-0.9": (b"GET /api/x\r\n\r\n", {400, 505}),  # llhttp: a version not supported
    "http-2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "version-2.0": (get(line=b"GET /api/x HTTP/2.0"), 505),
    "version-junk": (get(line=b"GET /api/x HTTP/1.1.1"), 400),
    # not a forward proxy; limits
    "absolute-form-foreign": (get(target=b"http://evil.example/api/x"), 403),
    "connect": (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405),
    # found by the proxy fuzzer: aiohttp could not build these and left the connection hanging
    "connect-without-target": (b"CONNECT \r\n\r\n", {400, 505}),
    "absolute-form-bad-punycode": (get(target=b"https://xn--a.example/api/x"), 403),
    "long-request-line": (get(target=b"/api/" + b"x" * 9000), 414),
    "long-field": (get(b"X-Big: " + b"y" * 9000), 431),
    "many-fields": (get(*(b"X-%d: 1" % i for i in range(150))), 431),
}
PYTHON_PARSER_FLAWS = {
    "chunk-size-beyond-64-bits": (
        post(b"Transfer-Encoding: chunked", body=b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    "lower-case-method": (get(line=b"get /api/x HTTP/1.1"), 400),
}
"""Refused by the C parser, let through by aiohttp's pure-Python one, and out of devstack's
reach (the chunk sizes and the method as sent never reach devstack's code): a body that the
proxy frames anew for the service, and a method upper-cased."""


FULL_LANE_PIPELINE = (
    "aiohttp's server drops the requests it parsed from the same read as a malformed one and "
    "answers only the 400: the client's first request gets the refusal meant for its second"
)


async def refusal(door: FrontDoor, request: bytes) -> tuple[int, str]:
    """Send ``request``: the proxy's status, and its Connection header."""
    async with connect(door) as client:
        await client.send(request.replace(b"{host}", door.host.encode()))
        answer = await client.answer()
        assert answer.headers.get("x-devstack") == "proxy", answer.headers
        return answer.status, answer.headers.get("connection", "")


def test_requests_of_ambiguous_framing_are_refused_before_any_service_sees_them(
    tmp_path: Path, lane: str, parser: str
) -> None:
    async def main() -> list[str]:
        wrong = []
        async with front_door(tmp_path) as door:
            for case, (request, expected) in REFUSED.items():
                statuses = expected if isinstance(expected, set) else {expected}
                status, connection = await refusal(door, request)
                if status not in statuses:
                    wrong.append(f"{case}: {status}, expected {statuses}")
                elif status in (400, 501, 505) and connection != "close":
                    wrong.append(f"{case}: the connection is kept open after a refusal")
                if door.forwarded:
                    wrong.append(f"{case}: reached a service: {door.forwarded[:200]!r}")
                    door.a.received.clear()
                    door.b.received.clear()
        return wrong

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("case", PYTHON_PARSER_FLAWS)
def test_what_only_the_c_parser_refuses(tmp_path: Path, lane: str, parser: str, case: str) -> None:
    if parser == "python":
        pytest.xfail("aiohttp's pure-Python parser accepts it; devstack never sees the raw bytes")
    request, status = PYTHON_PARSER_FLAWS[case]

    async def main() -> None:
        async with front_door(tmp_path) as door:
            assert (await refusal(door, request))[0] == status
            assert door.forwarded == b""

    asyncio.run(main())


def test_pipelined_requests_reach_each_their_service_in_order(
    tmp_path: Path, lane: str, parser: str
) -> None:
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            requests = [
                get(target=b"/api/x"),
                get(target=b"/api/admin/y"),
                post(b"Content-Length: 5", body=b"hello"),
                get(target=b"/startup/z"),
                post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
                get(target=b"/api/last"),
            ]
            await client.send(b"".join(requests).replace(b"{host}", door.host.encode()))
            answers = [await client.answer() for _ in requests]
            assert [(a.json()["service"], a.json()["line"]) for a in answers] == [
                ("a", "GET /api/x HTTP/1.1"),
                ("b", "GET /api/admin/y HTTP/1.1"),
                ("a", "POST /api/x HTTP/1.1"),
                ("b", "GET /z HTTP/1.1"),
                ("a", "POST /api/x HTTP/1.1"),
                ("a", "GET /api/last HTTP/1.1"),
            ]
            for stub in (door.a, door.b):
                for head, _ in split_requests(bytes(stub.received)):
                    assert head_problems(head) == [], head

    asyncio.run(main())


def test_a_refused_request_ends_the_pipeline(
    tmp_path: Path, lane: str, parser: str, request: pytest.FixtureRequest
) -> None:
    if lane == "full":
        request.applymarker(pytest.mark.xfail(strict=True, reason=FULL_LANE_PIPELINE))

    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            pipeline = get(target=b"/api/first") + get(b"X-A: a\rb") + SMUGGLED
            await client.send(pipeline.replace(b"{host}", door.host.encode()))
            assert (await client.answer()).json()["line"] == "GET /api/first HTTP/1.1"
            assert (await client.answer()).status == 400
            assert await client.is_closed()
            assert door.a.lines == ["GET /api/first HTTP/1.1"] and door.b.lines == []

    asyncio.run(main())


def test_a_body_shorter_than_its_length_never_completes_upstream(
    tmp_path: Path, lane: str, parser: str
) -> None:
    # The client promises 10 bytes, sends 5 and goes away. The service may see the 5, but its
    # connection must be closed, never reused: the next request's bytes would complete the
    # body and the service would answer a request nobody sent.
    async def main() -> None:
        async with front_door(tmp_path) as door:
            async with connect(door) as client:
                request = post(b"Content-Length: 10", body=b"hello")
                await client.send(request.replace(b"{host}", door.host.encode()))
                await async_wait_until(
                    lambda: door.a.received.endswith(b"hello"), message="the partial body"
                )
            await async_wait_until(
                lambda: door.a.closed == 1, message="the service's connection to be closed"
            )
            async with connect(door) as client:
                await client.send(get(target=b"/api/next").replace(b"{host}", door.host.encode()))
                assert (await client.answer()).json()["line"] == "GET /api/next HTTP/1.1"
            assert door.a.lines == ["POST /api/x HTTP/1.1", "GET /api/next HTTP/1.1"]

    asyncio.run(main())


@pytest.mark.parametrize("target", [b"evil.example:443", b"/api/x"])
def test_a_refused_connect_closes_the_connection(
    tmp_path: Path, lane: str, parser: str, target: bytes
) -> None:
    # Found by the proxy fuzzer: under the pure-Python parser everything after a CONNECT's head
    # is its tunnel, and the server waited for that endless body (10 s) before closing.
    async def main() -> None:
        async with front_door(tmp_path) as door, connect(door) as client:
            await client.send(get(line=b"CONNECT " + target + b" HTTP/1.1").replace(
                b"{host}", door.host.encode()))  # fmt: skip
            assert (await client.answer()).status == 405
            assert await client.is_closed()
            assert door.forwarded == b""

    asyncio.run(main())
