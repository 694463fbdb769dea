from __future__ import annotations

from devstack.run.restart import Backoff


def test_delays_double_up_to_the_cap_then_give_up() -> None:
    backoff = Backoff(initial_seconds=0.5, factor=2, max_seconds=3, max_failures=5)
    delays = [backoff.next_delay(now=1.0, started_at=0.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, None, None]


def test_a_healthy_period_resets_the_count() -> None:
    backoff = Backoff(healthy_seconds=10)
    assert backoff.next_delay(now=1, started_at=0) == 0.5
    assert backoff.next_delay(now=2, started_at=1) == 1.0
    assert backoff.next_delay(now=100, started_at=50) == 0.5  # ran 50 s: this crash is news
    assert backoff.failures == 1


def test_reset_forgets_failures() -> None:
    backoff = Backoff(max_failures=2)
    assert backoff.next_delay(now=0, started_at=0) == 0.5
    assert backoff.next_delay(now=0, started_at=0) is None
    backoff.reset()
    assert backoff.next_delay(now=0, started_at=0) == 0.5
