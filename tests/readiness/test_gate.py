"""The readiness gate's rules with a fake clock (settling, flapping, timeouts, failed units,
crash loops), what ``systemctl show`` says of units, and the ``[readiness]`` section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from configs import load

from agent.cli import plan, status
from agent.instance.facts import nominal_facts
from agent.readiness import gate as readiness
from agent.readiness.gate import Gate, ReadinessError, Regate, Seen, parse_show, unit_seen
from agent.state.recorder import Recorder, State
from agent.telemetry import metrics as telemetry


class Clock:
    """A clock that moves only when the gate sleeps (and by what a probe takes)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(clock: Clock, script: Callable[[float], list[Seen]],
             takes: float = 0.0) -> Callable[[float], list[Seen]]:
    """A probe whose answer depends on the time since the start (``takes``: its duration)."""
    start = clock.now

    def probe(budget: float) -> list[Seen]:
        assert budget >= 0
        seen = script(clock.now - start)
        clock.now += min(takes, budget)
        return seen

    return probe


def gate(clock: Clock, *probes: Callable[[float], list[Seen]], timeout: float = 60,
         settle: float = 10, interval: float = 2) -> Gate:
    return Gate(list(probes), timeout, settle, interval, clock=clock, sleep=clock.sleep)


def unit_like(probe: Callable[[float], list[Seen]]) -> Callable[[float], list[Seen]]:
    """The probe's answers marked as units' (named without a colon)."""
    return lambda budget: [replace(s, unit=True) for s in probe(budget)]


def http(ok: bool, saw: str = "") -> list[Seen]:
    return [Seen("http://127.0.0.1:8080/healthz", ok, saw or ("200" if ok else "503"))]


def test_ready_once_everything_held_for_settle_seconds() -> None:
    clock = Clock()
    verdict = gate(clock, scripted(clock, lambda t: http(t >= 7))).wait()
    # healthy from the round at t=8 on: ready at t=18, not before
    assert clock.now - 1000 == pytest.approx(18)
    assert "held 10 s" in verdict


def test_settle_zero_is_ready_at_the_first_good_round() -> None:
    clock = Clock()
    gate(clock, scripted(clock, lambda t: http(True)), settle=0).wait()
    assert clock.now == 1000 and clock.sleeps == []


def test_one_bad_round_starts_the_settling_over() -> None:
    clock = Clock()
    gate(clock, scripted(clock, lambda t: http(t != 8))).wait()
    assert clock.now - 1000 == pytest.approx(20)  # good from 0, broken at 8, good from 10


def test_a_flapping_check_never_settles_and_the_line_says_what_broke_it() -> None:
    clock = Clock()
    flapping = scripted(clock, lambda t: http(int(t) % 8 != 2))  # a 503 every 8 s
    with pytest.raises(ReadinessError) as caught:
        gate(clock, flapping, timeout=30).wait()
    assert clock.now - 1000 == pytest.approx(30)
    assert str(caught.value) == ("not ready within 30 s: never held for 10 s (last: "
                                 "http://127.0.0.1:8080/healthz: 503)")


def test_timeout_names_what_is_not_ready_with_what_it_saw() -> None:
    clock = Clock()
    units = scripted(clock, lambda t: [Seen("app.service", False, "activating (start)")])
    checks = scripted(clock, lambda t: http(False, "connection refused"))
    with pytest.raises(ReadinessError) as caught:
        gate(clock, unit_like(units), checks, timeout=9).wait()
    assert clock.now - 1000 == pytest.approx(9)  # the last sleep is cut to the deadline
    assert str(caught.value) == ("not ready within 9 s: app.service activating (start); "
                                 "http://127.0.0.1:8080/healthz: connection refused")


def test_ready_too_late_to_settle_says_how_long_it_held() -> None:
    clock = Clock()
    with pytest.raises(ReadinessError) as caught:
        gate(clock, scripted(clock, lambda t: http(t >= 54)), timeout=60).wait()
    assert str(caught.value) == "not ready within 60 s: ready for only 6 s of settle_seconds 10"


def test_a_slow_probe_cannot_take_the_gate_past_its_timeout() -> None:
    clock = Clock()
    budgets: list[float] = []

    def hanging(budget: float) -> list[Seen]:
        budgets.append(budget)
        clock.now += min(budget, 5)  # a check that hangs until its own timeout (5 s)
        return http(False, "no answer within 5 s")

    with pytest.raises(ReadinessError, match="no answer within 5 s"):
        gate(clock, hanging, timeout=13).wait()
    assert clock.now - 1000 == pytest.approx(13)
    assert budgets == [13, 6, 0]  # the budget shrinks to what is left


