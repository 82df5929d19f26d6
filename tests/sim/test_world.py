"""World: the seeded simulated cloud, in process and as `python -m agent.sim serve`."""

from __future__ import annotations

import base64
import functools
import http.client
import inspect
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from agent.sim import World
from agent.sim.world import SAMPLE_SECRETS

pytestmark = pytest.mark.integration  # every test here starts servers or processes

STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture
def world() -> Iterator[World]:
    with World() as sim:
        yield sim


def request(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """One HTTP exchange on a fresh connection: (status, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request(method, parts.path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def imds_token(endpoint: str) -> str:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    status, token = request("PUT", endpoint + "/latest/api/token", ttl)
    assert status == 200
    return token.decode()


def imds_get(endpoint: str, path: str) -> tuple[int, bytes]:
    headers = {"X-aws-ec2-metadata-token": imds_token(endpoint)}
    return request("GET", endpoint + path, headers)


def control(url: str, body: dict[str, Any] | None = None) -> Any:
    if body is None:
        status, answer = request("GET", url)
    else:
        status, answer = request("POST", url, body=json.dumps(body).encode())
    assert status == 200
    return json.loads(answer)


def test_seed_and_default_credential_chain(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    instance_id = world.seed(
        secrets={"prod/db": '{"user": "app", "password": "pw"}', "prod/tls-key": b"\x00\xffkey"},
        ssm_parameters={"/app/token": "t0k3n"},
    )
    for name in STATIC_KEYS:
        monkeypatch.delenv(name, raising=False)
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    session = boto3.session.Session()  # endpoints, region and credentials from world.env()
    secrets = session.client("secretsmanager")
    assert json.loads(secrets.get_secret_value(SecretId="prod/db")["SecretString"])["user"] == "app"
    assert secrets.get_secret_value(SecretId="prod/tls-key")["SecretBinary"] == b"\x00\xffkey"
    parameter = session.client("ssm").get_parameter(Name="/app/token", WithDecryption=True)
    assert parameter["Parameter"]["Value"] == "t0k3n"
    assert parameter["Parameter"]["Type"] == "SecureString"
    credentials = session.get_credentials()
    assert credentials is not None
    assert credentials.method == "iam-role"
    assert world.imds.count(path_prefix="/latest/meta-data/iam/security-credentials/") >= 2

    autoscaling = world.boto3_client("autoscaling")
    (instance,) = autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"]
    assert instance["InstanceId"] == instance_id
    assert instance["LifecycleState"] == "Pending:Wait"
    (hook,) = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName="web-asg")["LifecycleHooks"]
    assert (hook["LifecycleHookName"], hook["HeartbeatTimeout"]) == ("agent-ready", 300)
    (action,) = world.cloud.actions(instance_id)
    assert (action.group, action.hook, action.result) == ("web-asg", "agent-ready", None)


def test_imds_matches_the_moto_instance(world: World) -> None:
    instance_id = world.seed(instance_type="c5.2xlarge", region="eu-west-1")
    (reservation,) = world.boto3_client("ec2").describe_instances()["Reservations"]
    moto_instance = reservation["Instances"][0]
    document = json.loads(
        imds_get(world.imds.endpoint, "/latest/dynamic/instance-identity/document")[1]
    )
    assert document["instanceId"] == instance_id == moto_instance["InstanceId"]
    assert document["instanceType"] == "c5.2xlarge" == moto_instance["InstanceType"]
    assert document["availabilityZone"] == "eu-west-1a"
    assert document["region"] == "eu-west-1"
    assert document["privateIp"] == moto_instance["PrivateIpAddress"]
    assert document["imageId"] == moto_instance["ImageId"]
    group = imds_get(
        world.imds.endpoint, "/latest/meta-data/tags/instance/aws:autoscaling:groupName"
    )
    assert group == (200, b"web-asg")
    assert (
        imds_get(world.imds.endpoint, "/latest/meta-data/autoscaling/target-lifecycle-state")[1]
        == b"InService"
    )
    assert world.env()["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_a_group_of_several_instances_each_with_its_imds(world: World) -> None:
    first = world.seed(size=3)
    assert world.instance_ids[0] == first and len(set(world.instance_ids)) == 3
    (reservation,) = world.boto3_client("ec2").describe_instances()["Reservations"]
    addresses = {i["InstanceId"]: i["PrivateIpAddress"] for i in reservation["Instances"]}
    for instance_id in world.instance_ids:
        endpoint = world.imds_for(instance_id).endpoint
        assert world.env(instance_id)["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == endpoint
        document = json.loads(imds_get(endpoint, "/latest/dynamic/instance-identity/document")[1])
        assert document["instanceId"] == instance_id
        assert document["privateIp"] == addresses[instance_id]
        assert f'endpoint = "{endpoint}"' in world.agent_config("/s", "/t",
                                                                instance_id=instance_id)
    assert [a.result for a in world.cloud.actions()] == [None, None, None]  # all launching


def test_an_instance_marked_unhealthy_is_replaced(world: World) -> None:
    instance_id = world.seed()
    world.boto3_client("autoscaling").put_lifecycle_hook(
        LifecycleHookName="drain", AutoScalingGroupName="web-asg",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=60)
    world.boto3_client("autoscaling").set_instance_health(
        InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)
    assert world.imds.instance.snapshot().target_lifecycle_state == "Terminated"
    assert [a.hook for a in world.cloud.actions(instance_id) if a.result is None] == [
        "agent-ready", "drain"]


def test_seed_without_hook_without_group_without_tags(world: World) -> None:
    world.seed(hook=None)
    (instance,) = world.boto3_client("autoscaling").describe_auto_scaling_instances()[
        "AutoScalingInstances"
    ]
    assert instance["LifecycleState"] == "InService"
    assert world.cloud.actions() == []


def test_seed_outside_any_group(world: World) -> None:
    instance_id = world.seed(in_group=False, tags_enabled=False)
    assert (
        world.boto3_client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    )
    assert imds_get(world.imds.endpoint, "/latest/meta-data/instance-id") == (
        200,
        instance_id.encode(),
    )
    assert imds_get(world.imds.endpoint, "/latest/meta-data/tags/instance/")[0] == 404
    assert (
        imds_get(world.imds.endpoint, "/latest/meta-data/autoscaling/target-lifecycle-state")[0]
        == 404
    )


def test_agent_config_is_valid_toml(world: World, tmp_path: Path) -> None:
    world.seed()
    text = world.agent_config(
        tmp_path / "secrets",
        tmp_path / "state",
        secret_files=[
            {"secret_id": "prod/db", "path": "db.env", "format": "env", "mode": "0400"},
            {"secret_id": "prod/tls-key", "path": "tls.key"},
        ],
    )
    config = tomllib.loads(text)
    assert config["state_dir"] == str(tmp_path / "state")
    assert config["imds"]["endpoint"] == world.imds.endpoint
    assert config["aws"]["endpoint_url"] == world.cloud.endpoint_url
    assert config["secrets"]["dir"] == str(tmp_path / "secrets")
    assert config["secrets"]["files"][0] == {
        "secret_id": "prod/db",
        "path": "db.env",
        "format": "env",
        "mode": "0400",
    }
    assert config["lifecycle"]["hook_name"] == "agent-ready"


def test_serve_subprocess(tmp_path: Path) -> None:
    seed = {
        "hook": "agent-ready",
        "secrets": {
            "prod/db": "pw",
            "prod/key": {"base64": base64.b64encode(b"\x01\x02").decode()},
        },
    }
    (tmp_path / "seed.json").write_text(json.dumps(seed))
    env = {k: v for k, v in os.environ.items() if k not in STATIC_KEYS}
    argv = [sys.executable, "-m", "agent.sim", "serve", "--imds", "127.0.0.1:0"]
    argv += ["--aws", "127.0.0.1:0", "--seed", str(tmp_path / "seed.json")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["instance_id"].startswith("i-")
        state = control(ready["aws"] + "/_sim/state")
        assert [a["result"] for a in state["actions"]] == [None]

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        secrets = session.client("secretsmanager", endpoint_url=ready["aws"])
        assert secrets.get_secret_value(SecretId="prod/key")["SecretBinary"] == b"\x01\x02"
        session.client("autoscaling", endpoint_url=ready["aws"]).complete_lifecycle_action(
            AutoScalingGroupName="web-asg",
            LifecycleHookName="agent-ready",
            LifecycleActionResult="CONTINUE",
            InstanceId=ready["instance_id"],
        )
        state = control(ready["aws"] + "/_sim/state")
        assert [(a["result"], a["completed_by"]) for a in state["actions"]] == [("CONTINUE", "api")]
        assert state["calls"]["GetSecretValue"] == 1

        control(
            ready["aws"] + "/_sim/imds",
            {"target_lifecycle_state": "Terminated", "fail_next": {"count": 1, "status": 503}},
        )
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        assert request("PUT", ready["imds"] + "/latest/api/token", ttl)[0] == 503
        path = "/latest/meta-data/autoscaling/target-lifecycle-state"
        assert imds_get(ready["imds"], path) == (200, b"Terminated")
        log = control(ready["aws"] + "/_sim/imds")["requests"]
        assert ["PUT", "/latest/api/token", 503] in log

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_launch_again_and_time_out_before_completion(world: World) -> None:
    """The control API's by-hand faults: a new launch, a hook that expires mid-boot."""
    instance_id = world.seed(secrets={"prod/db": "pw"})
    autoscaling = world.boto3_client("autoscaling")
    complete = functools.partial(autoscaling.complete_lifecycle_action,
                                 AutoScalingGroupName="web-asg", LifecycleHookName="agent-ready",
                                 LifecycleActionResult="CONTINUE", InstanceId=instance_id)
    complete()
    aws = world.cloud.endpoint_url
    state = control(aws + "/_sim/launch")  # GET: only the state
    assert [a["result"] for a in state["actions"]] == ["CONTINUE"]
    state = control(aws + "/_sim/launch", {})
    assert [a["result"] for a in state["actions"]] == ["CONTINUE", None]
    control(aws + "/_sim/aws", {"time_out_before": "CompleteLifecycleAction"})
    autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])  # not that action
    assert world.cloud.actions(instance_id)[-1].result is None
    with pytest.raises(ClientError, match="No active Lifecycle Action found"):
        complete()
    last = world.cloud.actions(instance_id)[-1]
    assert (last.result, last.completed_by) == ("ABANDON", "timeout")
    control(aws + "/_sim/launch", {})
    complete()  # once only: the next completion is answered as usual
    assert world.cloud.actions(instance_id)[-1].result == "CONTINUE"


