"""The resident daemon's timers, with the clock passed in (no real time); the retry loop's
tests: tests/cloud/test_retry.py."""

from __future__ import annotations

import pytest

from agent.boot.resident import IDLE, Schedule


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
