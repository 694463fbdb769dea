"""The proxy under randomized answers from a service, on both lanes: whatever the service
writes, the client gets a 502 page, a visibly cut response, or exactly the answer a strict
HTTP/1.1 reader finds in the service's bytes (its status and body); never a complete answer
that differs from it. ``DEVSTACK_FUZZ_EXAMPLES`` (default 150) and ``DEVSTACK_FUZZ_SEED`` as
for tests/reliability/test_proxy_fuzz.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
from pathlib import Path

import aiohttp
import pytest

from devstack.manifest.spec import RouteSpec
from tests.component.test_proxy_harness import (
    StandInDirectory,
    make_spec,
    running_proxy,
    verified_client,
)

EXAMPLES = int(os.environ.get("DEVSTACK_FUZZ_EXAMPLES", "150"))
SEED = int(os.environ.get("DEVSTACK_FUZZ_SEED", "0")) or (
    secrets.randbits(32) if "DEVSTACK_FUZZ_EXAMPLES" in os.environ else 20261129
)
"""The default run's seed is fixed, so the suite gives the same verdict on every machine; a deep
run (``DEVSTACK_FUZZ_EXAMPLES`` set) draws a new one, printed, unless ``DEVSTACK_FUZZ_SEED``."""
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?: [\t !-~\x80-\xff]*)?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t !-~\x80-\xff]*?)[ \t]*")


def strict_answer(data: bytes) -> tuple[int, bytes] | None:
    """The final answer (status, body) a strict reader finds in ``data``, the service having
    closed after it; None when it is not clean HTTP/1.1 (nginx would not pass it on either).

    What RFC 9112 lets a reader be lenient about is read its way: empty lines before a status
    line are skipped (section 2.2), any three-digit status is taken (the proxy passes on what
    the service says), and a body whose last transfer coding is not chunked lasts until the
    close (section 6.3)."""
    while True:
        head = _strict_head(data)
        if head is None:
            return None
        status, fields, data = head
        if status == 101:
            return None
        if not 100 <= status < 200:
            break
    lengths, codings = fields.get(b"content-length", []), fields.get(b"transfer-encoding", [])
    if status in (204, 304):
        return status, b""  # no content, whatever the fields say (RFC 9112 section 6.3)
    if codings:
        if lengths:
            return None
        last = b",".join(codings).split(b",")[-1].strip().lower()
        return _chunked(status, data) if last == b"chunked" else (status, data)
    if lengths:
        if len(lengths) > 1 or not lengths[0].isdigit() or len(data) < int(lengths[0]):
            return None
        return status, data[: int(lengths[0])]
    return status, data  # delimited by the close


def _strict_head(data: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes] | None:
    """(status, fields by lower-case name, what follows the head), or None."""
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end == -1:
        return None
    line, *lines = data[:end].split(b"\r\n")
    status_match = _STATUS_LINE.fullmatch(line)
    if status_match is None:
        return None
    fields: dict[bytes, list[bytes]] = {}
    for field in lines:
        match = _FIELD.fullmatch(field)
        if match is None:
            return None
        fields.setdefault(match.group(1).lower(), []).append(match.group(2))
    return int(status_match.group(1)), fields, data[end + 4 :]


def _chunked(status: int, data: bytes) -> tuple[int, bytes] | None:
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", line):
            return None
        size = int(line, 16)
        if size == 0:
            return (status, body) if data.startswith(b"\r\n") else None
        if len(data) < size + 2 or data[size : size + 2] != b"\r\n":
            return None
        body, data = body + data[:size], data[size + 2 :]


BASES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
    b"HTTP/1.0 200 OK\r\n\r\nold style",
]
SPECIAL = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b"\xff", b"0", b"1", b"9", b"-",
           b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1 "]  # fmt: skip


def mutated(rng: random.Random) -> bytes:
    data = rng.choice(BASES)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        special = rng.choice(SPECIAL)
        match rng.randrange(3):
            case 0:
                data = data[:at] + special + data[at:]
            case 1:
                data = data[:at] + data[at + 1 :]
            case _:
                data = data[:at] + special + data[at + len(special) :]
    return data


def test_random_answers_are_passed_on_exactly_or_refused(
    tmp_path: Path, lane: str, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    answers = [mutated(rng) for _ in range(EXAMPLES)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            index = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
            writer.write(answers[index] if index < len(answers) else BASES[0])
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> list[str]:
        wrong = []
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        spec = make_spec(tmp_path, {"api": port}, (RouteSpec(path="/api", service="api"),))
        try:
            async with (
                running_proxy(spec, StandInDirectory({"api": port})) as proxy,
                verified_client() as client,
            ):
                for index, answer in enumerate(answers):
                    got = await outcome(client, f"{proxy.url}/api/{index}")
                    expected = strict_answer(answer)
                    if isinstance(got, tuple) and got != expected and b"html" not in answer:
                        wrong.append(f"{answer[:160]!r}: got {got}, strictly {expected}")
                async with client.get(f"{proxy.url}/api/{len(answers)}") as resp:
                    assert await resp.read() == b"hello", "the proxy stopped serving"
        finally:
            server.close()
            await server.wait_closed()
        return wrong

    wrong = asyncio.run(main())
    assert wrong == [], f"{wrong[:5]} (DEVSTACK_FUZZ_SEED={SEED})"
    traced = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert traced == [], f"{traced[:3]} (DEVSTACK_FUZZ_SEED={SEED})"


async def outcome(client: aiohttp.ClientSession, url: str) -> str | tuple[int, bytes]:
    """``refused`` (a proxy page), ``cut``, or the complete answer (status, body)."""
    try:
        async with asyncio.timeout(30), client.get(url) as resp:
            if resp.headers.get("X-Devstack") == "proxy":
                await resp.read()
                return "refused"
            return resp.status, await resp.read()
    except (
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
        aiohttp.ServerDisconnectedError,
    ):
        return "cut"
