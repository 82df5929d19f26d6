"""SimCloud: moto server mode plus lifecycle hooks, faults, latency and the call log."""

from __future__ import annotations

import functools
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from agent.sim.autoscaling import LAUNCHING, TERMINATING
from agent.sim.cloud import SimCloud

pytestmark = pytest.mark.integration  # every test here starts servers or processes

GROUP = "web-asg"
HOOK = "agent-ready"


@pytest.fixture
def cloud() -> Iterator[SimCloud]:
    with SimCloud() as sim:
        yield sim


SESSION = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)


@functools.cache
def _client(endpoint_url: str, service: str) -> Any:
    config = Config(retries={"total_max_attempts": 1})  # see every injected error
    return SESSION.client(service, endpoint_url=endpoint_url, config=config)


def client(cloud: SimCloud, service: str) -> Any:
    return _client(cloud.endpoint_url, service)


def make_group(
    cloud: SimCloud,
    hooks: tuple[tuple[str, str, int, str], ...] = ((HOOK, LAUNCHING, 300, "ABANDON"),),
) -> str:
    """An ASG with one instance and the given (name, transition, timeout, default) hooks."""
    ec2, autoscaling = client(cloud, "ec2"), client(cloud, "autoscaling")
    ec2.create_launch_template(
        LaunchTemplateName="web-lt",
        LaunchTemplateData={"ImageId": "ami-0c0ffee0123456789", "InstanceType": "m5.large"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateName": "web-lt", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    for name, transition, timeout, default in hooks:
        autoscaling.put_lifecycle_hook(
            LifecycleHookName=name,
            AutoScalingGroupName=GROUP,
            LifecycleTransition=transition,
            HeartbeatTimeout=timeout,
            DefaultResult=default,
        )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    return str(group["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])


def lifecycle_state(cloud: SimCloud, instance_id: str) -> str:
    autoscaling = client(cloud, "autoscaling")
    (instance,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"
    ]
    (in_group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
        "AutoScalingGroups"
    ][0]["Instances"]
    assert in_group["LifecycleState"] == instance["LifecycleState"]
    return str(instance["LifecycleState"])


def complete(cloud: SimCloud, result: str = "CONTINUE", **ids: str) -> None:
    client(cloud, "autoscaling").complete_lifecycle_action(
        AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, LifecycleActionResult=result, **ids
    )


def heartbeat(cloud: SimCloud, **ids: str) -> None:
    client(cloud, "autoscaling").record_lifecycle_action_heartbeat(
        AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, **ids
    )


def test_launch_hook_holds_the_instance_in_pending_wait(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    (action,) = cloud.launch(GROUP, instance_id)
    assert (action.hook, action.transition, action.result) == (HOOK, LAUNCHING, None)
    assert lifecycle_state(cloud, instance_id) == "Pending:Wait"


def test_continue_puts_the_instance_in_service_once(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    complete(cloud, InstanceId=instance_id)
    assert lifecycle_state(cloud, instance_id) == "InService"
    (action,) = cloud.actions(instance_id)
    assert (action.result, action.completed_by, action.heartbeats) == ("CONTINUE", "api", 0)
    assert action.completed_at is not None
    with pytest.raises(ClientError) as error:
        complete(cloud, InstanceId=instance_id)
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert error.value.response["Error"]["Message"] == (
        f"No active Lifecycle Action found with instance ID {instance_id}"
    )
    assert len(cloud.actions()) == 1


def test_complete_by_token(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    (action,) = cloud.launch(GROUP, instance_id)
    bogus = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ClientError, match=f"No active Lifecycle Action found with token {bogus}"):
        complete(cloud, LifecycleActionToken=bogus)
    complete(cloud, "CONTINUE", LifecycleActionToken=action.token)
    assert cloud.actions()[0].result == "CONTINUE"


def test_abandon_terminates(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    complete(cloud, "ABANDON", InstanceId=instance_id)
    assert lifecycle_state(cloud, instance_id) == "Terminating"
    assert cloud.actions()[0].result == "ABANDON"


def test_unknown_hook_and_bad_result_are_validation_errors(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    autoscaling = client(cloud, "autoscaling")
    with pytest.raises(ClientError) as error:
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=GROUP,
            LifecycleHookName="someone-elses",
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )
    assert error.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as error:
        complete(cloud, "MAYBE", InstanceId=instance_id)
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert cloud.actions()[0].result is None


def test_heartbeats_are_counted_while_pending(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    heartbeat(cloud, InstanceId=instance_id)
    heartbeat(cloud, InstanceId=instance_id)
    assert cloud.actions()[0].heartbeats == 2
    complete(cloud, InstanceId=instance_id)
    with pytest.raises(ClientError, match="No active Lifecycle Action found with instance ID"):
        heartbeat(cloud, InstanceId=instance_id)


def test_heartbeat_timeout_applies_the_default_result(cloud: SimCloud) -> None:
    instance_id = make_group(cloud, ((HOOK, LAUNCHING, 1, "ABANDON"),))
    cloud.launch(GROUP, instance_id)
    time.sleep(0.6)
    heartbeat(cloud, InstanceId=instance_id)  # restarts the 1 s timer
    time.sleep(0.6)
    assert cloud.actions()[0].result is None
    time.sleep(0.6)
    (action,) = cloud.actions(instance_id)
    assert (action.result, action.completed_by, action.heartbeats) == ("ABANDON", "timeout", 1)
    assert lifecycle_state(cloud, instance_id) == "Terminating"
    with pytest.raises(ClientError, match="No active Lifecycle Action found"):
        complete(cloud, InstanceId=instance_id)


def test_no_launch_hook_means_in_service(cloud: SimCloud) -> None:
    instance_id = make_group(cloud, hooks=())
    assert cloud.launch(GROUP, instance_id) == []
    assert lifecycle_state(cloud, instance_id) == "InService"
    with pytest.raises(ClientError, match="ValidationError"):
        complete(cloud, InstanceId=instance_id)


def test_terminate_hook(cloud: SimCloud) -> None:
    hooks = ((HOOK, LAUNCHING, 300, "ABANDON"), ("drain", TERMINATING, 300, "CONTINUE"))
    instance_id = make_group(cloud, hooks)
    cloud.launch(GROUP, instance_id)
    complete(cloud, InstanceId=instance_id)
    (action,) = cloud.terminate(GROUP, instance_id)
    assert action.hook == "drain"
    assert lifecycle_state(cloud, instance_id) == "Terminating:Wait"
    client(cloud, "autoscaling").complete_lifecycle_action(
        AutoScalingGroupName=GROUP,
        LifecycleHookName="drain",
        LifecycleActionResult="CONTINUE",
        InstanceId=instance_id,
    )
    assert lifecycle_state(cloud, instance_id) == "Terminating:Proceed"
    assert [a.hook for a in cloud.actions(instance_id)] == [HOOK, "drain"]


def test_fail_next_query_and_ec2_actions(cloud: SimCloud) -> None:
    make_group(cloud, hooks=())
    autoscaling, ec2 = client(cloud, "autoscaling"), client(cloud, "ec2")
    cloud.fail_next("DescribeAutoScalingGroups", count=2)
    for _ in range(2):
        with pytest.raises(ClientError) as error:
            autoscaling.describe_auto_scaling_groups()
        assert error.value.response["Error"]["Code"] == "ThrottlingException"
        assert error.value.response["Error"]["Message"] == "Rate exceeded"
    assert autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    cloud.fail_next("DescribeInstances", code="RequestLimitExceeded", status=503, message="slow")
    with pytest.raises(ClientError) as error:
        ec2.describe_instances()
    assert error.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_fail_next_json_action(cloud: SimCloud) -> None:
    secrets = client(cloud, "secretsmanager")
    secrets.create_secret(Name="prod/db", SecretString="s3cr3t")
    cloud.fail_next("GetSecretValue")
    with pytest.raises(ClientError) as error:
        secrets.get_secret_value(SecretId="prod/db")
    assert error.value.response["Error"]["Code"] == "ThrottlingException"
    assert secrets.get_secret_value(SecretId="prod/db")["SecretString"] == "s3cr3t"
    cloud.fail_next("GetSecretValue", code="AccessDeniedException", message="no")
    with pytest.raises(ClientError, match="AccessDeniedException"):
        secrets.get_secret_value(SecretId="prod/db")


def test_calls_are_recorded(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    secrets = client(cloud, "secretsmanager")
    secrets.create_secret(Name="prod/db", SecretString="x")
    secrets.get_secret_value(SecretId="prod/db")
    complete(cloud, InstanceId=instance_id)
    (get,) = cloud.calls("GetSecretValue")
    assert (get.service, get.protocol, get.params) == (
        "secretsmanager",
        "json",
        {"SecretId": "prod/db"},
    )
    (done,) = cloud.calls("CompleteLifecycleAction")
    assert done.service == "autoscaling"
    assert done.params["InstanceId"] == instance_id
    assert done.params["LifecycleActionResult"] == "CONTINUE"
    assert [c.action for c in cloud.calls()][:2] == [
        "CreateLaunchTemplate",
        "CreateAutoScalingGroup",
    ]


def test_latency_is_added_to_every_call(cloud: SimCloud) -> None:
    autoscaling = client(cloud, "autoscaling")
    autoscaling.describe_auto_scaling_groups()
    cloud.latency = 0.15
    started = time.monotonic()
    autoscaling.describe_auto_scaling_groups()
    assert time.monotonic() - started >= 0.15


def test_each_cloud_starts_empty(cloud: SimCloud) -> None:
    make_group(cloud, hooks=())
    cloud.stop()
    with SimCloud() as fresh:
        groups = client(fresh, "autoscaling").describe_auto_scaling_groups()
        assert groups["AutoScalingGroups"] == []


def test_control_api(cloud: SimCloud) -> None:
    instance_id = make_group(cloud)
    cloud.launch(GROUP, instance_id)
    parts = urlsplit(cloud.endpoint_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", "/_sim/state")
        state = json.load(conn.getresponse())
        body = json.dumps({"fail_next": {"action": "DescribeAutoScalingGroups"}})
        conn.request("POST", "/_sim/aws", body=body)
        assert conn.getresponse().status == 200
        conn.request("GET", "/_sim/nope")
        assert conn.getresponse().status == 404
    finally:
        conn.close()
    assert state["actions"][0]["instance_id"] == instance_id
    assert state["actions"][0]["result"] is None
    assert state["calls"]["CreateAutoScalingGroup"] == 1
    with pytest.raises(ClientError, match="ThrottlingException"):
        client(cloud, "autoscaling").describe_auto_scaling_groups()


def test_quotas_throttle_each_api_as_aws_does(cloud: SimCloud) -> None:
    """A token bucket per API: the burst passes, the rest is refused in the protocol's own
    words (Auto Scaling query Throttling 400, Secrets Manager JSON ThrottlingException 400,
    EC2 RequestLimitExceeded 503); another API of the service has its own bucket."""
    make_group(cloud, hooks=())
    secrets = client(cloud, "secretsmanager")
    secrets.create_secret(Name="prod/db", SecretString="x")
    cloud.limit("autoscaling", burst=3, rate=0.001)
    cloud.limit("secretsmanager", burst=2, rate=0.001)
    cloud.limit("ec2", burst=1, rate=0.001)
    autoscaling, ec2 = client(cloud, "autoscaling"), client(cloud, "ec2")
    for _ in range(3):
        autoscaling.describe_auto_scaling_groups()
    raw: list[tuple[int, bytes]] = []  # the wire: status and body of each answer

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        raw.append((response_dict["status_code"], response_dict["body"]))

    for each in (autoscaling, secrets, ec2):
        each.meta.events.register("before-parse", keep)
    answers = []
    for call in (autoscaling.describe_auto_scaling_groups,
                 lambda: secrets.get_secret_value(SecretId="prod/db"),
                 lambda: secrets.get_secret_value(SecretId="prod/db"),
                 lambda: secrets.get_secret_value(SecretId="prod/db"),
                 ec2.describe_instances, ec2.describe_instances):
        try:
            call()
            answers.append(None)
        except ClientError as exc:
            answers.append((exc.response["Error"]["Code"],
                            exc.response["ResponseMetadata"]["HTTPStatusCode"],
                            exc.response["Error"]["Message"]))
    assert answers == [("Throttling", 400, "Rate exceeded"), None, None,
                       ("ThrottlingException", 400, "Rate exceeded"), None,
                       ("RequestLimitExceeded", 503, "Request limit exceeded.")]
    for each in (autoscaling, secrets, ec2):
        each.meta.events.unregister("before-parse", keep)
    assert raw[0][1].startswith(b'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/'
                                b'2011-01-01/"><Error><Type>Sender</Type><Code>Throttling</Code>')
    assert json.loads(raw[3][1])["__type"] == "ThrottlingException"
    assert (raw[5][0], b"<Code>RequestLimitExceeded</Code>" in raw[5][1]) == (503, True)
    assert autoscaling.describe_auto_scaling_instances()  # another API: its own bucket
    assert [c.throttled for c in cloud.calls("DescribeAutoScalingGroups")][-4:] == [
        False, False, False, True]
    assert len(cloud.throttled()) == 3


def test_a_quota_refills_at_its_rate(cloud: SimCloud) -> None:
    cloud.limit("autoscaling", burst=1, rate=20)
    autoscaling = client(cloud, "autoscaling")
    autoscaling.describe_auto_scaling_groups()
    refused = 0
    while True:  # at 20 tokens a second, one comes back within a few refusals
        try:
            autoscaling.describe_auto_scaling_groups()
            break
        except ClientError:
            refused += 1
    calls = cloud.calls("DescribeAutoScalingGroups")
    assert calls[-1].at - calls[0].at >= 1 / 20 * 0.9  # admitted again once a token refilled
    assert refused == len(cloud.throttled())


def test_set_instance_health_marks_the_instance_and_tells_the_listeners(
        cloud: SimCloud) -> None:
    instance_id = make_group(cloud, hooks=())
    replaced: list[tuple[str, str]] = []
    cloud.health.on_unhealthy.append(lambda group, iid: replaced.append((group, iid)))
    autoscaling = client(cloud, "autoscaling")
    autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy",
                                    ShouldRespectGracePeriod=False)
    (instance,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"]
    assert instance["HealthStatus"].upper() == "UNHEALTHY"
    assert replaced == [(GROUP, instance_id)]
    (report,) = cloud.health.reports
    assert (report.status, report.respect_grace_period) == ("Unhealthy", False)
    with pytest.raises(ClientError, match="No managed instance found"):
        autoscaling.set_instance_health(InstanceId="i-0000000000000000f",
                                        HealthStatus="Unhealthy")
    with pytest.raises(ClientError, match="ValidationError"):
        autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus="Sick")


def test_each_host_is_dispatched_to_its_backend_once(cloud: SimCloud,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """moto lists its package directory to dispatch a call: once per host here, not per call
    (under a lock every call takes, that serialized concurrent calls)."""
    from moto import backends

    listed = []
    real = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listed.append(1) or real())
    sm = client(cloud, "secretsmanager")
    sm.create_secret(Name="dispatch", SecretString="x")
    for _ in range(5):
        assert sm.get_secret_value(SecretId="dispatch")["SecretString"] == "x"
    client(cloud, "autoscaling").describe_auto_scaling_groups()
    assert len(listed) == 2  # the host of secretsmanager, then that of autoscaling
