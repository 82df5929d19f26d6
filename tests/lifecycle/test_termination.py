"""The end of an instance: notices read from IMDS, the drain's deadline and steps, and what
the daemon does about scheduled events (Unhealthy once, warnings that clear)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import cache
from agent.config.loader import Config
from agent.lifecycle import termination
from agent.lifecycle.termination import Event, Notice, ScheduledEvents
from agent.state.recorder import Recorder


class Imds:
    """What the poll asks IMDS, answered from fixed values."""

    def __init__(self, target: str | None = None, spot: dict[str, Any] | None = None,
                 rebalance: dict[str, Any] | None = None) -> None:
        self.target, self.spot, self.balance = target, spot, rebalance
        self.asked: list[str] = []

    def target_lifecycle_state(self) -> str | None:
        self.asked.append("target")
        return self.target

    def spot_action(self) -> dict[str, Any] | None:
        self.asked.append("spot")
        return self.spot

    def rebalance(self) -> dict[str, Any] | None:
        self.asked.append("rebalance")
        return self.balance


def stamp(seconds_from_now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now))


def test_the_groups_termination_comes_first_and_spot_is_asked_only_on_spot() -> None:
    imds = Imds("Terminated", spot={"action": "terminate", "time": stamp(60)})
    notice, target = termination.poll(imds, spot=True)  # type: ignore[arg-type]
    assert notice == Notice("autoscaling", "target lifecycle state Terminated")
    assert target == "Terminated" and imds.asked == ["target"]
    on_demand = Imds("InService", spot={"action": "terminate"})
    assert termination.poll(on_demand, spot=False) == (None, "InService")  # type: ignore[arg-type]
    assert on_demand.asked == ["target"]


def test_a_spot_interruption_carries_its_time_as_a_deadline() -> None:
    notice, _ = termination.poll(Imds(spot={"action": "stop", "time": stamp(120)}),  # type: ignore[arg-type]
                                 spot=True)
    assert notice is not None and notice.kind == "spot"
    assert notice.detail.startswith("spot stop at ")
    assert notice.deadline == pytest.approx(time.monotonic() + 120, abs=2)
    garbled, _ = termination.poll(Imds(spot={"time": "soon"}), spot=True)  # type: ignore[arg-type]
    assert garbled == Notice("spot", "spot interruption at soon", None)
    rebalance, _ = termination.poll(Imds(rebalance={"noticeTime": "t"}), spot=True)  # type: ignore[arg-type]
    assert rebalance == Notice("rebalance", "rebalance recommended at t")


def test_the_drain_deadline_keeps_the_spot_margin() -> None:
    now = time.monotonic()
    assert termination.drain_deadline(90, Notice("autoscaling", "")) == pytest.approx(
        now + 90, abs=1)
    spot = Notice("spot", "", now + 30)
    assert termination.drain_deadline(90, spot) == pytest.approx(
        now + 30 - termination.SPOT_MARGIN, abs=1)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return cache.load(str(path))


def test_past_the_deadline_steps_are_skipped_and_the_secrets_wiped(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    (secrets / ".gen-1").mkdir(parents=True)
    (secrets / ".gen-1" / "db.json").write_text("hunter2")
    (secrets / "db.json").symlink_to(".gen-1/db.json")
    cfg = load(tmp_path, f'[secrets]\ndir = "{secrets}"\n[termination]\n'
                         'commands = [["/bin/false"]]\nstop_units = ["app.service"]\n')
    record = termination.drain(cfg.termination, Notice("spot", "spot terminate at t"), None,
                               "i-1", None, deadline=time.monotonic() - 1,  # a unit test:
                               heartbeat_seconds=0, secrets_dir=cfg.secrets.dir)  # none may run
    assert record["steps"] == [
        {"step": "/bin/false", "result": "skipped: deadline passed"},
        {"step": "systemctl stop app.service", "result": "skipped: deadline passed"}]
    assert record["secrets_wiped"] is True and record["hook"] is None
    assert secrets.is_dir() and list(secrets.iterdir()) == []


@pytest.mark.integration
def test_a_step_is_cut_at_the_deadline_and_the_next_skipped(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[termination]\nwipe_secrets = false\n"
                         'commands = [["/bin/sleep", "10"], ["/bin/true"]]\n')
    started = time.monotonic()
    record = termination.drain(cfg.termination, Notice("autoscaling", "x"), None, "i-1", None,
                               deadline=started + 0.5, heartbeat_seconds=0,
                               secrets_dir=cfg.secrets.dir)
    assert time.monotonic() - started < 3
    assert record["steps"][0]["result"].startswith("drain: /bin/sleep 10 timed out after 0.")
    assert record["steps"][1]["result"] == "skipped: deadline passed"


def event(code: str = "instance-stop", state: str = "active", **more: str) -> Event:
    return Event.of({"Code": code, "EventId": "instance-event-1", "State": state,
                     "NotBefore": "21 Jan 2027 09:00:43 GMT", **more})


def test_which_events_stop_the_instance() -> None:
    assert event().stops and event("instance-retirement").stops
    assert not event("system-reboot").stops and event("system-reboot").active
    assert not event(state="completed").active
    assert not event(Description="[Canceled] instance stop").active
    odd = Event.of({"Code": 5, "State": None})
    assert (odd.code, odd.state, odd.event_id) == ("", "", "")


def test_a_stopping_event_marks_unhealthy_once(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    marks: list[int] = []
    events = ScheduledEvents(rec, "web", True, lambda: (marks.append(1), ("sent", ""))[1])
    events.seen([event(), event("system-reboot")])
    events.seen([event()])
    assert marks == [1]
    assert rec.doc["health"]["status"] == "Unhealthy" and rec.doc["health"]["group"] == "web"
    assert rec.doc["events"][0]["action"].startswith("marked Unhealthy in web at ")
    assert rec.doc["warnings"] == []
    again = ScheduledEvents(Recorder(str(tmp_path)), "web", True,
                            lambda: pytest.fail("marked twice"), earlier=rec.doc["health"])
    again.seen([event()])  # a restarted daemon remembers


def test_a_failed_mark_is_retried_or_given_up_and_its_warning_clears(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    outcomes = [("retry", "throttled"), ("failed", "access denied")]
    events = ScheduledEvents(rec, "web", True, lambda: outcomes.pop(0))
    events.seen([event()])
    assert rec.doc["condition"] == "degraded"
    assert "SetInstanceHealth: throttled (retried)" in rec.doc["warnings"][0]
    events.seen([event()])
    events.seen([event()])  # given up: not asked again (outcomes would be empty)
    assert rec.doc["events"][0]["action"] == "access denied"
    events.seen([])  # the event is over
    assert rec.doc["warnings"] == [] and rec.doc["condition"] == "healthy"


def test_outside_a_group_a_stopping_event_is_a_warning_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(str(tmp_path))
    events = ScheduledEvents(rec, "", False, lambda: pytest.fail("no group to mark in"))
    with caplog.at_level(logging.WARNING, logger="agent.lifecycle.termination"):
        events.seen([event()])
        events.seen([event()])  # the poll sees it again a few seconds later
    assert len(caplog.records) == 1  # said once, not at every poll
    assert len(rec.doc["warnings"]) == 1
    assert "not in an Auto Scaling group: stop and start this instance" in rec.doc["warnings"][0]
