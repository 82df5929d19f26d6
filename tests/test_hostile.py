"""Tag values and state.json are hostile input: against the simulated cloud, as processes.

Anyone allowed to tag the instance sets a tag's value. A value that would turn a secret's
name into another account's ARN fails the boot before any secret is fetched; a value with
terminal control sequences and newlines is printed escaped wherever it shows (stderr,
state.json, ``agent status``, ``agent plan``); a forged state.json cannot drive the terminal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import Booter, clean_environment

from agent.sim import World

pytestmark = pytest.mark.integration

EVIL = "arn:aws:secretsmanager:eu-west-1:999999999999:secret:evil"
# a title change, a screen clear, and a forged second line
HOSTILE = "eu-west-1\n\x1b]0;pwned\x07\x1b[2J\x1b[Hagent: INFO boot ready\x9b"
HOSTILE_ESCAPED = "eu-west-1\\n\\x1b]0;pwned\\x07\\x1b[2J\\x1b[Hagent: INFO boot ready\\x9b"


@pytest.fixture
def world() -> Iterator[World]:
    with World() as sim:
        sim.seed(tags={"Environment": "staging"},
                 secrets={"staging/db": "staging-db-pw", "shared/api-key": "k-1"})
        yield sim


def booter(world: World, root: Path, files: list[dict[str, str]]) -> Booter:
    b = Booter(world, root)
    b.configure(files)
    return b


def hostile_tags(world: World, **tags: str) -> None:
    """The instance's tags, as IMDS serves them, now hold these values."""
    current = dict(world.imds.instance.tags or {})
    world.imds.instance.update(tags={**current, **tags})


def assert_no_control(text: str) -> None:
    """Nothing a terminal would act on: only the line breaks between lines."""
    assert not [c for c in text.replace("\n", "") if not c.isprintable()], repr(text)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line or "failed" in line]


def test_a_tag_cannot_turn_a_name_into_another_accounts_arn(world: World,
                                                             tmpfs: Path) -> None:
    world.boto3_client("secretsmanager", "eu-west-1", account="999999999999").create_secret(
        Name="evil/db", SecretString="someone-elses")
    hostile_tags(world, Environment=EVIL)
    b = booter(world, tmpfs, [{"secret_id": "shared/api-key", "path": "key"},
                              {"secret_id": "{tag:Environment}/db", "path": "db"}])
    before = len(world.cloud.calls("GetSecretValue"))
    proc = b.run()
    assert proc.returncode == 1, proc.stderr
    assert world.cloud.calls("GetSecretValue")[before:] == []  # nothing fetched at all
    message = (f"secrets.files[1]: secret_id: {{tag:Environment}} is '{EVIL}', which may not "
               "go into a secret name: ':' is not allowed (letters, digits and /_+=.@- only)")
    assert [line for line in proc.stderr.splitlines() if message in line], proc.stderr
    assert "Traceback" not in proc.stderr
    assert b.results() == ["ABANDON"]
    assert not (b.secrets_dir / "key").exists()  # all or none
    assert message in b.doc()["errors"][0]


def test_an_empty_tag_takes_the_default(world: World, tmpfs: Path) -> None:
    hostile_tags(world, Environment="")
    b = booter(world, tmpfs, [{"secret_id": "{tag:Environment|shared}/api-key",
                               "path": "key"}])
    assert b.run().returncode == 0, b.outputs[-1]
    assert (b.secrets_dir / "key").read_text() == "k-1"
    (call,) = world.cloud.calls("GetSecretValue")
    assert call.params["SecretId"] == "shared/api-key"


def test_an_empty_tag_without_default_is_one_line(world: World, tmpfs: Path) -> None:
    hostile_tags(world, Environment="")
    b = booter(world, tmpfs, [{"secret_id": "{tag:Environment}", "path": "key"}])
    proc = b.run()
    assert proc.returncode == 1
    assert world.cloud.calls("GetSecretValue") == []
    assert ("secrets.files[0]: no value for {tag:Environment}: the instance's tag "
            "'Environment' is empty (tag it, or give a default: {tag:Environment|default})"
            ) in proc.stderr


