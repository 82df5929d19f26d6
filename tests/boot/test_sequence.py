"""Integration: `agent run` as a process against the simulated cloud, onto real tmpfs."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from agentproc import BINARY, DB, FILES, PLAIN, Booter, eventually

from agent.boot.sequence import Boot
from agent.config import loader
from agent.instance import facts
from agent.service import envfile
from agent.service.notify import Notifier
from agent.sim import World
from agent.state.recorder import Recorder

pytestmark = pytest.mark.integration  # every test here starts servers or processes


def test_happy_boot_publishes_tunes_and_continues(booter: Booter) -> None:
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    root = booter.secrets_dir
    assert json.loads((root / "db.json").read_bytes()) == DB
    assert envfile.parse((root / "db.env").read_text()) == {
        "username": "app", "password": DB["password"], "port": "5432"}
    assert (root / "app" / "db-password").read_text() == DB["password"]
    assert (root / "plain.txt").read_text() == PLAIN
    assert (root / "tls.key").read_bytes() == BINARY
    modes = {p: stat.S_IMODE((root / p).stat().st_mode) for p in
             ("db.json", "db.env", "app/db-password", "plain.txt", "tls.key")}
    assert modes == {"db.json": 0o400, "db.env": 0o440, "app/db-password": 0o400,
                     "plain.txt": 0o400, "tls.key": 0o400}
    assert (root / "db.env").stat().st_gid == 65534
    assert (root / "app" / "db-password").stat().st_uid == 65534

    tuned = envfile.parse((booter.root / "tuning" / "app.env").read_text())
    assert set(tuned) == {"HEAP_MB", "WORKERS"}
    assert int(tuned["WORKERS"]) == 2 * len(os.sched_getaffinity(0)) + 1

    doc = booter.doc()
    assert doc["state"] == "ready" and doc["condition"] == "healthy"
    assert [p["state"] for p in doc["phases"]] == ["done", "done", "done", "skipped", "done"]
    assert doc["instance"]["instance_id"] == booter.world.instance_id
    assert doc["instance"]["auto_scaling_group"] == "web-asg"
    assert doc["lifecycle"] == {"group": "web-asg", "hook": "agent-ready", "result": "CONTINUE",
                                "heartbeats": 0, "target_lifecycle_state": "InService"}
    assert {s["path"] for s in doc["secrets"]} == {str(root / f["path"]) for f in FILES}
    assert all(s["version_id"] for s in doc["secrets"])
    assert booter.results() == ["CONTINUE"]
    assert len(booter.world.cloud.calls("GetSecretValue")) == 3  # one per distinct secret

    status = booter.status()
    assert status.returncode == 0
    assert "ready (healthy)" in status.stdout
    wait = booter.agent("wait", "--timeout", "5", "--state-dir", str(booter.state_dir))
    assert wait.returncode == 0


def test_second_run_neither_fails_nor_completes_twice(booter: Booter) -> None:
    assert booter.run().returncode == 0
    second = booter.run()
    assert second.returncode == 0, second.stderr
    assert len(booter.world.cloud.calls("CompleteLifecycleAction")) == 1
    doc = booter.doc()
    lifecycle = doc["phases"][-1]
    assert lifecycle["state"] == "done"
    assert "completed (CONTINUE) by an earlier run" in lifecycle["detail"]
    assert doc["condition"] == "healthy"


def complete_from_outside(booter: Booter) -> None:
    booter.world.boto3_client("autoscaling").complete_lifecycle_action(
        AutoScalingGroupName="web-asg", LifecycleHookName="agent-ready",
        InstanceId=booter.world.instance_id, LifecycleActionResult="CONTINUE")


def test_with_the_group_tag_a_boot_makes_two_auto_scaling_calls(booter: Booter) -> None:
    """The group from the tag, the pending action from IMDS: no DescribeAutoScalingInstances."""
    assert booter.run().returncode == 0
    calls = [c.action for c in booter.world.cloud.calls() if c.service == "autoscaling"
             and c.action not in ("CreateAutoScalingGroup", "PutLifecycleHook",
                                  "DescribeAutoScalingGroups")]
    assert calls == ["DescribeLifecycleHooks", "CompleteLifecycleAction"]
    assert booter.results() == ["CONTINUE"]


def test_action_completed_before_a_reboot_is_nothing_pending(booter: Booter) -> None:
    """After a reboot (the history knows an earlier boot of this instance) IMDS cannot tell
    whether the launch action is still pending: Auto Scaling is asked; nothing to send."""
    complete_from_outside(booter)
    booter.state_dir.mkdir()
    (booter.state_dir / "history.json").write_text(json.dumps({
        "version": 1, "instance_id": booter.world.instance_id, "instance_type": "m5.xlarge",
        "target_lifecycle_state": "InService", "boot_id": "an-earlier-boot",
        "recorded_at": "2026-11-26T12:00:00Z", "previous": None}))
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("CompleteLifecycleAction")) == 1  # the one above
    assert len(booter.world.cloud.calls("DescribeAutoScalingInstances")) == 1
    doc = booter.doc()
    assert doc["phases"][-1]["detail"] == "instance is InService: nothing pending"
    assert doc["condition"] == "healthy" and doc["warnings"] == []


def test_first_boot_with_the_action_completed_before_it_degrades(booter: Booter) -> None:
    """At an instance's first boot (the history knows no earlier one) the launch action is
    taken to be pending (IMDS says InService either way): completed by someone else before
    the agent ran (or timed out), the completion finds nothing pending: ready, degraded."""
    complete_from_outside(booter)
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("CompleteLifecycleAction")) == 2  # ours found none
    assert booter.world.cloud.calls("DescribeAutoScalingInstances") == []
    assert booter.results() == ["CONTINUE"]  # still the one completion
    doc = booter.doc()
    assert doc["condition"] == "degraded" and doc["warnings"] == [
        "lifecycle: the agent-ready action was no longer pending (timed out, or completed by "
        "someone else)"]
    assert doc["lifecycle"]["result"] is None


def test_without_a_history_auto_scaling_is_asked(booter: Booter) -> None:
    """No history (tuning.history_file = ""): a reboot would look like a first boot, so the
    lookup asks DescribeAutoScalingInstances what is pending, and completes once."""
    text = booter.config_path.read_text()
    booter.config_path.write_text(re.sub(r"(?m)^history_file = .*$", 'history_file = ""',
                                         text))
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("DescribeAutoScalingInstances")) == 1
    assert booter.results() == ["CONTINUE"]
    assert booter.doc()["condition"] == "healthy"


def test_action_completed_by_someone_else_degrades(booter: Booter) -> None:
    """A completion we did not send, while we waited (a heartbeat of ours proved it pending):
    ready, but degraded with a warning."""
    text = booter.config_path.read_text()
    booter.config_path.write_text(text.replace("[lifecycle]\n",
                                               "[lifecycle]\nheartbeat_seconds = 1\n"))
    booter.world.cloud.action_latency["GetSecretValue"] = 4.0  # a slow boot
    proc = booter.start_daemon("--oneshot")
    eventually(lambda: booter.world.cloud.actions(booter.world.instance_id)[0].heartbeats)
    complete_from_outside(booter)
    assert booter.collect(proc) == 0
    doc = booter.doc()
    assert doc["state"] == "ready" and doc["condition"] == "degraded"
    assert doc["warnings"] == ["lifecycle: the agent-ready action was no longer pending "
                               "(timed out, or completed by someone else)"]
    assert doc["lifecycle"]["result"] is None
    assert booter.status().returncode == 0


def test_missing_secret_fails_publishes_nothing_and_abandons(booter: Booter) -> None:
    booter.configure([*FILES, {"secret_id": "prod/absent", "path": "absent.txt"}])
    proc = booter.run()
    assert proc.returncode == 1
    assert "secret 'prod/absent' not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [p for p in booter.secrets_dir.rglob("*") if p.is_file()]
    assert booter.results() == ["ABANDON"]
    doc = booter.doc()
    assert doc["state"] == "failed"
    assert doc["lifecycle"]["result"] == "ABANDON"
    secrets_phase = doc["phases"][1]
    assert secrets_phase["state"] == "failed"
    assert "prod/absent" in secrets_phase["error"]
    assert booter.status().returncode == 1
    assert booter.agent("wait", "--state-dir", str(booter.state_dir)).returncode == 1


def test_type_too_small_for_the_programs_fails_the_boot(booter: Booter) -> None:
    """128 MiB left beside the reserve, all the JVM's (app.env has no share): it cannot fit."""
    booter.configure(extra='[tuning.budget]\nreserve_mib = "memory_mib - 128"\n'
                     f'[[tuning.profiles]]\nuse = "jvm"\npath = "{booter.root}/tuning/jvm.env"\n')
    proc = booter.run()
    assert proc.returncode == 1
    line = (f"tuning: m5.xlarge is too small for profile jvm -> {booter.root}/tuning/jvm.env: "
            "its values add up to 219 MiB at the program's limits (heap 16 + non-heap 171 + "
            "headroom 32), above its 128 MiB (1 of 128 MiB, ")
    assert line in proc.stderr and "Traceback" not in proc.stderr
    doc = booter.doc()
    assert doc["state"] == "failed" and booter.results() == ["ABANDON"]
    tuning = doc["phases"][2]
    assert tuning["state"] == "failed" and tuning["error"].startswith(line)
    assert not (booter.root / "tuning").exists()  # nothing of the phase is written


