"""The resident daemon's timers, and the retry loop, with the clock passed in (no real time)."""

from __future__ import annotations

import pytest

from agent.resident import IDLE, Schedule
from agent.retry import GaveUp, backoff_delays, retry


def fixed(seconds: float) -> float:
    """No jitter: the tests state exact deadlines."""
    return seconds


def test_nothing_to_do_sleeps_long() -> None:
    timers = Schedule(jitter=fixed)
    timers.start(100.0)
    assert timers.sleep(100.0) == IDLE
    assert not timers.ping_due(200.0) and not timers.tick_due(200.0)
    assert not timers.refresh_due(200.0, hup=True)  # SIGHUP means nothing without secrets


def test_the_watchdog_rides_on_ticks_when_they_come_often_enough() -> None:
    timers = Schedule(tick_every=5.0, ping_every=10.0, jitter=fixed)  # WatchdogSec=20
    timers.start(0.0)
    wakes, pings = [], []
    now = 0.0
    while now < 60.0:
        now += timers.sleep(now)
        wakes.append(now)
        if timers.ping_due(now):
            pings.append(now)
        if timers.tick_due(now):
            timers.ticked(now, again=True)
    assert wakes == [5.0 * n for n in range(1, 13)]  # 12 wake-ups a minute: the ticks only
    assert all(b - a <= 10.0 for a, b in zip([0.0, *pings], pings, strict=False))
    assert len(pings) >= 6  # never more than half of WatchdogSec without a ping


def test_a_watchdog_faster_than_the_ticks_wakes_on_its_own() -> None:
    timers = Schedule(tick_every=5.0, ping_every=2.0, jitter=fixed)
    timers.start(0.0)
    assert timers.sleep(0.0) == 2.0
    assert timers.ping_due(2.0)
    assert timers.sleep(2.0) == 2.0  # the next ping, before the tick at 5


def test_a_poll_with_nothing_left_to_watch_stops_the_ticks() -> None:
    timers = Schedule(tick_every=5.0, jitter=fixed)
    timers.start(0.0)
    assert timers.tick_due(5.0)
    timers.ticked(5.0, again=False)
    assert timers.next_tick is None and timers.sleep(5.0) == IDLE


def test_a_job_wakes_the_resident_for_the_termination_poll_but_a_drain_does_not() -> None:
    timers = Schedule(tick_every=5.0, ping_every=90.0, jitter=fixed)
    timers.start(100.0)
    assert timers.job_sleep(101.0, ticking=True) == 4.0  # the poll goes on during a job
    assert timers.job_sleep(101.0, ticking=False) == 89.0  # a drain: only the watchdog
    timers.ticked(105.0, again=False)  # nothing left to watch
    assert timers.job_sleep(106.0, ticking=True) == 84.0
    assert Schedule(jitter=fixed).job_sleep(0.0, ticking=True) == IDLE


def test_refreshes_are_jittered_and_sighup_refreshes_now() -> None:
    timers = Schedule(refresh_every=3600.0, jitter=lambda s: s * 1.2)
    timers.start(0.0)
    assert timers.next_refresh == pytest.approx(4320.0)
    assert not timers.refresh_due(100.0)
    assert timers.refresh_due(100.0, hup=True)
    timers.refreshed(100.0, 30.0)  # a failed refresh: retried sooner
    assert timers.sleep(100.0) == 30.0
    assert timers.refresh_due(130.0)


# -- the retry loop -------------------------------------------------------------------------


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

