"""The image: what a bake must not carry, the manifest and its age, user-data credential
scan."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from agentproc import Booter

from agent.image import checks

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "finding"),
    [
        (f"#!/bin/sh\nexport AWS_ACCESS_KEY_ID={KEY_ID}\n", "AWS access key id (line 2)"),
        (f"[default]\naws_secret_access_key = {SECRET}\n",
         "AWS secret access key assignment (line 2)"),
        ("#cloud-config\nwrite_files:\n- content: |\n    -----BEGIN RSA PRIVATE KEY-----\n",
         "private key block (line 4)"),
        ("#!/bin/sh\nDB_PASSWORD=hunter2hunter2 ./start\n", "password assignment (line 2)"),
        ("#cloud-config\napi_key: 'abcd1234efgh'\n", "password assignment (line 2)"),
    ],
)
def test_user_data_credentials_are_named_never_shown(text: str, finding: str) -> None:
    found = checks.scan_user_data(text.encode())
    assert finding in found
    for value in (KEY_ID, SECRET, "hunter2", "abcd1234"):
        assert all(value not in f for f in found)


def test_gzipped_user_data_is_scanned() -> None:
    assert checks.scan_user_data(gzip.compress(f"key={KEY_ID}".encode())) == [
        "AWS access key id (line 1)"]


@pytest.mark.parametrize("text", [
    "#!/bin/sh\nsystemctl start app\n",
    "#cloud-config\npackages: [nginx]\n",
    "password=$(aws secretsmanager get-secret-value --secret-id x)\n",  # fetched at runtime
    "",
])
def test_clean_user_data_is_not_flagged(text: str) -> None:
    assert checks.scan_user_data(text.encode()) == []


def clean_root(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "agent.service").symlink_to("/lib/systemd/system/agent.service")
    (root / "root").mkdir()
    (root / "etc/environment").write_text('PATH="/usr/bin:/bin"\n')
    return root


def test_clean_image_has_no_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert checks.bake_problems(clean_root(tmp_path), "/run/agent/secrets", "/run/agent") == []


def test_each_thing_a_bake_must_not_carry(tmp_path: Path, disk_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = clean_root(tmp_path)
    (root / "root/.aws").mkdir()
    (root / "root/.aws/credentials").write_text(f"aws_access_key_id = {KEY_ID}\n")
    (root / "home/admin/.aws").mkdir(parents=True)
    (root / "home/admin/.aws/config").write_text("[default]\n")
    (root / "etc/profile.d").mkdir()
    (root / "etc/profile.d/aws.sh").write_text(f"export AWS_SECRET_ACCESS_KEY={SECRET}\n")
    (root / "etc/systemd/system/multi-user.target.wants/agent.service").unlink()
    leftover = disk_dir / "run/agent/secrets/.gen-000001"  # on disk, not a tmpfs
    leftover.mkdir(parents=True)
    (leftover / "db.json").write_text("{}")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "x")
    problems = checks.bake_problems(root, "/run/agent/secrets", "/run/agent")
    problems += [p for p in checks.bake_problems(disk_dir, "/run/agent/secrets", "/none")
                 if "left under" in p]
    text = "\n".join(problems)
    assert f"credential file {root}/root/.aws/credentials" in text
    assert f"credential file {root}/home/admin/.aws/config" in text
    assert "etc/profile.d/aws.sh sets AWS_SECRET_ACCESS_KEY" in text
    assert "$AWS_SESSION_TOKEN is set" in text
    assert "agent.service is not enabled" in text
    assert "1 files left under the secrets directory" in text
    assert KEY_ID not in text and SECRET not in text


@pytest.mark.integration
def test_boot_flags_old_image_and_credential_in_user_data(booter: Booter,
                                                          tmp_path: Path) -> None:
    manifest = tmp_path / "image.json"
    built = time.time() - 200 * 86400
    manifest.write_text(json.dumps({"built_at": "2026-05-10T00:00:00Z",
                                    "built_at_epoch": built, "agent": "0.1.0"}))
    text = booter.config_path.read_text()
    booter.config_path.write_text(text + f'\n[image]\nmanifest = "{manifest}"\n'
                                         "max_age_days = 90\n")
    booter.world.imds.instance.update(
        user_data=f"#!/bin/sh\nexport AWS_ACCESS_KEY_ID={KEY_ID}\n".encode())
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    doc = booter.doc()
    assert doc["state"] == "ready" and doc["condition"] == "degraded"
    assert doc["image"]["age_days"] >= 199
    warnings = "\n".join(doc["warnings"])
    assert "image: built 200 days ago, past image.max_age_days = 90" in warnings
    assert "user-data: looks like it holds a credential: AWS access key id (line 2)" in warnings
    status = booter.status()
    assert status.returncode == 0
    assert "image      built 2026-05-10T00:00:00Z (200.0 days ago)" in status.stdout
    assert KEY_ID not in status.stdout + proc.stderr + json.dumps(doc)
