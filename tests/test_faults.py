"""The fault matrix: every fault and every bad input ends inside the contract.

Each class of fault gets a case (or a systematic sweep): bad configuration is exit 78 and
one line before anything is fetched; bad data at boot is exit 1 and one line, ``state``
``failed``, ``on_failure`` sent, nothing half-published and the earlier generation intact;
a hostile state file makes ``status``/``wait`` answer in one line, promptly. Never a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import IS_ROOT, PLAIN, Booter

from agent.config import loader, validator
from agent.config.loader import Config
from agent.errors import ConfigError
from agent.schema import fields
from agent.sim import World

AGENT = [sys.executable, "-m", "agent"]


def run_agent(*args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AGENT_", "AWS_")) or k == "AGENT_CONFIG_CACHE"}
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})})


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """stderr is exactly one line (the error), no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- configuration: exit 78, one line, nothing contacted ------------------------------------

BASE = '[[secrets.files]]\nsecret_id = "s"\npath = "x"\n'
CONFIG_CASES = {
    "negative mode": (BASE + "mode = -3\n", r"secrets\.files\[0\]\.mode: -3 is negative"),
    "setuid mode": (BASE + "mode = 0o4755\n", r"bits beyond 0777"),
    "world-writable mode": (BASE + 'mode = "0666"\n', r"lets any user write"),
    "huge owner id": (BASE + 'owner = "99999999999"\n', r"owner: 99999999999 is not a valid id"),
    "negative group id": (BASE + "group = -1\n", r"group: -1 is not a valid id"),
    "owner name with a newline": (BASE + 'owner = "a\\nb"\n', r"not a user or group name"),
    "newline in path with units": (
        '[[secrets.files]]\nsecret_id = "s"\npath = "x\\nExecStartPre=/bin/sh"\n'
        'units = ["app.service"]\n', r"path: path .* holds a control character"),
    "tab in a credential name": (BASE + 'units = ["app.service"]\ncredential = "a\\tb"\n',
                                 r"credential: value .* holds a control character"),
    "newline in a unit name": (BASE + 'units = ["a\\n.service"]\n', r"is not a unit name"),
    "newline in a command argument": (BASE + 'on_change = [["/bin/echo", "a\\nb"]]\n',
                                      r"command argument .* holds a control character"),
    "NUL in secret_id": ('[[secrets.files]]\nsecret_id = "s\\u0000"\npath = "x"\n',
                         r"secret_id: value .* holds a control character"),
    "NUL in secrets.dir": ('[secrets]\ndir = "/run/a\\u0000b"\n', r"control character"),
    "relative secrets.dir": ('[secrets]\ndir = "secrets"\n', r"must be an absolute path"),
    "empty state_dir": ('state_dir = ""\n', r"state_dir: '' must be an absolute path"),
    "relative state_dir": ('state_dir = "state"\n', r"state_dir: 'state' must be an absolute"),
    "a path too long for the kernel": (f'[secrets]\ndir = "/run/{"d" * 300}"\n',
                                       r"is 300 bytes long \(at most 255\)"),
    "heartbeats every millisecond": ("[lifecycle]\nheartbeat_seconds = 0.001\n",
                                     r"must be 0 \(automatic\) or at least 1"),
    "heartbeats never": ("[lifecycle]\nheartbeat_seconds = inf\n",
                         r"lifecycle\.heartbeat_seconds: Input should be a finite number"),
    "an infinite IMDS timeout": ("[imds]\ntimeout_seconds = inf\n",
                                 r"imds\.timeout_seconds: Input should be a finite number"),
    "a NaN budget": ("[aws]\nmax_wait_seconds = nan\n", r"aws\.max_wait_seconds"),
    "a typo in a section": ('[secret]\ndir = "/run/x"\n', r"secret: unknown key \(did you "
                                                         r"mean 'secrets'\?\)"),
    "a typo in a key": ('[[secrets.files]]\nsecret_idd = "s"\npath = "x"\n',
                        r"secrets\.files\[0\]\.secret_idd: unknown key \(did you mean "
                        r"'secret_id'\?\)"),
    "absurdly nested TOML": ("a = " + "[" * 5000 + "]" * 5000 + "\n",
                             r"not valid TOML: nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
@pytest.mark.integration
def test_bad_configuration_is_78_and_one_line(tmp_path: Path, case: str) -> None:
    text, expected = CONFIG_CASES[case]
    path = tmp_path / "agent.toml"
    path.write_text(text)
    proc = run_agent("run", "--oneshot", "--config", str(path),
                     env={"AGENT_IMDS__ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 78, proc.stderr
    line = one_line(proc)
    assert line.startswith(f"agent: config {path}: "), line
    assert re.search(expected, line), line


@pytest.mark.integration
def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'state_dir = "/run/\xff\xfe"\n')
    proc = run_agent("run", "--oneshot", "--config", str(path))
    assert proc.returncode == 78
    assert one_line(proc) == f"agent: config {path}: not valid UTF-8 (byte 18): a TOML file " \
        "is UTF-8 text"


@pytest.mark.parametrize("variable", ["AGENT_SECRETS__FILES", "AGENT_SECRETS",
                                      "AGENT_TUNING__FILES"])
@pytest.mark.integration
def test_malformed_json_in_the_environment_names_the_variable(tmp_path: Path,
                                                              variable: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("")
    proc = run_agent("run", "--oneshot", "--config", str(path), env={variable: '[{"path": '})
    assert proc.returncode == 78
    line = one_line(proc)
    assert line.startswith(f"agent: environment {variable}: not valid JSON: "), line


def numeric_fields(model: type[Any], prefix: str = "") -> Iterator[tuple[str, str, type]]:
    """(section, key, type) of every number in the schema, nested sections included."""
    hints = fields.keys(model)
    for name, annotation in hints.items():
        inner = validator.section_of(annotation)
        if inner is not None and typing.get_origin(annotation) is not list:
            yield from numeric_fields(inner, f"{prefix}{name}.")
            continue
        base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is \
            typing.Annotated else annotation
        if base in (int, float):
            yield prefix.rstrip("."), name, base


NUMBERS = sorted(numeric_fields(Config))


@pytest.mark.parametrize(("section", "key", "kind"), NUMBERS,
                         ids=[f"{s}.{k}" for s, k, _ in NUMBERS])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "1e18"])
def test_every_number_is_finite_and_bounded(tmp_path: Path, section: str, key: str,
                                            kind: type, value: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text((f"[{section}]\n" if section else "") + f"{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        loader.load(str(path))
    assert f"{section + '.' if section else ''}{key}:" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_sweep_found_the_numbers() -> None:
    assert {f"{s}.{k}" for s, k, _ in NUMBERS} >= {
        "imds.timeout_seconds", "imds.max_wait_seconds", "imds.token_ttl_seconds",
        "aws.max_wait_seconds", "secrets.refresh_seconds", "secrets.hook_timeout_seconds",
        "lifecycle.heartbeat_seconds", "termination.poll_seconds",
        "termination.deadline_seconds", "image.max_age_days"}


# -- at boot: exit 1, one line, failed, on_failure sent, nothing half-published --------------


def failed_cleanly(b: Booter, proc: subprocess.CompletedProcess[str], expected: str) -> None:
    """The boot failed inside the contract."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR boot failed:" in line]
    assert len(errors) == 1 and re.search(expected, errors[0]), proc.stderr
    doc = b.doc()
    assert doc["state"] == "failed"
    assert [p for p in doc["phases"] if p["state"] == "failed"]
    assert all(p["state"] != "running" for p in doc["phases"])
    assert b.status().returncode == 1


def published(b: Booter) -> dict[str, bytes]:
    """What a reader can open now."""
    found = {}
    for name in ("db.json", "db.env", "app/db-password", "plain.txt", "tls.key"):
        try:
            found[name] = (b.secrets_dir / name).read_bytes()
        except OSError:
            continue
    return found


@pytest.mark.parametrize("value", [None, 5, ["m5.xlarge"], "m5.xlarge\nx"])
@pytest.mark.integration
def test_a_malformed_identity_document(booter: Booter, value: Any) -> None:
    booter.world.imds.instance.update(instance_type=value)
    proc = booter.run()
    failed_cleanly(booter, proc, r"IMDS identity document: instanceType is")
    assert published(booter) == {}
    assert booter.results() == [None]  # the instance was never known: the hook times out


@pytest.mark.integration
def test_secrets_dir_is_a_regular_file(booter: Booter) -> None:
    booter.secrets_dir.write_bytes(b"")
    failed_cleanly(booter, booter.run(), r"secrets\.dir .* is not a directory")
    assert booter.results() == ["ABANDON"]


@pytest.mark.integration
def test_secrets_dir_open_to_everyone_is_taken_over(booter: Booter) -> None:
    booter.secrets_dir.mkdir()
    booter.secrets_dir.chmod(0o777)
    assert booter.run().returncode == 0
    assert stat.S_IMODE(booter.secrets_dir.stat().st_mode) in (0o700, 0o711)
    assert booter.results() == ["CONTINUE"]


@pytest.mark.integration
def test_secrets_dir_of_another_user_is_refused(booter: Booter) -> None:
    if not IS_ROOT:
        pytest.skip("giving a directory to another user needs root")
    booter.secrets_dir.mkdir(mode=0o700)
    os.chown(booter.secrets_dir, 65534, 65534)
    failed_cleanly(booter, booter.run(), r"secrets\.dir .*: refused: it is owned by uid 65534")
    assert list(booter.secrets_dir.iterdir()) == []
    assert booter.results() == ["ABANDON"]


@pytest.mark.integration
def test_state_dir_of_another_user_is_refused(booter: Booter) -> None:
    if not IS_ROOT:
        pytest.skip("giving a directory to another user needs root")
    booter.state_dir.mkdir(mode=0o755)
    os.chown(booter.state_dir, 65534, 65534)
    proc = booter.run()
    assert proc.returncode == 1
    assert one_line(proc).startswith(f"agent: state_dir {booter.state_dir}: refused: it is "
                                     "owned by uid 65534")
    assert not (booter.state_dir / "state.json").exists()


@pytest.mark.integration
def test_a_lone_surrogate_in_a_json_secret(booter: Booter) -> None:
    booter.world.boto3_client("secretsmanager").create_secret(
        Name="prod/odd", SecretString='{"k": "\\ud800"}')
    booter.configure([{"secret_id": "prod/odd", "path": "odd", "key": "k"}])
    failed_cleanly(booter, booter.run(), r"secret 'prod/odd' \(secrets\.files\[0\] odd\): the "
                                         r"value is not valid Unicode")
    assert booter.results() == ["ABANDON"]


@pytest.mark.integration
def test_out_of_inodes_keeps_the_earlier_generation(world_and_tiny: tuple[World, Path]) -> None:
    world, tiny = world_and_tiny
    b = Booter(world, tiny)
    files = [{"secret_id": "prod/plain", "path": f"f{i}"} for i in range(3)]
    b.configure(files)
    assert b.run().returncode == 0, b.outputs[-1]
    before = {f"f{i}": (b.secrets_dir / f"f{i}").read_bytes() for i in range(3)}
    b.configure([*files, *({"secret_id": "prod/plain", "path": f"more/g{i}"}
                           for i in range(40))])
    proc = b.run()  # a second run in this boot (a restart with more files)
    failed_cleanly(b, proc, r"out of space or inodes")
    assert {f"f{i}": (b.secrets_dir / f"f{i}").read_bytes() for i in range(3)} == before
    assert not (b.secrets_dir / "more").exists()
    assert b.results() == ["CONTINUE"]  # the instance is in service: not abandoned now


@pytest.fixture
def world_and_tiny(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    """A world, and a tmpfs with room for the state and a few dozen inodes."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,nr_inodes=48,mode=0755", "tmpfs",
                    str(tiny)], check=True)
    try:
        with World() as world:
            world.seed(secrets={"prod/plain": PLAIN})
            yield world, tiny
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)


@pytest.mark.integration
def test_a_hung_aws_endpoint_is_given_up_within_the_budget(booter: Booter) -> None:
    with socket.socket() as hung:  # connections are accepted by the kernel, never answered
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        text = booter.config_path.read_text().replace(
            booter.world.cloud.endpoint_url, f"http://127.0.0.1:{hung.getsockname()[1]}")
        booter.config_path.write_text(text.replace("[aws]\n", "[aws]\nmax_wait_seconds = 2\n"))
        proc = booter.run()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    waited = [float(w) for w in re.findall(r"gave up after ([0-9.]+) s", proc.stderr)]
    assert waited and max(waited) <= 2.5, proc.stderr  # not botocore's 15 s read timeout


@pytest.mark.integration
def test_a_hop_limit_too_low_is_diagnosed(booter: Booter) -> None:
    booter.world.imds.hop_limit_exceeded = True
    text = booter.config_path.read_text()
    booter.config_path.write_text(text.replace(
        "[imds]\n", "[imds]\ntimeout_seconds = 0.3\nmax_wait_seconds = 2\n"))
    proc = booter.run()
    failed_cleanly(booter, proc, r"IMDS at .* unavailable after .*hop limit")
    error = booter.doc()["phases"][0]["error"]
    assert "http-put-response-hop-limit" in error and "raise it to 2" in error
    assert "hop limit" in booter.status().stdout


@pytest.mark.integration
def test_imds_disabled_says_so(booter: Booter) -> None:
    booter.world.imds.disabled = True
    failed_cleanly(booter, booter.run(), r"403\): the metadata service is disabled for this "
                                         r"instance .* or the request carried X-Forwarded-For")


# -- status and wait on a hostile state file: one line, promptly ------------------------------


def status_of(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_agent("status", "--state-dir", str(state_dir), timeout=20)


@pytest.mark.integration
def test_a_fifo_for_state_json_does_not_hang_status_or_wait(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "state.json")
    proc = status_of(tmp_path)  # a hang would time the subprocess out
    assert proc.returncode == 3
    assert one_line(proc).endswith("state.json: a FIFO, not a regular file")
    wait = run_agent("wait", "--timeout", "1", "--state-dir", str(tmp_path), timeout=20)
    assert wait.returncode == 124


@pytest.mark.parametrize(("document", "problem"), [
    ({"state": "ready", "instance": ["i-1"]}, "instance is not a dict"),
    ({"state": "ready", "phases": [1, 2]}, "phases holds something other than objects"),
    ({"state": ["ready"]}, "state is not a str"),
    ({"state": "running", "pid": 10**30}, "pid 1000000000000000000000000000000 is out of range"),
    ({"state": "ready", "warnings": [{"a": 1}]}, "warnings holds something other than strings"),
    ([1, 2, 3], "is not a JSON object"),
    ({"state": "ready", "termination": "draining"}, "termination is not a dict"),
    ({"state": "ready", "termination": {"hook": "x"}}, "termination.hook is not a dict"),
    ({"state": "ready", "termination": {"steps": "drain"}}, "termination.steps is not a list"),
    ({"state": "ready", "termination": {"steps": ["drain"]}},
     "termination.steps holds something other than objects"),
    ({"state": "ready", "phases": [{"name": ["metadata"], "state": "done"}]},
     "phases[0].name is not a str"),
    ({"state": "ready", "phases": [{"name": "metadata", "state": None, "duration_ms": "5"}]},
     "phases[0].duration_ms is not an int"),
    ({"state": "ready", "instance": {"instance_id": 1234}}, "instance.instance_id is not a str"),
    ({"state": "ready", "lifecycle": {"group": "g", "result": ["CONTINUE"]}},
     "lifecycle.result is not a str"),
])
@pytest.mark.integration
def test_a_state_file_of_the_wrong_shape(tmp_path: Path, document: Any, problem: str) -> None:
    (tmp_path / "state.json").write_text(json.dumps(document))
    for args in (["status"], ["status", "--json"]):
        proc = run_agent(*args, "--state-dir", str(tmp_path))
        assert proc.returncode == 3
        assert one_line(proc).endswith(problem)


@pytest.mark.integration
def test_a_truncated_state_file(tmp_path: Path) -> None:
    """Cut anywhere (a disk that filled, a copy cut short): one line, exit 3."""
    whole = json.dumps({"version": 1, "state": "ready", "condition": "healthy",
                        "instance": {"instance_id": "i-1"}, "phases": [
                            {"name": "metadata", "state": "done", "detail": "caf\u00e9"}]},
                       indent=2, ensure_ascii=False).encode()
    for cut in sorted({1, 2, 10, 30, len(whole) // 2, len(whole) - 40, len(whole) - 1,
                       whole.index(b"\xc3") + 1}):
        (tmp_path / "state.json").write_bytes(whole[:cut])
        for args in (["status"], ["status", "--json"]):
            proc = run_agent(*args, "--state-dir", str(tmp_path))
            assert proc.returncode == 3, (cut, proc.stderr)
            assert one_line(proc).endswith("is not valid JSON"), cut


@pytest.mark.integration
def test_a_state_file_nested_deep(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = status_of(tmp_path)
    assert proc.returncode == 3
    assert one_line(proc).endswith("is not valid JSON")


@pytest.mark.integration
def test_a_state_file_that_is_a_symlink_or_huge(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text('{"state": "ready"}')
    (tmp_path / "state.json").symlink_to(tmp_path / "elsewhere.json")
    assert one_line(status_of(tmp_path)).endswith("state.json: a symlink, not a regular file")
    (tmp_path / "state.json").unlink()
    (tmp_path / "state.json").write_text(" " * (2 << 20) + "{}")
    assert one_line(status_of(tmp_path)).endswith("state.json: larger than 1 MiB (2097154 bytes)")
