"""Issue 5: heartbeats, fleet-safe completion, termination and spot drains, warm pools,
other readiness signals, faults while resident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import DB, PLAIN, Booter, eventually

from agent.lifecycle.hook import HookResult, Target, known_state, outcome
from agent.sim import World
from agent.sim.autoscaling import TERMINATING
from agent.sim.imds import scheduled_event
from agent.state.recorder import PhaseState

SECRETS: dict[str, str | bytes] = {"prod/db": json.dumps(DB), "prod/plain": PLAIN}
FILES = [{"secret_id": "prod/db", "path": "db.json"},
         {"secret_id": "prod/plain", "path": "plain.txt"}]


def edit(b: Booter, section: str, lines: str) -> None:
    """Add ``lines`` to ``[section]`` (appending the section when it is absent)."""
    text = b.config_path.read_text()
    if f"[{section}]\n" in text:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{lines}\n", 1)
    else:
        text += f"\n[{section}]\n{lines}\n"
    b.config_path.write_text(text)


@pytest.fixture
def cloud(tmpfs: Path) -> Iterator[Booter]:
    with World() as world:
        world.seed(secrets=SECRETS, heartbeat_timeout=60)
        b = Booter(world, tmpfs)
        b.configure(FILES)
        yield b
        b.assert_no_secret_leaked()


def action(b: Booter, transition: str = "autoscaling:EC2_INSTANCE_LAUNCHING") -> Any:
    found = [a for a in b.world.cloud.actions(b.world.instance_id) if a.transition == transition]
    return found[-1] if found else None


def add_termination_hook(b: Booter, timeout: int = 60) -> None:
    b.world.boto3_client("autoscaling").put_lifecycle_hook(
        LifecycleHookName="drain-hook", AutoScalingGroupName="web-asg",
        LifecycleTransition=TERMINATING, HeartbeatTimeout=timeout, DefaultResult="CONTINUE")


# -- the decision table (pure) -------------------------------------------------------------


def target(state: str = "Pending:Wait", hook: str = "agent-ready") -> Target:
    return Target("web-asg", hook, state, 300, reason="" if hook else "no launch hook")


@pytest.mark.parametrize(("found", "failed", "on_failure", "earlier", "expected"), [
    (target(), False, "abandon", None, (PhaseState.DONE, HookResult.CONTINUE, "CONTINUE")),
    (target(), True, "abandon", None, (PhaseState.DONE, HookResult.ABANDON, "ABANDON")),
    (target(), True, "continue", None, (PhaseState.DONE, HookResult.CONTINUE, "CONTINUE")),
    (target(), True, "none", None, (PhaseState.DONE, None, None)),
    (target("InService"), False, "abandon", "CONTINUE", (PhaseState.DONE, None, "CONTINUE")),
    (target("InService"), True, "abandon", None, (PhaseState.DONE, None, None)),
    (target("Warmed:Pending:Wait"), False, "abandon", None,
     (PhaseState.DONE, HookResult.CONTINUE, "CONTINUE")),
    (target(hook=""), False, "abandon", None, (PhaseState.SKIPPED, None, None)),
    (None, True, "abandon", None, (PhaseState.SKIPPED, None, None)),
])
def test_outcome_table(found: Target | None, failed: bool, on_failure: str,
                       earlier: str | None,
                       expected: tuple[PhaseState, HookResult | None, str | None]) -> None:
    decision = outcome(found, failed=failed, on_failure=on_failure, earlier=earlier)
    assert (decision.state, decision.send, decision.result) == expected
    assert decision.detail  # always says why


def test_outcome_details() -> None:
    assert outcome(None, failed=False, on_failure="abandon", earlier=None).detail == (
        "not in an Auto Scaling group")
    assert outcome(target("InService"), failed=False, on_failure="abandon",
                   earlier="CONTINUE").detail == (
        "instance is InService: completed (CONTINUE) by an earlier run")
    assert outcome(target("InService"), failed=False, on_failure="abandon",
                   earlier=None).detail == "instance is InService: nothing pending"
    assert outcome(target(), failed=True, on_failure="none", earlier=None).detail == (
        "boot failed; lifecycle.on_failure = none: left to time out")


@pytest.mark.parametrize(("target_state", "earlier_boot", "expected"), [
    ("InService", None, "Pending:Wait"),  # the first boot: the launch action waits
    ("Warmed:Stopped", None, "Warmed:Pending:Wait"),  # launching into the warm pool
    ("InService", {"target_lifecycle_state": "Warmed:Stopped"}, "Pending:Wait"),  # out of it
    ("InService", {"target_lifecycle_state": "InService"}, None),  # a reboot: ask
    ("InService", {"instance_type": "m5.large"}, None),  # an older history: ask
    ("Warmed:Running", {"target_lifecycle_state": "Warmed:Running"}, None),
    ("Terminated", None, None),
    (None, None, None),  # IMDS does not say: ask
])
def test_known_state_from_imds_and_history(target_state: str | None,
                                           earlier_boot: dict[str, str] | None,
                                           expected: str | None) -> None:
    assert known_state(target_state, earlier_boot) == expected


# -- the launch hook ----------------------------------------------------------------------


@pytest.mark.integration
def test_heartbeats_during_a_slow_boot(cloud: Booter) -> None:
    edit(cloud, "lifecycle", "heartbeat_seconds = 1")
    cloud.world.cloud.action_latency["GetSecretValue"] = 2.4  # a slow boot
    proc = cloud.run()
    assert proc.returncode == 0, proc.stderr
    record = action(cloud)
    assert record.result == "CONTINUE"
    assert record.heartbeats >= 2
    assert cloud.doc()["lifecycle"]["heartbeats"] == record.heartbeats  # none after CONTINUE


@pytest.mark.integration
def test_default_heartbeat_is_a_third_of_the_timeout(tmpfs: Path) -> None:
    with World() as world:
        # a heartbeat every 2 s; 6 s from the launch leaves a loaded machine time to start
        world.seed(secrets=SECRETS, heartbeat_timeout=6)
        b = Booter(world, tmpfs)
        b.configure(FILES)
        world.cloud.action_latency["GetSecretValue"] = 3.2
        started = time.monotonic()
        assert b.run().returncode == 0
        took = time.monotonic() - started
        record = action(b)
        assert record.result == "CONTINUE" and record.completed_by == "api"
        assert record.heartbeats >= 1
        assert record.heartbeats <= took / 2 + 1


@pytest.mark.integration
def test_throttled_completion_is_retried(cloud: Booter) -> None:
    cloud.world.cloud.fail_next("CompleteLifecycleAction", count=2)
    assert cloud.run().returncode == 0
    assert action(cloud).result == "CONTINUE"
    assert len(cloud.world.cloud.calls("CompleteLifecycleAction")) == 3
    assert cloud.doc()["condition"] == "healthy"


@pytest.mark.integration
def test_heartbeats_outlast_a_completion_throttled_past_the_timeout(tmpfs: Path) -> None:
    """Throttled for longer than the hook's HeartbeatTimeout, the completion keeps being
    retried while heartbeats keep the action alive; admitted at last, it completes once."""
    with World() as world:
        world.seed(secrets=SECRETS, heartbeat_timeout=10)  # timed out 10 s after launch...
        b = Booter(world, tmpfs)
        b.configure(FILES)
        edit(b, "lifecycle", "heartbeat_seconds = 1")  # ...or after the last heartbeat
        world.cloud.fail_next("CompleteLifecycleAction", count=1_000_000)  # until cleared
        proc = b.start_daemon("--oneshot")
        first = eventually(lambda: world.cloud.calls("CompleteLifecycleAction"), timeout=30)[0]
        # more than a HeartbeatTimeout of throttled completions: alive only by heartbeats
        beats = eventually(lambda: [c for c in world.cloud.calls(
            "RecordLifecycleActionHeartbeat") if c.at > first.at + 10], timeout=60)
        assert len(world.cloud.throttled("CompleteLifecycleAction")) >= 2
        assert action(b).result is None  # still pending, 10 s after the first attempt
        world.cloud.clear_faults()
        assert b.collect(proc, timeout=120) == 0
        record = action(b)
        assert (record.result, record.completed_by) == ("CONTINUE", "api")
        admitted = [c for c in world.cloud.calls("CompleteLifecycleAction") if not c.throttled]
        assert len(admitted) == 1
        assert beats and record.heartbeats >= 3
        doc = b.doc()
        assert doc["condition"] == "healthy" and doc["lifecycle"]["result"] == "CONTINUE"
        b.assert_no_secret_leaked()


@pytest.mark.integration
def test_lost_completion_answer_counts_as_ours(cloud: Booter) -> None:
    cloud.world.cloud.fail_next("CompleteLifecycleAction", code="InternalFailure", status=500,
                                message="answer lost", after=True)
    assert cloud.run().returncode == 0
    assert action(cloud).result == "CONTINUE"
    doc = cloud.doc()
    assert doc["condition"] == "healthy"
    assert doc["lifecycle"]["result"] == "CONTINUE"


@pytest.mark.integration
def test_several_launch_hooks_without_a_name_fail_the_boot(cloud: Booter) -> None:
    cloud.world.boto3_client("autoscaling").put_lifecycle_hook(
        LifecycleHookName="second", AutoScalingGroupName="web-asg",
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=60)
    text = cloud.config_path.read_text().replace('hook_name = "agent-ready"', "")
    cloud.config_path.write_text(text)
    proc = cloud.run()
    assert proc.returncode == 1
    assert "has several launch hooks (agent-ready, second): set lifecycle.hook_name" in proc.stderr


@pytest.mark.integration
def test_unknown_hook_name_fails_the_boot(cloud: Booter) -> None:
    text = cloud.config_path.read_text().replace('hook_name = "agent-ready"',
                                                 'hook_name = "nope"')
    cloud.config_path.write_text(text)
    proc = cloud.run()
    assert proc.returncode == 1
    assert "lifecycle.hook_name 'nope' is not a launch hook of group web-asg" in proc.stderr


@pytest.mark.integration
def test_access_denied_on_lifecycle_calls_names_the_permission(cloud: Booter) -> None:
    cloud.world.cloud.fail_next("DescribeLifecycleHooks", code="AccessDenied", status=403,
                                message="not authorized")
    proc = cloud.run()
    assert proc.returncode == 1
    assert "needs autoscaling:DescribeLifecycleHooks" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- other readiness signals -----------------------------------------------------------------


@pytest.mark.integration
def test_cloudformation_signal_and_marker_file(cloud: Booter, tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    cloud.world.cloud.signals.expect("web-stack", "WebGroup")
    edit(cloud, "signal", f'cloudformation_stack = "web-stack"\n'
                          f'cloudformation_resource = "WebGroup"\nmarker_file = "{marker}"')
    assert cloud.run().returncode == 0
    (sent,) = cloud.world.cloud.signals.received
    assert (sent.stack, sent.resource, sent.unique_id, sent.status) == (
        "web-stack", "WebGroup", cloud.world.instance_id, "SUCCESS")
    assert marker.exists()

    cloud.configure([*FILES, {"secret_id": "prod/absent", "path": "x"}])
    edit(cloud, "signal", f'cloudformation_stack = "web-stack"\n'
                          f'cloudformation_resource = "WebGroup"\nmarker_file = "{marker}"')
    assert cloud.run().returncode == 1
    assert cloud.world.cloud.signals.received[-1].status == "FAILURE"
    assert not marker.exists()


@pytest.mark.integration
def test_failed_signal_only_degrades(cloud: Booter) -> None:
    edit(cloud, "signal", 'cloudformation_stack = "no-stack"\ncloudformation_resource = "R"')
    assert cloud.run().returncode == 0
    doc = cloud.doc()
    assert doc["condition"] == "degraded"
    assert "Stack no-stack does not exist" in doc["warnings"][0]


# -- warm pools ----------------------------------------------------------------------------


@pytest.mark.integration
def test_warm_pool_then_in_service(tmpfs: Path) -> None:
    with World() as world:
        instance = world.seed(secrets=SECRETS, warm_pool="Warmed:Stopped")
        b = Booter(world, tmpfs)
        b.configure(FILES)
        assert b.run().returncode == 0
        doc = b.doc()
        assert doc["phases"][1]["state"] == "skipped"
        assert "warm pool" in doc["phases"][1]["detail"]
        assert doc["phases"][2]["state"] == "done"  # tuning runs in the warm pool
        assert not (b.secrets_dir / "db.json").exists()
        assert [a.result for a in world.cloud.actions(instance)] == ["CONTINUE"]
        assert "(warm pool)" in doc["phases"][-1]["detail"]

        # the next start, into service: the full boot
        world.cloud.launch("web-asg", instance)
        world.imds.instance.update(target_lifecycle_state="InService")
        assert b.run().returncode == 0
        assert json.loads((b.secrets_dir / "db.json").read_bytes()) == DB
        assert [a.result for a in world.cloud.actions(instance)] == ["CONTINUE", "CONTINUE"]
        b.assert_no_secret_leaked()


@pytest.mark.integration
def test_warm_pool_secrets_when_asked(tmpfs: Path) -> None:
    with World() as world:
        world.seed(secrets=SECRETS, warm_pool="Warmed:Stopped")
        b = Booter(world, tmpfs)
        b.configure(FILES)
        edit(b, "lifecycle", "warm_pool_secrets = true")
        assert b.run().returncode == 0
        assert (b.secrets_dir / "plain.txt").read_text() == PLAIN


@pytest.mark.integration
def test_warmed_running_promoted_without_restart(tmpfs: Path) -> None:
    with World() as world:
        instance = world.seed(secrets=SECRETS, warm_pool="Warmed:Running")
        b = Booter(world, tmpfs)
        b.configure(FILES)
        edit(b, "termination", "poll_seconds = 1")
        with b.daemon():
            assert not (b.secrets_dir / "db.json").exists()
            world.cloud.launch("web-asg", instance)
            world.imds.instance.update(target_lifecycle_state="InService")
            eventually((b.secrets_dir / "db.json").exists, timeout=15)
            eventually(lambda: [a.result for a in world.cloud.actions(instance)]
                       == ["CONTINUE", "CONTINUE"])
            # the promotion's job says what it did when it ends (after the hook's CONTINUE)
            eventually(lambda: b.doc()["instance"]["target_lifecycle_state"] == "InService")


# -- termination, spot, rebalance ----------------------------------------------------------


def drain_script(tmp_path: Path, name: str, seconds: float) -> str:
    log = tmp_path / "drain.log"
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\necho "{name} start" >> "{log}"\nsleep {seconds}\n'
                      f'echo "{name} end" >> "{log}"\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.integration
def test_termination_notice_drains_wipes_and_completes_the_hook(cloud: Booter,
                                                                tmp_path: Path) -> None:
    add_termination_hook(cloud)
    first = drain_script(tmp_path, "first", 2)  # the hook is found while these run (the
    second = drain_script(tmp_path, "second", 2)  # drain's job loads the SDK meanwhile)
    edit(cloud, "termination", f'poll_seconds = 1\ndeadline_seconds = 20\n'
                               f'commands = [["{first}"], ["{second}"]]')
    edit(cloud, "lifecycle", "heartbeat_seconds = 1")
    with cloud.daemon() as daemon:
        assert (cloud.secrets_dir / "db.json").exists()
        cloud.world.cloud.terminate("web-asg", cloud.world.instance_id or "")
        cloud.world.imds.instance.update(target_lifecycle_state="Terminated")
        record = eventually(lambda: cloud.doc().get("termination"), timeout=20)
        assert record["reason"] == "autoscaling"
        assert [s["result"] for s in record["steps"]] == ["ok", "ok"]
        assert (tmp_path / "drain.log").read_text().split("\n")[:4] == [
            "first start", "first end", "second start", "second end"]
        assert record["secrets_wiped"] is True
        assert list(cloud.secrets_dir.iterdir()) == []
        hook = action(cloud, TERMINATING)
        assert hook.result == "CONTINUE" and hook.completed_by == "api"
        assert hook.heartbeats >= 2  # kept alive while the commands ran
        assert record["hook"]["result"] == "CONTINUE"
        assert daemon.poll() is None  # stays until the machine stops it
        status = cloud.status()
        assert status.returncode == 0
        assert "terminating (autoscaling): target lifecycle state Terminated" in status.stdout
        assert f"  {first}: ok" in status.stdout
        assert "terminating hook: CONTINUE -> web-asg/drain-hook" in status.stdout
        assert "secrets wiped: yes" in status.stdout


@pytest.mark.integration
def test_drain_deadline_skips_what_does_not_fit(cloud: Booter, tmp_path: Path) -> None:
    slow = drain_script(tmp_path, "slow", 5)
    never = drain_script(tmp_path, "never", 0)
    edit(cloud, "termination", f'poll_seconds = 1\ndeadline_seconds = 1\n'
                               f'commands = [["{slow}"], ["{never}"]]')
    with cloud.daemon():
        cloud.world.imds.instance.update(target_lifecycle_state="Terminated")
        record = eventually(lambda: cloud.doc().get("termination"), timeout=20)
        assert "timed out" in record["steps"][0]["result"]
        assert record["steps"][1]["result"] == "skipped: deadline passed"
        assert "never start" not in (tmp_path / "drain.log").read_text()


@pytest.mark.integration
def test_spot_interruption_drains_before_the_deadline(cloud: Booter, tmp_path: Path) -> None:
    cloud.world.imds.instance.update(market="spot")
    step = drain_script(tmp_path, "spot-drain", 0)
    edit(cloud, "termination", f'poll_seconds = 1\ncommands = [["{step}"]]')
    with cloud.daemon():
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        cloud.world.imds.instance.update(spot_action={"action": "terminate", "time": when})
        record = eventually(lambda: cloud.doc().get("termination"), timeout=20)
        assert record["reason"] == "spot"
        assert when in record["notice"]
        assert record["steps"] == [{"step": step, "result": "ok"}]
        assert record["hook"] is None  # the group has no termination hook
        assert record["secrets_wiped"]


@pytest.mark.integration
def test_rebalance_only_runs_its_command(cloud: Booter, tmp_path: Path) -> None:
    cloud.world.imds.instance.update(market="spot")
    step = drain_script(tmp_path, "rebalance", 0)
    edit(cloud, "termination", f'poll_seconds = 1\nrebalance_command = ["{step}"]')
    with cloud.daemon():
        cloud.world.imds.instance.update(rebalance={"noticeTime": "2026-11-26T12:00:00Z"})
        record = eventually(lambda: cloud.doc().get("rebalance"), timeout=20)
        assert record["command"] == "ok"
        path = "/latest/meta-data/events/recommendations/rebalance"
        polls = cloud.world.imds.count("GET", path)
        eventually(lambda: cloud.world.imds.count("GET", path) >= polls + 2, timeout=20)
        # two more polls saw the same notice: it ran nothing again
        assert (tmp_path / "drain.log").read_text().count("rebalance start") == 1
        assert "termination" not in cloud.doc()
        assert (cloud.secrets_dir / "db.json").exists()
        assert "rebalance  rebalance recommended at 2026-11-26T12:00:00Z" in cloud.status().stdout


@pytest.mark.integration
def test_imds_outage_while_resident_degrades_then_recovers(cloud: Booter) -> None:
    edit(cloud, "termination", "poll_seconds = 1")
    with cloud.daemon() as daemon:
        cloud.world.imds.disabled = True
        doc = eventually(lambda: (d := cloud.doc())["condition"] == "degraded" and d,
                         timeout=15)
        assert "IMDS unreachable" in doc["warnings"][0]
        assert daemon.poll() is None
        cloud.world.imds.disabled = False
        eventually(lambda: cloud.doc()["condition"] == "healthy", timeout=15)


@pytest.mark.integration
def test_watchdog_pings_and_sigterm_stops_promptly(cloud: Booter) -> None:
    """WATCHDOG=1 reaches a notify socket; SIGTERM exits 0 quickly with STOPPING=1."""
    import socket

    sock_path = cloud.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    env = {**cloud.env(), "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                             str(cloud.config_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert sum("WATCHDOG=1" in m for m in messages) >= 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        messages.append(sock.recv(4096).decode())
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
        cloud.outputs += [out, err, *messages]
        sock.close()
        os.unlink(sock_path)
    assert proc.returncode == 0
    statuses = [m for m in messages if "STATUS=" in m]
    assert any("metadata" in m for m in statuses)


@pytest.mark.integration
def test_sigterm_interrupts_a_long_sleep(cloud: Booter) -> None:
    edit(cloud, "termination", "poll_seconds = 300")  # the next timer is 5 minutes away
    with cloud.daemon() as daemon:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0  # not the 300 s until the next poll


# -- scheduled events ----------------------------------------------------------------------

EVENTS = "/latest/meta-data/events/maintenance/scheduled"


@pytest.mark.integration
def test_a_retirement_marks_the_instance_unhealthy_once_then_the_drain_runs(
        cloud: Booter, tmp_path: Path) -> None:
    add_termination_hook(cloud)
    step = drain_script(tmp_path, "drain", 0)
    edit(cloud, "termination", f'poll_seconds = 1\ncommands = [["{step}"]]')
    world = cloud.world
    world.replace_unhealthy = False  # first see that it is sent once; the group acts later
    with cloud.daemon():
        retirement = scheduled_event("instance-retirement", event_id="instance-event-0a1b2c")
        world.imds.instance.update(scheduled_events=[
            scheduled_event("system-reboot", state="completed"), retirement])
        (report,) = eventually(lambda: world.cloud.health.reports, timeout=20)
        assert (report.instance_id, report.status) == (world.instance_id, "Unhealthy")
        assert report.respect_grace_period is False  # now, not after the grace period
        polls = world.imds.count("GET", EVENTS)
        eventually(lambda: world.imds.count("GET", EVENTS) >= polls + 2, timeout=20)
        assert len(world.cloud.calls("SetInstanceHealth")) == 1  # once, though still listed
        doc = cloud.doc()
        (event,) = doc["events"]  # the active one; the completed reboot is over
        assert event["event_id"] == "instance-event-0a1b2c"
        assert event["action"].startswith("marked Unhealthy in web-asg at ")
        assert doc["health"]["status"] == "Unhealthy" and doc["condition"] == "healthy"
        status = cloud.status().stdout
        assert "scheduled  instance-retirement instance-event-0a1b2c (active), not before " \
               f"{retirement['NotBefore']}" in status
        assert "action: marked Unhealthy in web-asg" in status

        world.cloud.terminate("web-asg", world.instance_id or "")  # the group replaces it
        world.imds.instance.update(target_lifecycle_state="Terminated")
        record = eventually(lambda: cloud.doc().get("termination"), timeout=20)
        assert record["reason"] == "autoscaling"
        assert record["steps"] == [{"step": step, "result": "ok"}]
        assert action(cloud, TERMINATING).result == "CONTINUE"
        assert record["secrets_wiped"] is True


@pytest.mark.integration
def test_the_group_replaces_an_instance_marked_unhealthy(cloud: Booter) -> None:
    """The simulated group reacts as a group does: the termination (and its drain) follows."""
    edit(cloud, "termination", "poll_seconds = 1")
    with cloud.daemon():
        cloud.world.imds.instance.update(scheduled_events=[scheduled_event("instance-stop")])
        record = eventually(lambda: cloud.doc().get("termination"), timeout=30)
        assert record["notice"] == "target lifecycle state Terminated"
        assert len(cloud.world.cloud.calls("SetInstanceHealth")) == 1


@pytest.mark.integration
def test_a_retirement_outside_a_group_is_a_warning_until_canceled(tmpfs: Path) -> None:
    with World() as world:
        world.seed(in_group=False, secrets=SECRETS)
        b = Booter(world, tmpfs)
        b.configure(FILES)
        edit(b, "termination", "poll_seconds = 1")
        with b.daemon():
            event = scheduled_event("instance-retirement", event_id="instance-event-77")
            world.imds.instance.update(scheduled_events=[event])
            doc = eventually(lambda: (d := b.doc())["condition"] == "degraded" and d,
                             timeout=20)
            (warning,) = doc["warnings"]
            assert warning.startswith("scheduled event: instance-retirement instance-event-77 "
                                      f"not before {event['NotBefore']}: not in an Auto Scaling "
                                      "group")
            assert "not in an Auto Scaling group" in b.status().stdout
            world.imds.instance.update(scheduled_events=[
                {**event, "State": "canceled", "Description": "[Canceled] " +
                 event["Description"]}])
            doc = eventually(lambda: (d := b.doc())["condition"] == "healthy" and d,
                             timeout=20)
            assert doc["events"] == [] and doc["warnings"] == []
            assert world.cloud.calls("SetInstanceHealth") == []


@pytest.mark.integration
def test_scheduled_events_off_reads_none(cloud: Booter) -> None:
    edit(cloud, "termination", "poll_seconds = 1\nscheduled_events = false")
    with cloud.daemon():
        cloud.world.imds.instance.update(
            scheduled_events=[scheduled_event("instance-retirement")])
        path = "/latest/meta-data/autoscaling/target-lifecycle-state"
        polls = cloud.world.imds.count("GET", path)
        eventually(lambda: cloud.world.imds.count("GET", path) >= polls + 2, timeout=20)
        assert cloud.world.imds.count("GET", EVENTS) == 0
        assert cloud.world.cloud.calls("SetInstanceHealth") == []


@pytest.mark.integration
def test_a_denied_set_instance_health_is_a_warning_not_retried(cloud: Booter) -> None:
    edit(cloud, "termination", "poll_seconds = 1")
    cloud.world.cloud.fail_next("SetInstanceHealth", code="AccessDenied", status=403,
                                message="not authorized")
    with cloud.daemon():
        cloud.world.imds.instance.update(
            scheduled_events=[scheduled_event("instance-retirement")])
        doc = eventually(lambda: (d := cloud.doc())["condition"] == "degraded" and d,
                         timeout=20)
        assert "the instance role needs autoscaling:SetInstanceHealth" in doc["warnings"][0]
        polls = cloud.world.imds.count("GET", EVENTS)
        eventually(lambda: cloud.world.imds.count("GET", EVENTS) >= polls + 2, timeout=20)
        assert len(cloud.world.cloud.calls("SetInstanceHealth")) == 1
        assert "termination" not in cloud.doc()