@pytest.mark.parametrize(("key", "text"), [
    ("region", "{tag:Region}"),
    ("role_arn", "arn:aws:iam::123456789012:role/{tag:Region}"),
])
def test_control_sequences_in_a_tag_are_printed_escaped(world: World, tmpfs: Path,
                                                        key: str, text: str) -> None:
    hostile_tags(world, Region=HOSTILE)
    b = booter(world, tmpfs, [{"secret_id": "shared/api-key", "path": "key", key: text}])
    proc = b.run()
    assert proc.returncode == 1, proc.stderr
    assert world.cloud.calls("GetSecretValue") == []
    assert_no_control(proc.stderr)
    assert HOSTILE_ESCAPED in proc.stderr
    assert len(error_lines(proc.stderr)) >= 1
    doc = b.doc()
    for item in doc["errors"]:
        assert_no_control(item)
    assert any(HOSTILE_ESCAPED in item for item in doc["errors"])
    status = b.status()
    assert status.returncode == 1
    assert_no_control(status.stdout)
    assert HOSTILE_ESCAPED in status.stdout
    # agent plan, on this instance (its tags from IMDS) and offline (given the same value)
    on_instance = b.agent("plan", "--config", str(b.config_path))
    offline = b.agent("plan", "--config", str(b.config_path), "--instance-type", "m5.large",
                      "--region", "us-east-1", "--account", "123456789012",
                      "--tag", f"Region={HOSTILE}")
    for planned in (on_instance, offline):
        assert planned.returncode == 1, planned.stderr
        assert_no_control(planned.stderr + planned.stdout)
        assert HOSTILE_ESCAPED in planned.stderr
        assert len(planned.stderr.strip().splitlines()) == 1, planned.stderr


def test_a_plan_prints_outside_text_escaped(tmp_path: Path) -> None:
    """A tag value that may go where it goes (a tuning value of a JSON file) is still
    escaped where plan shows it."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[[tuning.files]]\npath = "{tmp_path}/launch.json"\nformat = "json"\n'
                      "[tuning.files.values]\nROLE = \"tag('Role')\"\n")
    proc = subprocess.run([sys.executable, "-m", "agent", "plan", "--config", str(config),
                           "--instance-type", "m5.large", "--tag", f"Role={HOSTILE}"],
                          capture_output=True, text=True, env=clean_environment(), timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"ROLE = {HOSTILE_ESCAPED}" in proc.stdout
    assert_no_control(proc.stdout)


def test_a_forged_state_file_cannot_drive_the_terminal(tmp_path: Path) -> None:
    forged = "\x1b]0;owned\x07\x1b[2J\nforged line\x9b"
    doc = {"version": 1, "state": "failed", "condition": f"error{forged}",
           "updated_at": forged,
           "instance": {"instance_id": f"i-1{forged}", "instance_type": "m5.large",
                        "auto_scaling_group": forged},
           "phases": [{"name": f"secrets{forged}", "state": "failed", "duration_ms": 3,
                       "detail": "", "error": forged}],
           "secrets": [{"secret_id": forged, "path": forged, "version_id": forged,
                        "region": forged, "role": forged, "configured": "x"}],
           "skipped": [{"entry": forged, "reason": forged}],
           "lifecycle": {"group": forged, "hook": forged, "result": forged},
           "errors": [forged], "warnings": [forged]}
    (tmp_path / "state.json").write_text(json.dumps(doc))
    env = {**clean_environment(), "AGENT_STATE_DIR": str(tmp_path)}
    status = subprocess.run([sys.executable, "-m", "agent", "status"], capture_output=True,
                            text=True, env=env, timeout=30, check=False)
    assert status.returncode == 1, status.stderr
    assert_no_control(status.stdout + status.stderr)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\nforged line\\x9b" in status.stdout
    assert not any(line.startswith("forged line") for line in status.stdout.splitlines())
    wait = subprocess.run([sys.executable, "-m", "agent", "wait", "--timeout", "0"],
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    assert wait.returncode == 1
    assert_no_control(wait.stdout + wait.stderr)
