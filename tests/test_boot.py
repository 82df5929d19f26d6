"""Integration: `agent run` as a process against the simulated cloud, onto real tmpfs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import envfile
from agent.sim import World

DB = {"username": "app", "password": "pw-Zq8!\"quoted\" $dollar `tick`", "port": 5432}
PLAIN = "plain-secret-7f3a9c"
BINARY = bytes(range(256)) + b"\x00tail-secret-bytes"
SECRET_MARKERS = ["pw-Zq8!", PLAIN, "tail-secret-bytes"]
FILES: list[dict[str, Any]] = [
    {"secret_id": "prod/db", "path": "db.json"},
    {"secret_id": "prod/db", "path": "db.env", "format": "env", "mode": "0440",
     "group": "nogroup"},
    {"secret_id": "prod/db", "path": "app/db-password", "key": "password", "owner": "nobody"},
    {"secret_id": "prod/plain", "path": "plain.txt"},
    {"secret_id": "prod/bin", "path": "tls.key", "mode": "0400"},
]
TUNING = """
[[tuning.files]]
path = "{root}/tuning/app.env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"
"""


class Booter:
    """One simulated cloud, one tmpfs, and the agent run against them as a process."""

    def __init__(self, world: World, tmpfs: Path) -> None:
        self.world = world
        self.root = tmpfs
        self.state_dir = tmpfs / "state"
        self.secrets_dir = tmpfs / "secrets"
        self.config_path = tmpfs / "agent.toml"
        self.outputs: list[str] = []

    def configure(self, files: list[dict[str, Any]] = FILES, extra: str = "",
                  secrets_dir: Path | None = None) -> None:
        text = self.world.agent_config(secrets_dir or self.secrets_dir, self.state_dir, files)
        self.config_path.write_text(text + TUNING.format(root=self.root) + extra)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(self.world.env())
        return env

    def agent(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                              text=True, env=self.env(), timeout=timeout)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.agent("run", "--oneshot", "--config", str(self.config_path), *extra)

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.agent("status", "--state-dir", str(self.state_dir), *extra)

    def doc(self) -> dict[str, Any]:
        text = (self.state_dir / "state.json").read_text()
        self.outputs.append(text)
        return dict(json.loads(text))

    def results(self) -> list[str | None]:
        return [a.result for a in self.world.cloud.actions(self.world.instance_id)]

    def assert_no_secret_leaked(self) -> None:
        for text in self.outputs:
            for marker in SECRET_MARKERS:
                assert marker not in text


@pytest.fixture
def booter(tmpfs: Path) -> Iterator[Booter]:
    with World() as world:
        world.seed(secrets={"prod/db": json.dumps(DB), "prod/plain": PLAIN, "prod/bin": BINARY})
        b = Booter(world, tmpfs)
        b.configure()
        yield b
        b.assert_no_secret_leaked()


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
    assert [p["state"] for p in doc["phases"]] == ["done"] * 4
    assert doc["instance"]["instance_id"] == booter.world.instance_id
    assert doc["instance"]["auto_scaling_group"] == "web-asg"
    assert doc["lifecycle"] == {"group": "web-asg", "hook": "agent-ready", "result": "CONTINUE"}
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
    lifecycle = doc["phases"][3]
    assert lifecycle["state"] == "done"
    assert "completed (CONTINUE) by an earlier run" in lifecycle["detail"]
    assert doc["condition"] == "healthy"


def test_action_completed_by_someone_else_degrades(booter: Booter) -> None:
    booter.world.boto3_client("autoscaling").complete_lifecycle_action(
        AutoScalingGroupName="web-asg", LifecycleHookName="agent-ready",
        InstanceId=booter.world.instance_id, LifecycleActionResult="CONTINUE")
    # the instance is InService before the agent ran: nothing pending, nothing sent
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("CompleteLifecycleAction")) == 1
    assert "nothing pending" in booter.doc()["phases"][3]["detail"]


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
    started = time.monotonic()
    proc = booter.run()
    took = time.monotonic() - started
    assert proc.returncode == 1
    assert "IMDS at http://127.0.0.1:9 unavailable" in proc.stderr
    assert took < 6
    doc = booter.doc()
    assert doc["phases"][0]["state"] == "failed"
    assert doc["phases"][3]["state"] == "skipped"


def test_throttled_fetch_is_retried(booter: Booter) -> None:
    booter.world.cloud.fail_next("GetSecretValue", count=3)
    assert booter.run().returncode == 0
    assert len(booter.world.cloud.calls("GetSecretValue")) == 6


def test_access_denied_fails_fast(booter: Booter) -> None:
    booter.world.cloud.fail_next("GetSecretValue", count=1, code="AccessDeniedException",
                                 message="not authorized to perform GetSecretValue")
    started = time.monotonic()
    proc = booter.run()
    assert proc.returncode == 1
    assert "access denied" in proc.stderr
    assert time.monotonic() - started < 10
    assert booter.results() == ["ABANDON"]


def test_instance_in_no_group_skips_lifecycle(tmpfs: Path) -> None:
    with World() as world:
        world.seed(in_group=False, secrets={"prod/plain": PLAIN})
        b = Booter(world, tmpfs)
        b.configure([{"secret_id": "prod/plain", "path": "plain.txt"}])
        assert b.run().returncode == 0
        lifecycle = b.doc()["phases"][3]
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
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                             str(booter.config_path)], env=booter.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait = booter.agent("wait", "--timeout", "30", "--state-dir", str(booter.state_dir))
        assert wait.returncode == 0
        assert proc.poll() is None  # still resident after ready
        second = booter.run()
        assert second.returncode == 75
        assert "another agent run" in second.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        booter.outputs += [out, err]
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
