"""Integration tests for the example stack, written with devstack's pytest plugin as you would
write yours: the ``devstack`` fixture starts the stack in ``../devstack.yaml`` once for the
session (on a free proxy port, without reloads), and stops it at the end.

    cd examples && pytest tests

Only the standard library and aiohttp (installed with devstack) are used.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from typing import Any

import aiohttp


def fetch(devstack: Any, path: str, body: Any = None) -> tuple[int, str, str]:
    """``path`` through the proxy, verified against devstack's CA: status, content type, text."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(devstack.url(path), data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, context=devstack.ssl_context(), timeout=10) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read().decode()


def test_the_game_page_is_served_from_the_static_folder(devstack: Any) -> None:
    status, content_type, page = fetch(devstack, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert "<title>" in page and "simon.css" in page


def test_a_posted_score_is_in_the_top_ten(devstack: Any) -> None:
    name = uuid.uuid4().hex[:8]
    status, _, posted = fetch(devstack, "/api/scores", {"name": name, "score": 10**9})
    assert status == 201 and json.loads(posted)["name"] == name
    _, _, scores = fetch(devstack, "/api/scores")
    assert json.loads(scores)[0]["name"] == name


def test_scores_survive_a_restart_of_simon(devstack: Any) -> None:
    name = uuid.uuid4().hex[:8]
    fetch(devstack, "/api/scores", {"name": name, "score": 10**9 + 1})
    devstack.restart("simon")
    _, _, scores = fetch(devstack, "/api/scores")
    assert json.loads(scores)[0]["name"] == name


def test_startup_answers_under_its_prefix_with_the_prefix_stripped(devstack: Any) -> None:
    title = f"idea {uuid.uuid4().hex[:8]}"
    status, _, _ = fetch(devstack, "/startup/api/ideas", {"title": title})
    assert status == 201
    _, _, ideas = fetch(devstack, "/startup/api/ideas")
    assert title in [idea["title"] for idea in json.loads(ideas)]


def test_the_websocket_announces_a_new_high_score(devstack: Any) -> None:
    async def main() -> dict[str, Any]:
        ssl = devstack.ssl_context()
        ws_url = devstack.url("/api/ws").replace("https://", "wss://")
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, ssl=ssl) as ws:
            name = uuid.uuid4().hex[:8]
            posted = await session.post(devstack.url("/api/scores"), ssl=ssl,
                                        json={"name": name, "score": 10**9 + 2})
            assert posted.status == 201
            async with asyncio.timeout(10):
                while True:
                    message: dict[str, Any] = json.loads((await ws.receive()).data)
                    if message.get("type") == "highscore" and message["entry"]["name"] == name:
                        return message

    assert asyncio.run(main())["entry"]["score"] == 10**9 + 2


def test_the_event_stream_ticks_through_the_proxy(devstack: Any) -> None:
    request = urllib.request.Request(devstack.url("/startup/events"))
    with urllib.request.urlopen(request, context=devstack.ssl_context(), timeout=10) as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")
        assert any(line.startswith(b"event: tick") for line in events)
