"""The one retry loop: permanent errors pass through, transient ones back off within a budget."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from agent.retry import GaveUp, backoff_delays, jittered_delay, retry


class Blip(Exception):
    """A transient error."""


class Clock:
    """A clock that only moves when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(times: int, error: type[Exception] = Blip) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error("no")
        return "done"
    return calls, call


def test_a_transient_error_is_retried_until_the_call_succeeds() -> None:
    clock = Clock()
    calls, call = failing(3)
    seen: list[int] = []
    result = retry(call, transient=lambda e: isinstance(e, Blip), budget=60.0, clock=clock,
                   sleep=clock.sleep, on_retry=lambda exc, n, pause: seen.append(n))
    assert result == "done"
    assert len(calls) == 4
    assert seen == [1, 2, 3]
    assert len(clock.pauses) == 3


def test_a_permanent_error_propagates_at_once_unchanged() -> None:
    clock = Clock()
    calls, call = failing(5, ValueError)
    with pytest.raises(ValueError, match="no"):
        retry(call, transient=lambda e: isinstance(e, Blip), budget=60.0, clock=clock,
              sleep=clock.sleep)
    assert len(calls) == 1
    assert clock.pauses == []


def test_a_fixed_budget_gives_up_with_the_last_error_and_never_sleeps_past_it() -> None:
    clock = Clock()
    calls, call = failing(10**6)
    with pytest.raises(GaveUp) as caught:
        retry(call, transient=lambda e: True, budget=5.0, base=0.5, cap=2.0, clock=clock,
              sleep=clock.sleep)
    assert isinstance(caught.value.last, Blip)
    assert caught.value.attempts == len(calls)
    assert caught.value.waited == clock.now <= 5.0
    assert str(caught.value) == "no"


def test_a_moving_deadline_cuts_the_pause_short_and_reads_it_again() -> None:
    """With a budget function the last pause ends at the deadline, and a deadline moved
    meanwhile (a heartbeat) gives more attempts."""
    clock = Clock()
    deadline = [1.0]
    calls, call = failing(10**6)

    def left() -> float:
        if clock.now >= 1.0 and deadline[0] == 1.0:
            deadline[0] = 3.0  # moved (a heartbeat) while the loop waited
        return deadline[0] - clock.now

    random.seed(1)
    with pytest.raises(GaveUp):
        retry(call, transient=lambda e: True, budget=left, base=1.0, cap=10.0, clock=clock,
              sleep=clock.sleep)
    assert clock.now == pytest.approx(3.0)  # it waited up to the moved deadline, no further
    assert 1.0 in clock.pauses or any(abs(sum(clock.pauses[:i]) - 1.0) < 1e-9
                                      for i in range(len(clock.pauses)))  # cut at the first
    assert len(calls) >= 3


def test_pace_chooses_the_backoff_per_error() -> None:
    clock = Clock()
    _, call = failing(20)
    retry(call, transient=lambda e: True, budget=10**6, base=100.0, cap=100.0, clock=clock,
          sleep=clock.sleep, pace=lambda exc: (0.001, 0.001))
    assert max(clock.pauses) <= 0.001


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 100, 10**6])
def test_full_jitter_stays_within_the_exponential_cap(attempt: int) -> None:
    limit = min(2.0, 0.05 * 2 ** min(attempt, 30))
    delays = [jittered_delay(attempt, 0.05, 2.0) for _ in range(200)]
    assert all(0 <= d <= limit for d in delays)
    assert max(delays) > limit / 2  # jittered over the whole range, not pinned at 0
    assert all(0 <= backoff_delays(0.05, 2.0)(attempt) <= limit for _ in range(20))
