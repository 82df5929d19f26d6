"""``python -m agent.sim serve`` (:mod:`agent.sim.__main__`): its command line and seed file
checked before anything is served, and the process that answers IMDS and AWS until SIGTERM."""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from agent.sim.__main__ import SEED_KEYS, _address, _seed_arguments, main
from agent.sim.world import SAMPLE_SECRETS

# -- the command line, in process (a unit test fails if anything listens) --------------------


def test_an_address_is_host_and_port() -> None:
    assert _address("127.0.0.1:4566") == ("127.0.0.1", 4566)
    assert _address(":0") == ("", 0)
    for text in ("4566", "127.0.0.1:", "127.0.0.1:http"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:PORT"):
            _address(text)


def test_without_a_seed_file_the_demo_s_secrets() -> None:
    assert _seed_arguments(None) == {"secrets": SAMPLE_SECRETS}


def test_a_seed_file_s_binary_secrets_are_base64(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"size": 2, "secrets": {
        "prod/db": "pw", "prod/key": {"base64": base64.b64encode(b"\x00\xff").decode()}}}))
    assert _seed_arguments(seed) == {"size": 2, "secrets": {"prod/db": "pw",
                                                            "prod/key": b"\x00\xff"}}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command line prints; nothing was served (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize(("content", "problem"), [
    ('{"grop": "x"}', "unknown keys ['grop'] (known: group, "),
    ("{not json", "Expecting property name enclosed in double quotes"),
    ('{"secrets": {"prod/key": {"base64": "%%%"}}}', "Only base64 data is allowed"),
    ('{"secrets": {"prod/key": {"base64": "AAA"}}}', "Incorrect padding"),
    ('{"secrets": {"prod/key": {"hex": "00"}}}', "'base64'"),
    (None, "No such file or directory"),
])
def test_a_bad_seed_file_is_one_line_and_nothing_served(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
        problem: str) -> None:
    seed = tmp_path / "seed.json"
    if content is not None:
        seed.write_text(content)
    line = refused(["serve", "--seed", str(seed)], capsys)
    assert line.startswith(f"python -m agent.sim serve: error: argument --seed: {seed}: ")
    assert problem in line


def test_a_bad_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(["serve", "--aws", "localhost"], capsys) == (
        "python -m agent.sim serve: error: argument --aws: expected HOST:PORT, got 'localhost'")


def test_help_lists_every_seed_key_and_the_control_api(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for key in SEED_KEYS:
        assert f"\n  {key} " in text
    for path in ("/_sim/state", "/_sim/aws", "/_sim/launch", "/_sim/imds"):
        assert path in text


# -- the process -----------------------------------------------------------------------------


class Served:
    """A ``python -m agent.sim serve`` process and its ready line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.sim", "serve", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, self.process.communicate(timeout=30)[1]
        self.ready: dict[str, Any] = json.loads(line)

    def terminate(self) -> tuple[int, float, str]:
        """SIGTERM: (exit status, seconds to exit, stderr)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=15)
        return self.process.returncode, time.monotonic() - started, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def serving() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for each in started:
        each.kill()


def client(aws: str, service: str) -> Any:
    session = boto3.session.Session(aws_access_key_id="testing",
                                    aws_secret_access_key="testing", region_name="us-east-1")
    return session.client(service, endpoint_url=aws)


def imds(endpoint: str, path: str) -> tuple[int, bytes]:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("PUT", "/latest/api/token",
                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        token = conn.getresponse().read().decode()
        conn.request("GET", path, headers={"X-aws-ec2-metadata-token": token})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def refuses(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    try:
        socket.create_connection((parts.hostname or "", parts.port or 0), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
def test_serve_answers_imds_and_aws_then_stops_cleanly_on_sigterm(
        serving: list[Served]) -> None:
    served = Served()
    serving.append(served)
    ready = served.ready
    assert set(ready) == {"instance_id", "imds", "aws", "group", "hook", "secrets"}
    assert imds(ready["imds"], "/latest/meta-data/instance-id") == (
        200, ready["instance_id"].encode())
    assert client(ready["aws"], "secretsmanager").get_secret_value(
        SecretId="demo/tls-key")["SecretBinary"] == SAMPLE_SECRETS["demo/tls-key"]
    (instance,) = client(ready["aws"], "autoscaling").describe_auto_scaling_instances(
        InstanceIds=[ready["instance_id"]])["AutoScalingInstances"]
    assert (instance["AutoScalingGroupName"], instance["LifecycleState"]) == (
        ready["group"], "Pending:Wait")
    status, seconds, err = served.terminate()
    assert (status, err) == (0, "")
    assert seconds < 5
    assert refuses(ready["imds"]) and refuses(ready["aws"])


@pytest.mark.integration
def test_serve_on_fixed_ports_again_after_sigterm(serving: list[Served]) -> None:
    """The addresses given serve, and serve again as soon as the first process is gone."""
    imds_port, aws_port = free_port(), free_port()
    args = ("--imds", f"127.0.0.1:{imds_port}", "--aws", f"127.0.0.1:{aws_port}")
    first = Served(*args)
    serving.append(first)
    assert (first.ready["imds"], first.ready["aws"]) == (
        f"http://127.0.0.1:{imds_port}", f"http://127.0.0.1:{aws_port}")
    client(first.ready["aws"], "autoscaling").describe_auto_scaling_groups()
    imds(first.ready["imds"], "/latest/meta-data/instance-id")
    assert first.terminate()[0] == 0
    second = Served(*args)
    serving.append(second)
    assert second.ready["aws"] == first.ready["aws"]
    assert second.ready["instance_id"] != first.ready["instance_id"]  # a fresh cloud
    assert imds(second.ready["imds"], "/latest/meta-data/instance-id")[1] == (
        second.ready["instance_id"].encode())
    assert second.terminate()[0] == 0


@pytest.mark.integration
def test_serve_a_seeded_fleet_with_latency(serving: list[Served], tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"size": 2, "hook": None, "secrets": {"prod/db": "pw"}}))
    served = Served("--seed", str(seed), "--latency", "0.3")
    serving.append(served)
    ready = served.ready
    assert (ready["hook"], ready["secrets"]) == (None, ["prod/db"])
    fleet = ready["fleet"]
    assert len(fleet) == 2 and fleet[ready["instance_id"]] == ready["imds"]
    for instance_id, endpoint in fleet.items():
        assert imds(endpoint, "/latest/meta-data/instance-id") == (200, instance_id.encode())
    secrets = client(ready["aws"], "secretsmanager")
    started = time.monotonic()
    assert secrets.get_secret_value(SecretId="prod/db")["SecretString"] == "pw"
    assert time.monotonic() - started >= 0.3
    assert served.terminate()[0] == 0