def test_failed_boot_keeps_the_earlier_generation(booter: Booter) -> None:
    assert booter.run().returncode == 0
    before = {p: p.read_bytes() for p in booter.secrets_dir.rglob("*") if p.is_file()}
    booter.world.boto3_client("secretsmanager").put_secret_value(
        SecretId="prod/plain", SecretString="rotated-secret-value")
    booter.configure([*FILES, {"secret_id": "prod/absent", "path": "absent.txt"}])
    assert booter.run().returncode == 1
    after = {p: p.read_bytes() for p in booter.secrets_dir.rglob("*") if p.is_file()}
    assert after == before
    assert (booter.secrets_dir / "plain.txt").read_text() == PLAIN


@pytest.mark.parametrize(("on_failure", "expected"),
                         [("continue", ["CONTINUE"]), ("none", [None])])
def test_on_failure_policy(booter: Booter, on_failure: str,
                           expected: list[str | None]) -> None:
    booter.configure([{"secret_id": "prod/absent", "path": "x"}])
    text = booter.config_path.read_text()
    booter.config_path.write_text(
        text.replace("[lifecycle]\n", f'[lifecycle]\non_failure = "{on_failure}"\n'))
    assert booter.run().returncode == 1
    assert booter.results() == expected


def test_disk_directory_is_refused(booter: Booter, disk_dir: Path) -> None:
    target = disk_dir / "secrets"
    booter.configure(secrets_dir=target)
    proc = booter.run()
    assert proc.returncode == 1
    assert "tmpfs" in proc.stderr
    assert not target.exists()
    assert booter.results() == ["ABANDON"]
    assert booter.world.cloud.calls("GetSecretValue") == []  # refused before fetching


