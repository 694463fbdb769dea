"""The reload-loop detector on scripted histories with a hand-moved clock, and the reading of
statuses that tells it when a service is back: no processes, no sleeps."""

from __future__ import annotations

import pytest

from devstack.app import is_back
from devstack.reload.loop import LoopDetector, loop_warning
from devstack.status import ServiceState, ServiceStatus

READY, STARTING, BACKOFF, FAILED = (
    ServiceState.READY, ServiceState.STARTING, ServiceState.BACKOFF, ServiceState.FAILED,
)
RESTARTING = ServiceState("restarting")


def status(state: ServiceState, *, pid: int | None = None, reason: str | None = None
           ) -> ServiceStatus:
    return ServiceStatus(name="web", state=state, port=3000, pid=pid, reason=reason)


class Clock:
    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time


def detector() -> tuple[LoopDetector, Clock]:
    clock = Clock()
    return LoopDetector(rounds=3, grace_seconds=0.5, clock=clock), clock


def round_trip(d: LoopDetector, clock: Clock, name: str, files: tuple[str, ...],
               *, after_ready: float = 0.1) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Reload ``name``; it is ready 0.3 s later; ``files`` change ``after_ready`` after that."""
    d.reloaded(name)
    clock.time += 0.3
    d.settled(name)
    clock.time += after_ready
    return d.screen(name, files)


def test_a_file_written_on_every_start_is_caught_on_the_third_round() -> None:
    d, clock = detector()
    assert d.screen("simon", ("server.py",)) == (("server.py",), ())  # the developer's edit
    assert round_trip(d, clock, "simon", ("server.log",)) == (("server.log",), ())
    assert round_trip(d, clock, "simon", ("server.log",)) == (("server.log",), ())
    assert round_trip(d, clock, "simon", ("server.log",)) == ((), ("server.log",))
    assert d.is_looping("simon", "server.log")
    # from now on it reloads nothing, and is reported only once
    assert round_trip(d, clock, "simon", ("server.log",)) == ((), ())
    clock.time += 60
    assert d.screen("simon", ("server.log", "server.py")) == (("server.py",), ())


def test_a_change_while_the_service_is_still_starting_echoes_too() -> None:
    d, clock = detector()
    for _ in range(2):
        d.reloaded("api")
        clock.time += 0.05  # the pid file, before the port is open
        assert d.screen("api", ("api.pid",)) == (("api.pid",), ())
    d.reloaded("api")
    assert d.screen("api", ("api.pid",)) == ((), ("api.pid",))


def test_edits_well_after_each_reload_are_never_a_loop() -> None:
    d, clock = detector()
    for _ in range(10):
        assert round_trip(d, clock, "simon", ("server.py",), after_ready=2.0) == (
            ("server.py",), ()
        )
    assert not d.is_looping("simon", "server.py")


def test_an_unrelated_change_in_between_starts_the_count_again() -> None:
    d, clock = detector()
    round_trip(d, clock, "simon", ("server.log",))
    round_trip(d, clock, "simon", ("server.log",))
    assert round_trip(d, clock, "simon", ("server.py",), after_ready=5.0) == (("server.py",), ())
    round_trip(d, clock, "simon", ("server.log",))
    assert round_trip(d, clock, "simon", ("server.log",)) == (("server.log",), ())
    assert round_trip(d, clock, "simon", ("server.log",)) == ((), ("server.log",))


def test_only_the_file_that_echoes_every_round_is_caught() -> None:
    d, clock = detector()
    round_trip(d, clock, "simon", ("server.log", "a.py"))
    round_trip(d, clock, "simon", ("server.log",))
    kept, found = round_trip(d, clock, "simon", ("server.log", "a.py"))
    assert (kept, found) == (("a.py",), ("server.log",))


def test_services_are_counted_apart() -> None:
    d, clock = detector()
    for _ in range(2):
        round_trip(d, clock, "simon", ("shared.log",))
        round_trip(d, clock, "api", ("shared.log",))
    assert round_trip(d, clock, "simon", ("shared.log",)) == ((), ("shared.log",))
    assert not d.is_looping("api", "shared.log")


def test_settled_without_a_reload_changes_nothing() -> None:
    d, _ = detector()
    d.settled("simon")
    assert d.screen("simon", ("server.log",)) == (("server.log",), ())


def test_the_warning_names_the_file_and_the_ignore_to_add() -> None:
    assert loop_warning("simon", "server.log") == (
        "simon: server.log changes every time simon starts; not reloading on it. "
        "Add it to watch_ignore (or .gitignore)"
    )


# --- when a reloading service is back (devstack.app reads the supervisor's statuses) ---------


@pytest.mark.parametrize(
    ("before", "now", "is_back_now"),
    [
        (status(READY, pid=1), status(READY, pid=1), False),       # the reload not handled yet
        (status(READY, pid=1), status(RESTARTING), False),
        (status(READY, pid=1), status(STARTING, pid=2), False),
        (status(READY, pid=1), status(READY, pid=2), True),
        (status(READY, pid=1), status(READY, pid=1, reason="new one failed"), True),  # blue-green
        (status(READY, pid=1), status(BACKOFF, reason="exited with code 1"), True),
        (status(FAILED, reason="crash loop"), status(FAILED, reason="crash loop"), False),
        (status(FAILED, reason="crash loop"), status(FAILED, reason="command not found"), True),
        (status(FAILED, reason="crash loop"), status(READY, pid=3), True),
    ],
)
def test_is_back(before: ServiceStatus, now: ServiceStatus, is_back_now: bool) -> None:
    assert is_back(before, now) is is_back_now
