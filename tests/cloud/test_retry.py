"""The one retry loop, with the clock passed in (no real time): permanent errors pass
through, transient ones back off (full jitter) within a budget, fixed or moving."""

from __future__ import annotations

import pytest

from agent.cloud.retry import GaveUp, backoff_delays, jittered_delay, retry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Transient(Exception):
    pass


def test_retry_succeeds_after_transient_errors() -> None:
    clock = Clock()
    answers = iter([Transient(), Transient(), "ok"])

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    retried: list[int] = []
    assert retry(call, transient=lambda e: isinstance(e, Transient), budget=10,
                 on_retry=lambda exc, n, pause: retried.append(n), clock=clock.time,
                 sleep=clock.sleep) == "ok"
    assert retried == [1, 2] and len(clock.slept) == 2


def test_retry_never_sleeps_past_its_budget() -> None:
    clock = Clock()

    def call() -> None:
        raise Transient("503")

    with pytest.raises(GaveUp) as info:
        retry(call, transient=lambda e: True, budget=30, base=0.1, cap=5, clock=clock.time,
              sleep=clock.sleep)
    assert sum(clock.slept) < 30
    assert info.value.attempts == len(clock.slept) + 1
    assert info.value.waited == pytest.approx(sum(clock.slept))
    assert max(clock.slept) <= 5


def test_a_permanent_error_is_not_retried() -> None:
    clock = Clock()
    calls = []

    def call() -> None:
        calls.append(1)
        raise ValueError("AccessDenied")

    with pytest.raises(ValueError, match="AccessDenied"):
        retry(call, transient=lambda e: isinstance(e, Transient), budget=30, clock=clock.time,
              sleep=clock.sleep)
    assert calls == [1] and clock.slept == []


def test_full_jitter_stays_within_its_bounds() -> None:
    delay = backoff_delays(base=0.1, cap=5.0)
    for attempt in range(40):
        assert 0 <= delay(attempt) <= min(5.0, 0.1 * 2 ** attempt)


def test_pace_chooses_the_backoff_per_error() -> None:
    """A throttle waits within its own (longer) schedule; a blip within the default one."""
    clock = Clock()
    answers = iter([Transient("throttled"), Transient("blip"), Transient("throttled"), "ok"])

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry(call, transient=lambda e: True, budget=1000, base=0.1, cap=0.1,
                 pace=lambda e: (50.0, 50.0) if str(e) == "throttled" else (0.1, 0.1),
                 clock=clock.time, sleep=clock.sleep) == "ok"
    assert clock.slept[1] <= 0.1 * 2  # the blip: the default schedule, at attempt 1
    assert clock.slept[0] <= 50 and clock.slept[2] <= 50  # the throttles: theirs


def test_a_moving_budget_is_read_at_each_failure() -> None:
    """A deadline that moves (a lifecycle action kept alive by heartbeats) keeps the retries
    going past the budget the call started with, and never past where it ends."""
    clock = Clock()
    deadline = 3.0
    attempts: list[float] = []

    def call() -> None:
        nonlocal deadline
        attempts.append(clock.now)
        if len(attempts) < 20:
            deadline = clock.now + 3.0  # extended meanwhile (a heartbeat admitted)
        raise Transient("throttled")

    with pytest.raises(GaveUp):
        retry(call, transient=lambda e: True, budget=lambda: deadline - clock.now, base=1,
              cap=2, clock=clock.time, sleep=clock.sleep)
    assert len(attempts) >= 20  # went on while the deadline moved, well past the first 3 s
    assert clock.now > 3.0
    assert clock.now <= deadline  # and never slept past the last one
    assert attempts[-1] == pytest.approx(deadline)  # the last try at the deadline itself


def test_a_fixed_budget_gives_up_before_a_pause_that_would_not_fit() -> None:
    clock = Clock()

    def call() -> None:
        raise Transient("throttled")

    with pytest.raises(GaveUp):
        retry(call, transient=lambda e: True, budget=3.0, base=1, cap=2, clock=clock.time,
              sleep=clock.sleep)
    assert clock.now < 3.0  # never sleeps into the end of its budget



def test_giving_up_carries_the_last_error() -> None:
    clock = Clock()
    errors = iter(Transient(f"503 #{n}") for n in range(1000))

    def call() -> None:
        raise next(errors)

    with pytest.raises(GaveUp) as info:
        retry(call, transient=lambda e: True, budget=5.0, base=0.5, cap=2, clock=clock.time,
              sleep=clock.sleep)
    assert isinstance(info.value.last, Transient)
    assert str(info.value) == str(info.value.last) == f"503 #{info.value.attempts - 1}"
    assert info.value.__cause__ is info.value.last


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 100, 10**6])
def test_full_jitter_spans_its_range_at_any_attempt(attempt: int) -> None:
    """Uniform over [0, min(cap, base * 2**attempt)], without overflow at a huge attempt."""
    limit = min(2.0, 0.05 * 2 ** min(attempt, 30))
    delays = [jittered_delay(attempt, 0.05, 2.0) for _ in range(200)]
    assert all(0 <= d <= limit for d in delays)
    assert max(delays) > limit / 2  # spread over the range, not pinned at 0