def test_a_failed_unit_fails_the_gate_at_once() -> None:
    clock = Clock()
    failed = unit_seen("app.service", {"LoadState": "loaded", "ActiveState": "failed",
                                       "SubState": "failed", "Result": "exit-code",
                                       "ExecMainStatus": "1", "NRestarts": "3"})
    units = scripted(clock, lambda t: [failed] if t >= 4 else
                     [Seen("app.service", False, "activating (start)")])
    with pytest.raises(ReadinessError) as caught:
        gate(clock, units, timeout=600).wait()
    assert clock.now - 1000 == pytest.approx(4)
    assert str(caught.value) == "app.service failed (exit-code, status 1) after 3 restarts"


def test_a_crash_loop_never_settles_even_when_every_look_finds_it_active() -> None:
    """Restart=always with a quick RestartSec: each round may catch the unit active, but a
    new invocation each time starts the settling over."""
    clock = Clock()

    def looping(t: float) -> list[Seen]:
        return [Seen("app.service", True, f"active (running) after {int(t)} restarts",
                     epoch=f"invocation-{int(t)}", unit=True)]

    with pytest.raises(ReadinessError) as caught:
        gate(clock, scripted(clock, looping), timeout=40).wait()
    assert "never held for 10 s" in str(caught.value)
    assert "app.service active (running)" in str(caught.value) and "(restarted)" in str(
        caught.value)


def test_a_restart_between_good_rounds_starts_the_settling_over() -> None:
    clock = Clock()
    units = scripted(clock, lambda t: [Seen("app.service", True, "active (running)",
                                            epoch="a" if t < 6 else "b")])
    gate(clock, units).wait()
    # the round that finds the new invocation does not count: the restart was in between
    assert clock.now - 1000 == pytest.approx(18)


def test_the_wait_sleeps_no_longer_than_needed_to_settle() -> None:
    clock = Clock()
    gate(clock, scripted(clock, lambda t: http(True)), settle=3, interval=2).wait()
    assert clock.sleeps == [2, 1]  # the second round falls on the settle time, not later


def test_each_round_is_reported_with_the_time_it_has_held() -> None:
    clock = Clock()
    rounds: list[tuple[bool, float | None]] = []
    g = gate(clock, scripted(clock, lambda t: http(t >= 2)), settle=4)
    g.on_round = lambda seen, since: rounds.append((seen[0].ok, since))
    g.wait()
    assert rounds == [(False, None), (True, 1002.0), (True, 1002.0), (True, 1002.0)]


# -- what systemd says of units -------------------------------------------------------------


SHOW = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
ExecMainStatus=0
NRestarts=0
InvocationID=4f0c

LoadState=loaded
ActiveState=activating
SubState=auto-restart
Result=exit-code
ExecMainStatus=1
NRestarts=2
InvocationID=9a1b