def test_imds_503_burst_then_recovery(booter: Booter) -> None:
    booter.world.imds.fail_next(5, status=503)
    assert booter.run().returncode == 0
    assert booter.world.imds.count(status=503) == 5


def test_token_expiring_mid_boot(booter: Booter) -> None:
    booter.world.imds.token_lifetime = 0.05  # a token outlives about one request:
    booter.world.imds.latency = 0.03  # the boot's reads keep finding theirs expired
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    assert booter.world.imds.count(status=401) >= 1


def test_imds_absent_fails_within_max_wait(booter: Booter) -> None:
    text = booter.config_path.read_text().replace(booter.world.imds.endpoint,
                                                  "http://127.0.0.1:9")
    booter.config_path.write_text(text.replace("[imds]\n", "[imds]\nmax_wait_seconds = 2\n"))
    proc = booter.run()
    assert proc.returncode == 1
    waited = re.search(r"IMDS at http://127\.0\.0\.1:9 unavailable after ([0-9.]+) s "
                       r"\((\d+) attempts\)", proc.stderr)
    assert waited, proc.stderr
    assert float(waited.group(1)) <= 2 and int(waited.group(2)) > 1  # retried, within budget
    doc = booter.doc()
    assert doc["phases"][0]["state"] == "failed"
    assert doc["phases"][-1]["state"] == "skipped"


def test_throttled_fetch_is_retried(booter: Booter) -> None:
    booter.world.cloud.fail_next("GetSecretValue", count=3)
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("GetSecretValue")) == 6


def test_access_denied_fails_fast(booter: Booter) -> None:
    booter.world.cloud.fail_next("GetSecretValue", count=1, code="AccessDeniedException",
                                 message="not authorized to perform GetSecretValue")
    proc = booter.run()
    assert proc.returncode == 1
    assert "access denied" in proc.stderr
    assert len(booter.world.cloud.calls("GetSecretValue")) == 3  # one each: never retried
    assert booter.results() == ["ABANDON"]


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["secrets", "metadata"])
def test_a_failure_is_said_once_at_error_level(booter: Booter, fault: str) -> None:
    if fault == "secrets":
        booter.world.cloud.fail_next("GetSecretValue", count=1, code="AccessDeniedException",
                                     message="not authorized")
        said = "access denied"
    else:
        booter.world.imds.instance.update(instance_type=5)
        said = "instanceType is"
    proc = booter.run()
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].startswith("agent: ERROR boot failed: "), proc.stderr
    assert proc.stderr.count(said) == 1, proc.stderr  # not again as the phase's line
    assert re.search(rf"INFO {fault}: failed in \d+ ms\n", proc.stderr), proc.stderr


