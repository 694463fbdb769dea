"""How often readiness asks the kernel, and how a stop decides a process group is empty."""

from __future__ import annotations

import asyncio
import os

import pytest

from devstack.run import guardian
from devstack.run.readiness import ListenWatcher, listen_tick


@pytest.mark.parametrize(
    ("waited", "tick"),
    [
        (0.0, 0.002),
        (0.5, 0.002),
        (0.999, 0.002),
        (1.0, 0.005),
        (4.999, 0.005),
        (5.0, 0.01),
        (3600.0, 0.01),
    ],
)
def test_the_kernel_is_asked_often_while_a_start_is_young(waited: float, tick: float) -> None:
    assert listen_tick(waited) == tick


class ScriptedPorts:
    """Listening ports as a script says, one snapshot per query."""

    def __init__(self, *answers: frozenset[int]) -> None:
        self._answers = list(answers)
        self.queries = 0

    def snapshot(self) -> frozenset[int] | None:
        self.queries += 1
        return self._answers.pop(0) if self._answers else frozenset({8000})

    def close(self) -> None:
        pass


def test_the_tick_follows_the_newest_waiter_not_each_retry() -> None:
    waited: list[float] = []

    def tick(seconds: float) -> float:
        waited.append(seconds)
        return 0.0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ports = ScriptedPorts(frozenset(), frozenset(), frozenset(), frozenset({8000}))
        watcher = ListenWatcher(ports, tick)  # type: ignore[arg-type]
        assert await watcher.wait(8000, timeout=5, since=loop.time() - 2.0)
        assert ports.queries == 5  # one at construction, then until the port listens
        assert waited, "no pause between queries"
        assert all(2.0 <= seconds < 3.0 for seconds in waited), waited  # since, not each query

    asyncio.run(scenario())


def test_a_group_the_kernel_does_not_know_is_empty_without_reading_proc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_such_group(pgid: int, sig: int) -> None:
        raise ProcessLookupError(pgid)

    def listdir(path: str) -> list[str]:
        raise AssertionError("read /proc")

    monkeypatch.setattr(os, "killpg", no_such_group)
    monkeypatch.setattr(os, "listdir", listdir)
    assert guardian.group_members(4242) == []


def test_a_group_of_zombies_is_read_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = {"10": b"10 (server) Z 1 4242 4242", "11": b"11 (worker) S 1 4242 4242",
             "12": b"12 (other) S 1 99 99"}  # fmt: skip

    class Stat:
        def __init__(self, path: str, mode: str) -> None:
            self._data = stats[path.split("/")[2]]

        def __enter__(self) -> Stat:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self) -> bytes:
            return self._data

    monkeypatch.setattr(os, "killpg", lambda pgid, sig: None)
    monkeypatch.setattr(os, "listdir", lambda path: [*stats, "self"])
    monkeypatch.setattr(guardian, "open", Stat, raising=False)
    assert guardian.group_members(4242) == [11]