LoadState=not-found
ActiveState=inactive
SubState=dead
Result=success
ExecMainStatus=0
NRestarts=0
InvocationID=
"""


def test_systemctl_show_blocks_become_what_was_seen() -> None:
    seen = parse_show(SHOW, ["app.service", "worker.service", "typo.service"])
    assert seen[0] == Seen("app.service", True, "active (running)", epoch="4f0c", unit=True)
    assert seen[1] == Seen("worker.service", False, "activating (auto-restart) after 2 restarts",
                           epoch="9a1b", unit=True)
    assert seen[1].line() == "worker.service activating (auto-restart) after 2 restarts"
    assert seen[2].final and seen[2].line() == "typo.service not loaded (not-found)"


def test_a_failed_unit_without_restarts_says_its_result_and_status() -> None:
    seen = unit_seen("app.service", {"LoadState": "loaded", "ActiveState": "failed",
                                     "Result": "exit-code", "ExecMainStatus": "1",
                                     "NRestarts": "0"})
    assert seen.final and seen.line() == "app.service failed (exit-code, status 1)"


def test_a_short_answer_from_systemctl_is_an_error_not_a_guess() -> None:
    with pytest.raises(ReadinessError, match="answered 1 units of 2"):
        parse_show(SHOW.split("\n\n", maxsplit=1)[0], ["a.service", "b.service"])


# -- after a rotation: the gate again for the reloaded units ----------------------------------


FAILED_SHOW = """LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
ExecMainStatus=1
NRestarts=0
InvocationID=77aa
"""
ACTIVE_SHOW = SHOW.split("\n\n", maxsplit=1)[0] + "\n"


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ``systemctl`` printing the file ``show.txt`` (what the test says)."""
    answer = tmp_path / "show.txt"
    program = tmp_path / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/argv.txt"\ncat "{answer}"\n')
    program.chmod(0o755)
    monkeypatch.setattr(readiness, "SYSTEMCTL", str(program))
    monkeypatch.setattr(readiness, "systemd_running", lambda: True)
    return answer


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_a_failed_unit_after_a_rotation_degrades_naming_the_secret_and_unit(
        tmp_path: Path, systemctl: Path) -> None:
    systemctl.write_text(FAILED_SHOW)
    cfg = load(tmp_path, '[readiness]\nunits = ["app.service", "other.service"]\n'
                         'settle_seconds = 0\ntimeout_seconds = 5\n').readiness
    rec = Recorder(str(tmp_path / "state"))
    rec.start()
    rec.finish(State.READY)
    regate = Regate(cfg, rec)
    assert not regate.run([("prod/db", "app.service")])
    assert rec.doc["condition"] == "degraded" and rec.doc["state"] == "ready"
    assert rec.doc["warnings"] == ["readiness after rotation: prod/db -> app.service: "
                                   "app.service failed (exit-code, status 1)"]
    assert rec.doc["readiness"]["after_rotation"] == {"passed": 0, "failed": 1}
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[-2:] == ["--", "app.service"]  # the reloaded unit only
    text = telemetry.render(telemetry.Figures(True, 1.0, 0.0), degraded=True, requests={},
                            regates=rec.doc["readiness"]["after_rotation"])
    assert 'agent_readiness_after_rotation_total{outcome="failed"} 1' in text

    systemctl.write_text(ACTIVE_SHOW)  # the next rotation's gate passes: healthy again
    assert regate.run([("prod/db", "app.service")])
    assert rec.doc["condition"] == "healthy" and rec.doc["warnings"] == []
    assert rec.doc["readiness"]["after_rotation"] == {"passed": 1, "failed": 1}
    # another job's gate goes on from the counts state.json holds
    again = Recorder.resume(str(tmp_path / "state"))
    assert Regate(cfg, again).run([("prod/db", "app.service")])
    assert again.doc["readiness"]["after_rotation"] == {"passed": 2, "failed": 1}


def test_plan_shows_what_the_gate_waits_for(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
[readiness]
units = ["app.service"]
settle_seconds = 5
[[readiness.checks]]
http = "http://127.0.0.1:8080/healthz"
expect_status = [200, 401]
[[readiness.checks]]
command = ["/usr/bin/pg_isready", "-q"]
timeout_seconds = 3
""")
    text = plan.render(plan.build(cfg, nominal_facts("m5.large"), "m5.large"))
    section = text.split("\nreadiness\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section == [
        "  after READY=1, all at once for 5 s, within 600 s (a round every 2 s):",
        "  app.service active",
        "  http://127.0.0.1:8080/healthz: status 200, 401, within 5 s",
        "  /usr/bin/pg_isready -q: exit 0, within 3 s"]
    without = plan.render(plan.build(load(tmp_path, ""), nominal_facts("m5.large"), "m5.large"))
    assert "readiness\n  (none configured: CONTINUE once the agent's own phases are done)" in (
        without)


def test_status_shows_what_is_not_ready_yet() -> None:
    doc = {"state": "running", "condition": "healthy", "phases": [
        {"name": "readiness", "state": "running", "duration_ms": None,
         "detail": "waiting for app.service activating (start)"}],
        "readiness": {"settle_seconds": 10, "ready_since": None, "seen": [
            {"name": "app.service", "ready": False, "saw": "activating (start)"},
            {"name": "http://127.0.0.1:8080/healthz", "ready": True, "saw": "200"}]}}
    text = status.render(doc, "/run/agent")
    assert "readiness  running         -  waiting for app.service activating (start)" in text
    lines = text.split("\nreadiness  1 of 2 not ready\n", 1)[1].splitlines()[:2]
    assert [line.split() for line in lines] == [
        ["NOT", "READY", "app.service", "activating", "(start)"],
        ["ready", "http://127.0.0.1:8080/healthz", "200"]]
    assert status.exit_code(doc) == 3