def test_tuning_runs_while_the_secrets_are_answered(booter: Booter) -> None:
    booter.world.cloud.action_latency["GetSecretValue"] = 1.5
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    lines = [m.group(1) for line in proc.stderr.splitlines()
             if (m := re.match(r"agent: INFO (\w+): done", line))]
    assert lines == ["metadata", "tuning", "secrets", "lifecycle"]  # not after the secrets
    durations = {p["name"]: p["duration_ms"] for p in booter.doc()["phases"]}
    assert durations["tuning"] < 1000 <= durations["secrets"]


def test_tuning_does_not_wait_for_the_hook_lookups_answer(booter: Booter) -> None:
    booter.world.cloud.action_latency["DescribeLifecycleHooks"] = 1.5
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    durations = {p["name"]: p["duration_ms"] for p in booter.doc()["phases"]}
    # tuning ended with the lookup's answer still outstanding: the lifecycle phase waited
    assert durations["tuning"] < 1000 and durations["lifecycle"] >= 300
    assert booter.results()[-1] == "CONTINUE"


def test_the_machines_facts_are_read_once_per_boot(
        booter: Booter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret's condition (in the secrets phase) and the tuning (in the boot's own thread)
    both read this machine's facts: measured once per boot. The boot's result holds what
    the resident daemon carries on with: the instance, its clients, the published secrets."""
    real, reads = facts.read_facts, []

    def counting(instance_type: str, **kwargs: Any) -> facts.Facts:
        reads.append(instance_type)
        return real(instance_type, **kwargs)

    monkeypatch.setattr(facts, "read_facts", counting)
    booter.configure([{**f, "when": "vcpus >= 1"} if f["path"] == "plain.txt" else f
                      for f in FILES])
    for name, value in booter.world.env().items():
        monkeypatch.setenv(name, value)
    rec = Recorder(str(booter.state_dir))
    rec.start()
    booted = Boot(loader.load(str(booter.config_path)), rec, Notifier(), time.monotonic()).run()
    assert booted.ready and booted.instance is not None and booted.secrets is not None
    assert (booter.secrets_dir / "plain.txt").read_text() == PLAIN  # the condition held
    tuned = envfile.parse((booter.root / "tuning" / "app.env").read_text())
    assert int(tuned["WORKERS"]) == 2 * len(os.sched_getaffinity(0)) + 1
    assert reads == ["m5.xlarge"]
    assert booted.instance.meta.identity.instance_id == booter.world.instance_id
    assert booted.instance.clients.value is not None and booted.secrets.published
    assert booted.secrets.carried() is not None


def test_a_boot_with_nothing_to_ask_aws_does_not_wait_for_it(tmpfs: Path) -> None:
    with World() as world:
        world.seed(in_group=False)
        b = Booter(world, tmpfs)
        b.configure([])  # no secrets; not in a group: no AWS request at all
        seeded = len(world.cloud.calls())
        proc = b.run()
        assert proc.returncode == 0, proc.stderr
        states = {p["name"]: p["state"] for p in b.doc()["phases"]}
        assert states == {"metadata": "done", "secrets": "skipped", "tuning": "done",
                          "readiness": "skipped", "lifecycle": "skipped"}
        assert world.cloud.calls()[seeded:] == []


def test_instance_in_no_group_skips_lifecycle(tmpfs: Path) -> None:
    with World() as world:
        world.seed(in_group=False, secrets={"prod/plain": PLAIN})
        b = Booter(world, tmpfs)
        b.configure([{"secret_id": "prod/plain", "path": "plain.txt"}])
        assert b.run().returncode == 0
        lifecycle = b.doc()["phases"][-1]
        assert lifecycle["state"] == "skipped"
        assert lifecycle["detail"] == "not in an Auto Scaling group"
        b.assert_no_secret_leaked()


def test_tags_off_finds_group_through_the_api(tmpfs: Path) -> None:
    with World() as world:
        world.seed(tags_enabled=False, secrets={"prod/plain": PLAIN})
        b = Booter(world, tmpfs)
        b.configure([{"secret_id": "prod/plain", "path": "plain.txt"}])
        assert b.run().returncode == 0
        assert b.results() == ["CONTINUE"]
        assert b.doc()["instance"]["auto_scaling_group"] == "web-asg"


def test_daemon_stays_resident_until_sigterm_and_holds_the_lock(booter: Booter) -> None:
    with booter.daemon() as daemon:
        assert daemon.poll() is None  # still resident after ready
        second = booter.run()
        assert second.returncode == 75
        assert "another agent run" in second.stderr
