"""Issue 3: rotation in daemon mode, reload hooks, credentials hand-off, SSM, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agentproc import DB, FILES, PLAIN, SECRET_MARKERS, Booter, eventually
from unitcheck import assert_systemd_accepts

from agent.secrets import generations
from agent.service import envfile
from agent.sim import World

pytestmark = pytest.mark.integration  # every test here starts servers or processes


def rotate(b: Booter, secret_id: str, value: str) -> None:
    b.world.boto3_client("secretsmanager").put_secret_value(SecretId=secret_id,
                                                            SecretString=value)


def with_config(b: Booter, files: list[dict[str, Any]] = FILES, secrets_extra: str = "",
                aws_extra: str = "") -> None:
    b.configure(files)
    text = b.config_path.read_text()
    text = text.replace("[secrets]\n", f"[secrets]\n{secrets_extra}\n", 1)
    b.config_path.write_text(text.replace("[aws]\n", f"[aws]\n{aws_extra}\n", 1))


def test_periodic_refresh_rotates_while_readers_see_whole_files(booter: Booter) -> None:
    with_config(booter, secrets_extra="refresh_seconds = 1")
    visible = booter.secrets_dir / "plain.txt"
    values = [PLAIN.encode(), b"plain-rotated-1", b"plain-rotated-2"]
    seen = {value: threading.Event() for value in values}  # what the reader itself saw
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = visible.read_bytes()
            except OSError as exc:
                bad.append(f"read failed: {exc}")
                continue
            if data in seen:
                seen[data].set()
            else:
                bad.append(f"partial or unknown content ({len(data)} bytes)")

    with booter.daemon():
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for value in values[1:]:
                rotate(booter, "prod/plain", value.decode())
                assert seen[value].wait(30), f"the reader never saw {value!r}"
        finally:
            stop.set()
            thread.join()
        assert bad == []
        current = booter.world.boto3_client("secretsmanager").describe_secret(
            SecretId="prod/plain")
        stage = {v: s for v, s in current["VersionIdsToStages"].items() if "AWSCURRENT" in s}

        def recorded() -> dict[str, Any] | None:  # state.json is written after the switch
            doc = booter.doc()
            plain = next(s for s in doc["secrets"] if s["path"].endswith("plain.txt"))
            return doc if plain["version_id"] in stage else None

        doc = eventually(recorded, timeout=30)
        assert doc["condition"] == "healthy"
        # untouched files are carried over, not refetched: db.json kept its bytes
        assert json.loads((booter.secrets_dir / "db.json").read_bytes()) == DB


def test_sighup_refreshes_now_and_unchanged_costs_no_fetch(booter: Booter) -> None:
    with booter.daemon() as daemon:  # refresh_seconds 3600: only SIGHUP refreshes
        cloud = booter.world.cloud
        fetches = len(cloud.calls("GetSecretValue"))
        generation = os.readlink(booter.secrets_dir / ".current")
        daemon.send_signal(signal.SIGHUP)
        assert booter.refreshed(1)["refresh"]["result"] == "unchanged"
        assert len(cloud.calls("DescribeSecret")) == 3  # one per distinct secret
        assert len(cloud.calls("GetSecretValue")) == fetches  # nothing changed: no fetch
        assert os.readlink(booter.secrets_dir / ".current") == generation  # nor a publish

        rotate(booter, "prod/db", json.dumps({**DB, "password": "pw-Zq8!-rotated"}))
        daemon.send_signal(signal.SIGHUP)
        assert booter.refreshed(2)["refresh"]["result"].startswith("published gen-")
        assert json.loads((booter.secrets_dir / "db.json").read_bytes())[
            "password"] == "pw-Zq8!-rotated"
        assert len(cloud.calls("GetSecretValue")) == fetches + 1  # only the rotated one
        assert os.readlink(booter.secrets_dir / ".current") != generation


def test_failed_refresh_keeps_files_degrades_then_recovers(booter: Booter) -> None:
    with_config(booter, secrets_extra="refresh_seconds = 1")
    with booter.daemon() as daemon:
        before = (booter.secrets_dir / "plain.txt").read_bytes()
        booter.world.cloud.fail_next("DescribeSecret", count=1000, code="AccessDeniedException",
                                     message="denied by the test")
        rotate(booter, "prod/plain", "plain-rotated-while-failing")
        doc = eventually(lambda: (d := booter.doc())["condition"] == "degraded" and d)
        assert any("secrets: refresh failed" in w for w in doc["warnings"])
        assert booter.status().returncode == 0  # degraded is still ready
        assert (booter.secrets_dir / "plain.txt").read_bytes() == before
        assert daemon.poll() is None  # the daemon never exits because of it

        booter.world.cloud.clear_faults()
        eventually(lambda: booter.doc()["condition"] == "healthy", timeout=15)
        assert (booter.secrets_dir / "plain.txt").read_bytes() == b"plain-rotated-while-failing"


def test_hooks_run_once_per_change_with_a_clean_environment(booter: Booter,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nenv | sort > "{tmp_path}/env.$$"\n'
                    f'echo "$AGENT_SECRET_PATH $AGENT_SECRET_ID" >> "{log}"\n')
    hook.chmod(0o755)
    files = [dict(f) for f in FILES]
    files[0]["on_change"] = [[str(hook)]]  # db.json
    files[3]["on_change"] = [[str(hook)]]  # plain.txt
    files[3]["reload_units"] = ["app.service"]
    with_config(booter, files)
    with booter.daemon() as daemon:
        assert not log.exists()  # a first publish is not a change
        rotate(booter, "prod/plain", "plain-rotated-1")
        daemon.send_signal(signal.SIGHUP)
        assert booter.refreshed(1)["refresh"]["result"].startswith("published")
        daemon.send_signal(signal.SIGHUP)  # nothing changed this time: no hook
        assert booter.refreshed(2)["refresh"]["result"] == "unchanged"
        lines = log.read_text().splitlines()
        assert lines == [f"{booter.secrets_dir / 'plain.txt'} prod/plain"]
        (env_dump,) = tmp_path.glob("env.*")
        env = env_dump.read_text()
        assert "AGENT_SECRET_VERSION=" in env
        assert "AWS_" not in env and "NOTIFY_SOCKET" not in env
        for marker in [*SECRET_MARKERS, "plain-rotated-1"]:
            assert marker not in env


def test_failing_hook_degrades_but_is_not_fatal(booter: Booter, tmp_path: Path) -> None:
    files = [dict(f) for f in FILES]
    files[3]["on_change"] = [["/bin/false"]]
    with_config(booter, files, secrets_extra="hook_timeout_seconds = 5")
    with booter.daemon() as daemon:
        rotate(booter, "prod/plain", "plain-rotated-1")
        daemon.send_signal(signal.SIGHUP)
        doc = booter.refreshed(1)
        assert "on_change of plain.txt (/bin/false) exited 1" in doc["warnings"][0]
        assert doc["condition"] == "degraded" and doc["state"] == "ready"
        assert daemon.poll() is None


def test_credentials_drop_in_is_valid_for_systemd(booter: Booter, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    files = [dict(f) for f in FILES]
    files[0]["units"] = ["app.service", "worker.service"]
    files[2]["units"] = ["app.service"]
    files[2]["credential"] = "db-password"
    with_config(booter, files, secrets_extra=f'unit_dir = "{unit_dir}"')
    assert booter.run().returncode == 0
    dropin = unit_dir / "app.service.d" / "50-agent-credentials.conf"
    lines = dropin.read_text().splitlines()
    assert lines[1:] == ["[Service]",
                         f"LoadCredential=db.json:{booter.secrets_dir / 'db.json'}",
                         f"LoadCredential=db-password:{booter.secrets_dir / 'app/db-password'}"]
    assert (unit_dir / "worker.service.d" / "50-agent-credentials.conf").exists()
    assert_systemd_accepts(unit_dir)  # both drop-ins

    with_config(booter, FILES, secrets_extra=f'unit_dir = "{unit_dir}"')  # units removed
    assert booter.run().returncode == 0
    assert not dropin.exists()


def test_ssm_secure_strings_in_batches(tmpfs: Path) -> None:
    params = {f"/prod/app/p{i:02d}": f"ssm-value-{i:02d}" for i in range(12)}
    with World() as world:
        world.seed(ssm_parameters=params)
        b = Booter(world, tmpfs)
        files = [{"source": "ssm", "parameter": name, "path": f"ssm/{name.rsplit('/', 1)[1]}"}
                 for name in params]
        b.configure(files)
        proc = b.run()
        assert proc.returncode == 0, proc.stderr
        for name, value in params.items():
            assert (b.secrets_dir / "ssm" / name.rsplit("/", 1)[1]).read_text() == value
        calls = world.cloud.calls("GetParameters")
        assert sorted(len(c.params["Names"]) for c in calls) == [2, 10]
        assert all(c.params["WithDecryption"] for c in calls)
        doc = b.doc()
        assert {s["source"] for s in doc["secrets"]} == {"ssm"}
        assert all(s["version_id"] == "1" for s in doc["secrets"])
        for text in b.outputs:
            assert "ssm-value-" not in text


def test_missing_ssm_parameter_fails_naming_it(tmpfs: Path) -> None:
    with World() as world:
        world.seed(ssm_parameters={"/prod/a": "x"})
        b = Booter(world, tmpfs)
        b.configure([{"source": "ssm", "parameter": "/prod/a", "path": "a"},
                     {"source": "ssm", "parameter": "/prod/missing", "path": "m"}])
        proc = b.run()
        assert proc.returncode == 1
        assert "parameter '/prod/missing' not found" in proc.stderr


def test_version_stage_and_version_id_select_versions(booter: Booter) -> None:
    sm = booter.world.boto3_client("secretsmanager")
    first = sm.describe_secret(SecretId="prod/plain")
    (old_version,) = [v for v, s in first["VersionIdsToStages"].items() if "AWSCURRENT" in s]
    rotate(booter, "prod/plain", "plain-rotated-1")
    files = [{"secret_id": "prod/plain", "path": "current"},
             {"secret_id": "prod/plain", "path": "previous", "version_stage": "AWSPREVIOUS"},
             {"secret_id": "prod/plain", "path": "pinned", "version_id": old_version},
             {"secret_id": "prod/db", "path": "nested.json", "key": "{u: username, p: port}",
              "format": "json"}]
    booter.configure(files)
    assert booter.run().returncode == 0
    root = booter.secrets_dir
    assert (root / "current").read_text() == "plain-rotated-1"
    assert (root / "previous").read_text() == PLAIN
    assert (root / "pinned").read_text() == PLAIN
    assert json.loads((root / "nested.json").read_text()) == {"u": "app", "p": 5432}


def test_secrets_mount_is_a_private_noswap_tmpfs(booter: Booter, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("secrets.mount mounts a tmpfs: needs root")
    target = tmp_path / "mnt" / "secrets"
    with_config(booter, secrets_extra='mount = true\nmount_size = "2m"')
    booter.config_path.write_text(booter.config_path.read_text().replace(
        f'dir = "{booter.secrets_dir}"', f'dir = "{target}"'))
    try:
        proc = booter.run()
        assert proc.returncode == 0, proc.stderr
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        (entry,) = [m for m in mounts if m[1] == str(target)]
        options = set(entry[3].split(","))
        assert entry[2] == "tmpfs"
        assert {"nosuid", "nodev", "noexec", "noswap"} <= options
        assert (target / "plain.txt").read_text() == PLAIN
        assert booter.run().returncode == 0  # already mounted: not mounted twice
        assert sum(1 for m in Path("/proc/mounts").read_text().splitlines()
                   if f" {target} " in m) == 1
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_kill_9_mid_publish_then_restart_is_consistent(tmpfs: Path) -> None:
    many = {f"bulk/s{i:03d}": f"value-{i:03d}-" + "x" * 2000 for i in range(60)}
    files = [{"secret_id": name, "path": f"bulk/{name.split('/')[1]}"} for name in many]
    with World() as world:
        world.seed(secrets=many)
        b = Booter(world, tmpfs)
        b.configure(files)
        rng = random.Random(7)
        for _ in range(6):
            proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--oneshot",
                                     "--config", str(b.config_path)], env=b.env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 0.9))
            proc.kill()
            proc.wait()
            current = generations.current(b.secrets_dir) if b.secrets_dir.exists() \
                else None
            if current is not None:  # whatever is visible is one whole generation
                for name, value in many.items():
                    path = b.secrets_dir / "bulk" / name.split("/")[1]
                    assert path.read_text() == value
            world.cloud.launch(world.group or "web-asg", world.instance_id or "")
        final = b.run()
        assert final.returncode == 0, final.stderr
        assert not [p for p in b.secrets_dir.iterdir() if p.name.endswith(".tmp")]
        assert len(generations.existing(b.secrets_dir)) <= 2
        for name, value in many.items():
            assert (b.secrets_dir / "bulk" / name.split("/")[1]).read_text() == value


def test_env_secret_through_env_format_reads_back(booter: Booter) -> None:
    assert booter.run().returncode == 0
    parsed = envfile.parse((booter.secrets_dir / "db.env").read_text())
    assert parsed["password"] == DB["password"]


def test_no_systemd_no_runtime_drop_in(booter: Booter) -> None:
    """Without systemd, /run/systemd/system is never created (it would fake sd_booted())."""
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here")
    files = [dict(f) for f in FILES]
    files[0]["units"] = ["app.service"]
    booter.configure(files)  # unit_dir: the default /run/systemd/system
    assert booter.run().returncode == 0
    assert not Path("/run/systemd/system").exists()
    doc = booter.doc()
    assert doc["condition"] == "degraded"
    assert doc["warnings"] == ["secrets: drop-in /run/systemd/system/app.service.d/"
                               "50-agent-credentials.conf not written: systemd is not running"]


def test_a_sighup_during_the_boot_is_answered_once_resident(booter: Booter) -> None:
    """Neither kills the boot nor is lost (as one sent between READY and the resident loop
    was): it waits, and the daemon refreshes as soon as it is resident."""
    booter.world.cloud.action_latency["GetSecretValue"] = 1.0  # a boot that takes a while
    with booter.daemon(ready=False) as daemon:
        eventually(lambda: booter.world.cloud.calls("GetSecretValue"))  # booting
        daemon.send_signal(signal.SIGHUP)
        booter.wait_ready()
        assert booter.refreshed(1)["refresh"]["result"] == "unchanged"
        assert daemon.poll() is None
