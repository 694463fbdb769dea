"""The example services in examples/, each run as a real process on a loopback port.

Simon (Python, aiohttp): scores API, validation, persistence, websocket push, SIGTERM.
Startup (Node.js, standard library): ideas API, prefix-aware links, SSE stream, SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conditions import port_accepts, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
TIMEOUT = aiohttp.ClientTimeout(total=10)


@contextmanager
def running(
    argv: list[str], *, cwd: Path, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` with PORT/HOST set, wait until the port accepts, and always stop it."""
    full_env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: proc.poll() is not None or port_accepts(port),
            timeout=15,
            message=f"{argv} to listen on 127.0.0.1:{port}",
        )
        if proc.returncode is not None:
            pytest.fail(f"{argv} exited with {proc.returncode}:\n{log.read_text()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stop_with_sigterm(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Send SIGTERM; return the exit code and how many seconds the process took to exit."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=10)
    return code, time.monotonic() - started


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)


# Simon ------------------------------------------------------------------------------------------


@pytest.fixture
def simon_data(tmp_path: Path) -> Path:
    return tmp_path / "simon-data"


@contextmanager
def simon(port: int, data_dir: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running(
        [sys.executable, "server.py"],
        cwd=EXAMPLES / "simon",
        port=port,
        log=tmp_path / "simon.log",
        env={"SIMON_DATA_DIR": str(data_dir)},
    ) as proc:
        yield proc


def test_simon_health_and_empty_board(free_port: int, simon_data: Path, tmp_path: Path) -> None:
    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            assert await call(session, "GET", f"{base}/healthz") == (200, {"status": "ok"})
            assert await call(session, "GET", f"{base}/api/scores") == (200, [])

    with simon(free_port, simon_data, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


def test_simon_keeps_top_ten_newest_first_on_ties(
    free_port: int, simon_data: Path, tmp_path: Path
) -> None:
    posts = [("ada", 5), ("bob", 9), ("cy", 5), ("dee", 1), ("eve", 12), ("fay", 5)]
    posts += [(f"p{i}", 3) for i in range(6)]  # 12 scores in all; two must drop off

    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            for name, score in posts:
                status, entry = await call(
                    session,
                    "POST",
                    f"{base}/api/scores",
                    json={"name": f" {name} ", "score": score},
                )
                assert status == 201, entry
                assert (entry["name"], entry["score"]) == (name, score)
                assert isinstance(entry["id"], int) and entry["at"]
            status, top = await call(session, "GET", f"{base}/api/scores")
        assert status == 200
        assert [(s["name"], s["score"]) for s in top] == [
            ("eve", 12), ("bob", 9), ("fay", 5), ("cy", 5), ("ada", 5),
            ("p5", 3), ("p4", 3), ("p3", 3), ("p2", 3), ("p1", 3),
        ]  # fmt: skip

    with simon(free_port, simon_data, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


BAD_SCORES: list[tuple[str, bytes]] = [
    ("not JSON", b"{nope"),
    ("not an object", b"[1, 2]"),
    ("no name", json.dumps({"score": 3}).encode()),
    ("empty name", json.dumps({"name": "   ", "score": 3}).encode()),
    ("name too long", json.dumps({"name": "x" * 21, "score": 3}).encode()),
    ("name not a string", json.dumps({"name": 7, "score": 3}).encode()),
    ("control characters", json.dumps({"name": "a\u0007b", "score": 3}).encode()),
    ("no score", json.dumps({"name": "ada"}).encode()),
    ("negative score", json.dumps({"name": "ada", "score": -1}).encode()),
    ("score as string", json.dumps({"name": "ada", "score": "5"}).encode()),
    ("score as float", json.dumps({"name": "ada", "score": 2.5}).encode()),
    ("score as bool", json.dumps({"name": "ada", "score": True}).encode()),
]


def test_simon_rejects_bad_scores_with_json_errors(
    free_port: int, simon_data: Path, tmp_path: Path
) -> None:
    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            for case, body in BAD_SCORES:
                status, answer = await call(
                    session,
                    "POST",
                    f"{base}/api/scores",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                assert status == 400, f"{case}: {status} {answer}"
                assert isinstance(answer["error"], str) and answer["error"], case
            status, edge = await call(
                session, "POST", f"{base}/api/scores", json={"name": "x" * 20, "score": 0}
            )
            assert status == 201, f"20 characters and score 0 are allowed: {edge}"
            assert await call(session, "GET", f"{base}/api/scores") == (200, [edge])

    with simon(free_port, simon_data, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


def test_simon_scores_survive_a_restart_and_sigterm_exits_zero(
    free_port: int, simon_data: Path, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{free_port}"

    async def post() -> Any:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            status, entry = await call(
                session, "POST", f"{base}/api/scores", json={"name": "ada", "score": 7}
            )
            assert status == 201
            return entry

    async def scores() -> Any:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            return (await call(session, "GET", f"{base}/api/scores"))[1]

    with simon(free_port, simon_data, tmp_path) as proc:
        entry = asyncio.run(post())
        code, seconds = stop_with_sigterm(proc)
    assert code == 0, (tmp_path / "simon.log").read_text()
    assert seconds < 3, f"simon took {seconds:.2f}s to exit on SIGTERM"
    assert (simon_data / "scores.json").is_file()

    with simon(free_port, simon_data, tmp_path):
        assert asyncio.run(scores()) == [entry]


def test_simon_moves_an_unreadable_scores_file_aside(
    free_port: int, simon_data: Path, tmp_path: Path
) -> None:
    simon_data.mkdir()
    (simon_data / "scores.json").write_text("{not json")

    async def scores() -> Any:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            return await call(session, "GET", f"http://127.0.0.1:{free_port}/api/scores")

    with simon(free_port, simon_data, tmp_path):
        assert asyncio.run(scores()) == (200, [])
    assert (simon_data / "scores.json.broken").read_text() == "{not json"
    assert "unreadable" in (tmp_path / "simon.log").read_text()


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> Any:
    async with asyncio.timeout(5):
        return await ws.receive_json()


def test_simon_websocket_pushes_scores_that_enter_the_top_ten(
    free_port: int, simon_data: Path, tmp_path: Path
) -> None:
    async def check(base: str) -> None:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.ws_connect(f"{base}/api/ws") as ws,
            session.ws_connect(f"{base}/api/ws") as other_page,
        ):
            assert await next_message(ws) == {"type": "scores", "scores": []}
            assert (await next_message(other_page))["type"] == "scores"
            for i in range(10):
                await call(
                    session, "POST", f"{base}/api/scores", json={"name": f"p{i}", "score": 5}
                )
                pushed = await next_message(ws)
                assert (pushed["type"], pushed["rank"]) == ("highscore", 1)  # newest wins ties
            # Below all ten: stored, but no push. Then a new best: the next push is that one.
            await call(session, "POST", f"{base}/api/scores", json={"name": "low", "score": 4})
            await call(session, "POST", f"{base}/api/scores", json={"name": "ace", "score": 50})
            pushed = await next_message(ws)
            assert pushed["type"] == "highscore"
            entry = pushed["entry"]
            assert (entry["name"], entry["score"], pushed["rank"]) == ("ace", 50, 1)
            assert [s["name"] for s in pushed["scores"]][:2] == ["ace", "p9"]
            assert len(pushed["scores"]) == 10
            for _ in range(10):
                await next_message(other_page)
            assert (await next_message(other_page))["entry"]["name"] == "ace"

    with simon(free_port, simon_data, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


# Startup ----------------------------------------------------------------------------------------


@contextmanager
def startup(port: int, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert NODE is not None
    with running(
        [NODE, "server.js"], cwd=EXAMPLES / "startup", port=port, log=tmp_path / "startup.log"
    ) as proc:
        yield proc


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Yield (event, parsed data) from a text/event-stream response; comments are skipped."""
    event, data = "message", ""
    while line := (await response.content.readline()).decode():
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()


@needs_node
def test_startup_describes_itself_with_prefixed_links(free_port: int, tmp_path: Path) -> None:
    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            assert await call(session, "GET", f"{base}/healthz") == (200, {"status": "ok"})
            status, plain = await call(session, "GET", f"{base}/")
            assert status == 200 and plain["name"] == "startup"
            assert plain["links"]["ideas"] == "/api/ideas"
            _, mounted = await call(
                session, "GET", f"{base}/", headers={"X-Forwarded-Prefix": "/startup"}
            )
            assert mounted["links"] == {
                "ideas": "/startup/api/ideas",
                "events": "/startup/events",
                "health": "/startup/healthz",
            }
            _, hostile = await call(
                session, "GET", f"{base}/", headers={"X-Forwarded-Prefix": "//evil.example"}
            )
            assert hostile["links"]["ideas"] == "/api/ideas", "odd prefixes are ignored"
            status, missing = await call(session, "GET", f"{base}/nope")
            assert status == 404 and "error" in missing
            async with session.delete(f"{base}/api/ideas") as response:
                assert response.status == 405
                assert response.headers["Allow"] == "GET, POST"

    with startup(free_port, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


@needs_node
def test_startup_ideas_api(free_port: int, tmp_path: Path) -> None:
    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            assert await call(session, "GET", f"{base}/api/ideas") == (200, [])
            status, idea = await call(
                session, "POST", f"{base}/api/ideas", json={"title": "  tea for dogs "}
            )
            assert status == 201
            assert idea["title"] == "tea for dogs" and idea["id"] == 1 and idea["at"]
            assert await call(session, "GET", f"{base}/api/ideas") == (200, [idea])
            for case, body in [
                ("not JSON", b"{"),
                ("no title", b"{}"),
                ("blank title", b'{"title": "  "}'),
                ("title not a string", b'{"title": 3}'),
                ("null", b"null"),
            ]:
                status, answer = await call(session, "POST", f"{base}/api/ideas", data=body)
                assert status == 400 and answer["error"], f"{case}: {status} {answer}"
            status, answer = await call(
                session, "POST", f"{base}/api/ideas", data=b"x" * (32 * 1024)
            )
            assert status == 413, answer

    with startup(free_port, tmp_path):
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))


@needs_node
def test_startup_event_stream_delivers_ticks_and_ideas(free_port: int, tmp_path: Path) -> None:
    async def check(base: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(f"{base}/events") as stream:
                assert stream.status == 200
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                # Headers arrive after the server registered the stream: the idea reaches it.
                status, idea = await call(
                    session, "POST", f"{base}/api/ideas", json={"title": "live"}
                )
                assert status == 201
                seen: dict[str, Any] = {}
                async with asyncio.timeout(5):
                    async for event, data in sse_events(stream):
                        seen.setdefault(event, data)
                        if {"tick", "idea"} <= seen.keys():
                            break
            assert seen["idea"] == idea
            assert seen["tick"]["count"] == 1 and seen["tick"]["time"]
            # The closed stream is forgotten: posting again still works.
            status, _ = await call(session, "POST", f"{base}/api/ideas", json={"title": "again"})
            assert status == 201

    with startup(free_port, tmp_path) as proc:
        asyncio.run(check(f"http://127.0.0.1:{free_port}"))
        assert proc.poll() is None, (tmp_path / "startup.log").read_text()


@needs_node
def test_startup_exits_zero_on_sigterm_with_a_stream_open(free_port: int, tmp_path: Path) -> None:
    async def hold_stream_and_stop(base: str, proc: subprocess.Popen[bytes]) -> tuple[int, float]:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(f"{base}/events") as stream,
        ):
            assert stream.status == 200
            loop = asyncio.get_running_loop()
            # proc.wait blocks: run it off the loop so the stream stays serviced meanwhile.
            result = await loop.run_in_executor(None, stop_with_sigterm, proc)
            async with asyncio.timeout(5):
                async for _ in sse_events(stream):
                    pass  # the server ended the stream
            return result

    with startup(free_port, tmp_path) as proc:
        code, seconds = asyncio.run(hold_stream_and_stop(f"http://127.0.0.1:{free_port}", proc))
    assert code == 0, (tmp_path / "startup.log").read_text()
    assert seconds < 2, f"startup took {seconds:.2f}s to exit on SIGTERM"
