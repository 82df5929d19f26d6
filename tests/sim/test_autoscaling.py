"""Auto Scaling semantics moto lacks (:mod:`agent.sim.autoscaling`), as AWS documents them:
lifecycle actions that wait until ``CompleteLifecycleAction`` or their heartbeat timeout,
heartbeats that restart it (up to 100 timeouts or 48 hours), and ``SetInstanceHealth``.

moto runs in process (nothing listens) and the clock is the test's own.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agent.sim import autoscaling
from agent.sim.autoscaling import (
    LAUNCHING,
    TERMINATING,
    InstanceHealth,
    LifecycleActionRecord,
    LifecycleActions,
)
from agent.sim.wire import Call, SimAwsError

GROUP = "web-asg"
HOOK = "agent-ready"
REGION = "us-east-1"
Hook = tuple[str, str, int, str]  # name, transition, HeartbeatTimeout, DefaultResult
LAUNCH_HOOK: Hook = (HOOK, LAUNCHING, 300, "ABANDON")


class Clock:
    """time.monotonic of the module under test, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(autoscaling, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


SESSION = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                region_name=REGION)


@functools.cache
def client(service: str) -> Any:
    """One client per service for the whole module (moto answers it while a mock is on)."""
    return SESSION.client(service)


@pytest.fixture(scope="module")
def moto() -> Iterator[None]:
    """moto in process for the module (resetting its EC2 backend takes half a second)."""
    with mock_aws():
        client("ec2").create_launch_template(
            LaunchTemplateName="web-lt",
            LaunchTemplateData={"ImageId": "ami-0c0ffee0123456789", "InstanceType": "m5.large"})
        yield


@pytest.fixture
def aws(moto: None) -> Iterator[Any]:
    """An Auto Scaling client; the test's group and hooks are deleted after it."""
    autoscaling = client("autoscaling")
    yield autoscaling
    for hook in autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=GROUP)[
            "LifecycleHooks"]:
        autoscaling.delete_lifecycle_hook(AutoScalingGroupName=GROUP,
                                          LifecycleHookName=hook["LifecycleHookName"])
    if autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
            "AutoScalingGroups"]:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=GROUP, ForceDelete=True)