def test_launch_needs_a_group(world: World) -> None:
    world.seed(in_group=False)
    status, body = request("POST", world.cloud.endpoint_url + "/_sim/launch", body=b"{}")
    assert status == 400 and b"no instance of an Auto Scaling group" in body


def serve_help() -> str:
    proc = subprocess.run([sys.executable, "-m", "agent.sim", "serve", "--help"],
                          capture_output=True, text=True, timeout=30, check=True)
    return proc.stdout


def test_serve_help_documents_every_seed_key() -> None:
    text = serve_help()
    assert "World.seed arguments" not in text
    keys = [name for name, p in inspect.signature(World.seed).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]
    section = text.split("seed file (--seed FILE.json)")[1].split("\n\n")[0]
    assert [line.split()[0] for line in section.splitlines()[1:]
            if line.startswith("  ") and not line.startswith("   ")] == keys
    for path in ("/_sim/state", "/_sim/aws", "/_sim/launch", "/_sim/imds"):
        assert path in text


def test_serve_default_seed_has_the_demo_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in STATIC_KEYS}
    bad = tmp_path / "seed.json"
    bad.write_text('{"grop": "x"}')
    refused = subprocess.run([sys.executable, "-m", "agent.sim", "serve", "--seed", str(bad)],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(
        f"python -m agent.sim serve: error: argument --seed: {bad}: unknown keys ['grop']")
    process = subprocess.Popen([sys.executable, "-m", "agent.sim", "serve"],
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["secrets"] == sorted(SAMPLE_SECRETS)
        assert (ready["group"], ready["hook"]) == ("web-asg", "agent-ready")
        session = boto3.session.Session(aws_access_key_id="testing",
                                        aws_secret_access_key="testing", region_name="us-east-1")
        secrets = session.client("secretsmanager", endpoint_url=ready["aws"])
        assert secrets.get_secret_value(SecretId="demo/tls-key")["SecretBinary"] == (
            SAMPLE_SECRETS["demo/tls-key"])
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
