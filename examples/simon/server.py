"""Simon high scores: a small aiohttp service behind the devstack proxy.

    GET  /api/scores   the top 10 scores, best first (a tie goes to the newer score)
    POST /api/scores   {"name": "1-20 chars", "score": int >= 0} -> 201 and the stored entry
    GET  /api/ws       websocket; every open page gets {"type": "highscore", ...} when a score
                       enters the top 10
    GET  /healthz      200 once the service is up

Configured only through the environment: ``PORT`` (required), ``HOST`` (default 127.0.0.1) and
``SIMON_DATA_DIR`` (default: ``data/`` beside this file), where scores are kept as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger("simon")  # run as a script, __name__ would read "__main__"

TOP_SIZE = 10
KEPT_SIZE = 100
"""Scores kept in the file: a short history; only the top 10 is ever shown."""
MAX_NAME_LENGTH = 20
MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class Score:
    id: int
    name: str
    score: int
    at: str
    """When it was posted, ISO 8601 in UTC."""

    @property
    def rank_key(self) -> tuple[int, int]:
        # Higher score first; on a tie the newer entry (higher id) first.
        return (-self.score, -self.id)


class ScoreBoard:
    """The scores in memory, mirrored to one JSON file after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scores: list[Score] = self._load()
        self._next_id = max((s.id for s in self._scores), default=0) + 1

    def top(self, size: int = TOP_SIZE) -> list[Score]:
        return self._scores[:size]

    def add(self, name: str, score: int) -> tuple[Score, int | None]:
        """Store a score; return it and its 1-based rank if it made the top 10, else None."""
        entry = Score(
            id=self._next_id,
            name=name,
            score=score,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._next_id += 1
        self._scores.append(entry)
        self._scores.sort(key=lambda s: s.rank_key)
        rank = self._scores.index(entry) + 1
        del self._scores[KEPT_SIZE:]
        self._save()
        return entry, rank if rank <= TOP_SIZE else None

    def _load(self) -> list[Score]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            scores = [Score(**item) for item in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            aside = self.path.with_suffix(".json.broken")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.warning(
                "%s is unreadable (%s): starting with no scores; moved it to %s",
                self.path,
                exc,
                aside,
            )
            return []
        return sorted(scores, key=lambda s: s.rank_key)[:KEPT_SIZE]

    def _save(self) -> None:
        # A few kilobytes written once per game: blocking the loop briefly is fine here.
        # Write a sibling temp file and rename it, so a crash never leaves half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".scores-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([asdict(s) for s in self._scores], f, indent=1)
        os.replace(tmp, self.path)


BOARD = web.AppKey("board", ScoreBoard)
SOCKETS = web.AppKey[set[web.WebSocketResponse]]("sockets")


class BadScore(ValueError):
    pass


def parse_score(body: object) -> tuple[str, int]:
    """Validate a posted score; raise BadScore saying what is wrong."""
    if not isinstance(body, dict):
        raise BadScore('expected a JSON object like {"name": "ada", "score": 7}')
    name, score = body.get("name"), body.get("score")
    if isinstance(name, str):
        name = name.strip()
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise BadScore(f"name must be a string of 1 to {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise BadScore("name must not contain control characters")
    # bool is a subclass of int: reject true/false explicitly.
    if not isinstance(score, int) or isinstance(score, bool) or score < 0:
        raise BadScore("score must be a whole number >= 0")
    return name, score


def error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


async def get_scores(request: web.Request) -> web.Response:
    return web.json_response([asdict(s) for s in request.app[BOARD].top()])


async def post_scores(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise error(web.HTTPRequestEntityTooLarge, f"body over {MAX_BODY_BYTES} bytes")
    try:
        name, score = parse_score(await request.json())
    except json.JSONDecodeError as exc:
        raise error(web.HTTPBadRequest, f"body is not valid JSON: {exc}") from exc
    except BadScore as exc:
        raise error(web.HTTPBadRequest, str(exc)) from exc

    board = request.app[BOARD]
    entry, rank = board.add(name, score)
    log.info("score %d by %r (rank %s)", score, name, rank or "-")
    if rank is not None:
        await broadcast(
            request.app,
            {
                "type": "highscore",
                "entry": asdict(entry),
                "rank": rank,
                "scores": [asdict(s) for s in board.top()],
            },
        )
    return web.json_response(asdict(entry), status=201)


async def broadcast(app: web.Application, message: dict[str, Any]) -> None:
    sockets = app[SOCKETS]
    for ws in list(sockets):  # A copy: pages may leave while we await.
        if ws.closed:
            continue
        try:
            await ws.send_json(message)
        except ConnectionError:
            log.debug("a page went away while we pushed a high score")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        # A fresh page (or one that reconnected) gets the current table straight away.
        scores = [asdict(s) for s in request.app[BOARD].top()]
        await ws.send_json({"type": "scores", "scores": scores})
        async for msg in ws:  # Pages only listen; drain until they close.
            if msg.type is WSMsgType.ERROR:
                log.debug("websocket closed with %s", ws.exception())
    finally:
        sockets.discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


def make_app(data_dir: Path) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[BOARD] = ScoreBoard(data_dir / "scores.json")
    app[SOCKETS] = set()
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/api/scores", get_scores)
    app.router.add_post("/api/scores", post_scores)
    app.router.add_get("/api/ws", websocket)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    port = os.environ.get("PORT", "")
    if not port.isdigit():
        sys.exit(
            f"simon: PORT must be set to a port number (got {port!r}); "
            "run it with devstack, or as `PORT=3000 python server.py`"
        )
    host = os.environ.get("HOST", "127.0.0.1")
    data_dir = Path(os.environ.get("SIMON_DATA_DIR") or Path(__file__).parent / "data")
    # run_app handles SIGINT and SIGTERM: stop accepting, close websockets, exit 0.
    web.run_app(
        make_app(data_dir),
        host=host,
        port=int(port),
        access_log=None,
        # Keep "Running on http://..." and drop the Ctrl+C hint: the supervisor stops us.
        print=lambda text: log.info(text.splitlines()[0].strip("= ")),
    )


if __name__ == "__main__":
    main()