def make_group(client: Any, *hooks: Hook) -> str:
    """A group of one instance with these hooks; the instance's id."""
    client.create_auto_scaling_group(
        AutoScalingGroupName=GROUP, MinSize=1, MaxSize=1, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateName": "web-lt", "Version": "$Latest"},
        AvailabilityZones=["us-east-1a"])
    for name, transition, timeout, default in hooks:
        client.put_lifecycle_hook(LifecycleHookName=name, AutoScalingGroupName=GROUP,
                                  LifecycleTransition=transition, HeartbeatTimeout=timeout,
                                  DefaultResult=default)
    group = client.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    return str(group["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])


def state(client: Any, instance_id: str) -> str:
    (instance,) = client.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"]
    return str(instance["LifecycleState"])


def call(interceptors: Any, action: str, **params: str) -> None:
    interceptors[("autoscaling", action)](Call("autoscaling", action, params, REGION, "query"))


def complete(actions: LifecycleActions, result: str = "CONTINUE", hook: str = HOOK,
             **ids: str) -> None:
    call(actions.interceptors, "CompleteLifecycleAction", AutoScalingGroupName=GROUP,
         LifecycleHookName=hook, LifecycleActionResult=result, **ids)


def heartbeat(actions: LifecycleActions, **ids: str) -> None:
    call(actions.interceptors, "RecordLifecycleActionHeartbeat", AutoScalingGroupName=GROUP,
         LifecycleHookName=HOOK, **ids)


def only(actions: LifecycleActions, instance_id: str) -> LifecycleActionRecord:
    (record,) = actions.records(instance_id)
    return record


def refused(action: Any, message: str) -> None:
    with pytest.raises(SimAwsError) as error:
        action()
    assert (error.value.code, error.value.message) == ("ValidationError", message)


# lifecycle actions -------------------------------------------------------------------------


def test_a_launch_waits_in_pending_wait_with_a_token(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    (started,) = actions.start(GROUP, instance_id, LAUNCHING)
    assert (started.hook, started.transition, started.heartbeat_timeout,
            started.default_result, started.result) == (HOOK, LAUNCHING, 300, "ABANDON", None)
    assert uuid.UUID(started.token).version == 4
    assert state(aws, instance_id) == "Pending:Wait"
    clock.now += 299
    assert only(actions, instance_id).result is None
    assert state(aws, instance_id) == "Pending:Wait"


def test_without_a_launch_hook_the_instance_goes_in_service(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, ("drain", TERMINATING, 300, "CONTINUE"))
    actions = LifecycleActions()
    assert actions.start(GROUP, instance_id, LAUNCHING) == []
    assert state(aws, instance_id) == "InService"
    refused(lambda: complete(actions, hook="drain", InstanceId=instance_id),
            f"No active Lifecycle Action found with instance ID {instance_id}")


def test_continue_puts_the_instance_in_service_once(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    complete(actions, InstanceId=instance_id)
    assert state(aws, instance_id) == "InService"
    record = only(actions, instance_id)
    assert (record.result, record.completed_by) == ("CONTINUE", "api")
    refused(lambda: complete(actions, InstanceId=instance_id),
            f"No active Lifecycle Action found with instance ID {instance_id}")


def test_complete_by_token_and_an_unknown_token(aws: Any, clock: Clock) -> None:
    """A token no action has is refused and completes nothing; the action's own completes it."""
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    (started,) = actions.start(GROUP, instance_id, LAUNCHING)
    unknown = str(uuid.uuid4())
    refused(lambda: complete(actions, LifecycleActionToken=unknown),
            f"No active Lifecycle Action found with token {unknown}")
    refused(lambda: complete(actions, InstanceId=instance_id, LifecycleActionToken=unknown),
            f"No active Lifecycle Action found with instance ID {instance_id}")
    assert only(actions, instance_id).result is None
    complete(actions, "ABANDON", LifecycleActionToken=started.token)
    assert only(actions, instance_id).result == "ABANDON"
    assert state(aws, instance_id) == "Terminating"


@pytest.mark.parametrize(("params", "message"), [
    ({"LifecycleHookName": "someone-elses", "InstanceId": "i-1"},
     f"No Lifecycle Hook found with name someone-elses for group {GROUP}"),
    ({"LifecycleHookName": HOOK}, "Either InstanceId or LifecycleActionToken must be specified"),
    ({"LifecycleHookName": HOOK, "InstanceId": "i-1", "LifecycleActionResult": "MAYBE"},
     "Valid values for LifecycleActionResult: CONTINUE, ABANDON"),
])
def test_a_malformed_completion_is_a_validation_error(
        aws: Any, clock: Clock, params: dict[str, str], message: str) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    params = {"AutoScalingGroupName": GROUP, "LifecycleActionResult": "CONTINUE", **params}
    refused(lambda: call(actions.interceptors, "CompleteLifecycleAction", **params), message)
    assert only(actions, instance_id).result is None


def test_the_timeout_applies_the_default_result(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, (HOOK, LAUNCHING, 60, "CONTINUE"))
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    clock.now += 59.9
    actions.expire()
    assert only(actions, instance_id).result is None
    clock.now += 0.1
    record = only(actions, instance_id)  # reading the actions applies what has elapsed
    assert (record.result, record.completed_by) == ("CONTINUE", "timeout")
    assert state(aws, instance_id) == "InService"
    refused(lambda: complete(actions, InstanceId=instance_id),
            f"No active Lifecycle Action found with instance ID {instance_id}")


def test_a_heartbeat_restarts_the_timeout(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, (HOOK, LAUNCHING, 60, "ABANDON"))
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    clock.now += 50
    heartbeat(actions, InstanceId=instance_id)
    clock.now += 59  # 109 s after the launch, 59 after the heartbeat
    assert only(actions, instance_id).result is None
    clock.now += 1
    record = only(actions, instance_id)
    assert (record.result, record.completed_by, record.heartbeats) == ("ABANDON", "timeout", 1)
    assert state(aws, instance_id) == "Terminating"
    refused(lambda: heartbeat(actions, InstanceId=instance_id),
            f"No active Lifecycle Action found with instance ID {instance_id}")


@pytest.mark.parametrize(("timeout", "limit"), [(30, 3000), (7200, 48 * 3600)])
def test_heartbeats_keep_an_action_at_most_100_timeouts_or_48_hours(
        aws: Any, clock: Clock, timeout: int, limit: int) -> None:
    instance_id = make_group(aws, (HOOK, LAUNCHING, timeout, "ABANDON"))
    actions = LifecycleActions()
    started = clock.now
    actions.start(GROUP, instance_id, LAUNCHING)
    while clock.now + timeout / 2 < started + limit:
        clock.now += timeout / 2
        heartbeat(actions, InstanceId=instance_id)
    clock.now = started + limit - 0.5
    assert only(actions, instance_id).result is None
    clock.now = started + limit
    assert only(actions, instance_id).completed_by == "timeout"


def test_time_out_applies_every_default_result_at_once(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, (HOOK, LAUNCHING, 3600, "ABANDON"))
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    actions.time_out()
    assert (only(actions, instance_id).result, state(aws, instance_id)) == (
        "ABANDON", "Terminating")


def test_the_instance_waits_for_every_hook_of_its_transition(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK, ("warm-cache", LAUNCHING, 300, "ABANDON"))
    actions = LifecycleActions()
    assert len(actions.start(GROUP, instance_id, LAUNCHING)) == 2
    complete(actions, InstanceId=instance_id)
    assert state(aws, instance_id) == "Pending:Wait"
    complete(actions, hook="warm-cache", InstanceId=instance_id)
    assert state(aws, instance_id) == "InService"


def test_abandon_ends_the_other_hooks_actions_too(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK, ("warm-cache", LAUNCHING, 300, "CONTINUE"))
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    complete(actions, "ABANDON", InstanceId=instance_id)
    assert state(aws, instance_id) == "Terminating"
    assert {(r.hook, r.result, r.completed_by) for r in actions.records(instance_id)} == {
        (HOOK, "ABANDON", "api"), ("warm-cache", "ABANDON", "abandoned")}


@pytest.mark.parametrize("result", ["CONTINUE", "ABANDON"])
def test_a_terminate_hook_proceeds_whatever_the_result(
        aws: Any, clock: Clock, result: str) -> None:
    instance_id = make_group(aws, ("drain", TERMINATING, 300, "CONTINUE"))
    actions = LifecycleActions()
    actions.start(GROUP, instance_id, LAUNCHING)
    (action,) = actions.start(GROUP, instance_id, TERMINATING)
    assert (action.hook, state(aws, instance_id)) == ("drain", "Terminating:Wait")
    complete(actions, result, hook="drain", InstanceId=instance_id)
    assert state(aws, instance_id) == "Terminating:Proceed"


def test_a_warm_pool_launch_waits_then_goes_to_its_pool_state(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    (action,) = actions.start(GROUP, instance_id, LAUNCHING, warm_pool="Warmed:Stopped")
    assert action.warm_pool == "Warmed:Stopped"
    assert state(aws, instance_id) == "Warmed:Pending:Wait"
    complete(actions, InstanceId=instance_id)
    assert state(aws, instance_id) == "Warmed:Stopped"


def test_records_are_copies(aws: Any, clock: Clock) -> None:
    instance_id = make_group(aws, LAUNCH_HOOK)
    actions = LifecycleActions()
    (started,) = actions.start(GROUP, instance_id, LAUNCHING)
    started.result = "CONTINUE"
    only(actions, instance_id).heartbeats = 9
    assert (only(actions, instance_id).result, only(actions, instance_id).heartbeats) == (None, 0)


# instance health ---------------------------------------------------------------------------


def set_health(health: InstanceHealth, **params: str) -> None:
    call(health.interceptors, "SetInstanceHealth", **params)


def test_unhealthy_marks_the_instance_and_the_group_replaces_it(aws: Any) -> None:
    instance_id = make_group(aws)
    health = InstanceHealth()
    replaced: list[tuple[str, str]] = []
    health.on_unhealthy.append(lambda group, iid: replaced.append((group, iid)))
    set_health(health, InstanceId=instance_id, HealthStatus="Healthy")
    assert replaced == []
    set_health(health, InstanceId=instance_id, HealthStatus="Unhealthy",
               ShouldRespectGracePeriod="false")
    (instance,) = aws.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"]
    assert instance["HealthStatus"].upper() == "UNHEALTHY"
    assert replaced == [(GROUP, instance_id)]
    assert [(r.group, r.status, r.respect_grace_period) for r in health.reports] == [
        (GROUP, "Healthy", True), (GROUP, "Unhealthy", False)]


def test_health_of_an_unknown_instance_or_status_is_a_validation_error(aws: Any) -> None:
    instance_id = make_group(aws)
    health = InstanceHealth()
    refused(lambda: set_health(health, InstanceId="i-0000000000000000f", HealthStatus="Unhealthy"),
            "Instance Id not found - No managed instance found for instance ID: "
            "i-0000000000000000f")
    refused(lambda: set_health(health, InstanceId=instance_id, HealthStatus="Sick"),
            "Valid values for HealthStatus: Healthy, Unhealthy")
    assert health.reports == []
