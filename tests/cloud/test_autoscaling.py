"""Auto Scaling as the agent calls it: a failure is one LifecycleError line naming the
operation (and the permission, when denied); an action no longer pending is told apart; the
instance's state and group come from its own record."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from agent.cloud import autoscaling
from agent.errors import AwsError, LifecycleError


class Answers:
    """Stands where the AWS clients do: each call gets the next answer (or raises it)."""

    def __init__(self, *answers: dict[str, Any] | BaseException) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        self.calls.append((service, operation, params))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def refused(code: str, message: str, operation: str = "CompleteLifecycleAction") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


def test_access_denied_names_the_permission() -> None:
    aws = Answers(refused("AccessDenied", "User is not authorized", "DescribeLifecycleHooks"))
    with pytest.raises(LifecycleError) as info:
        autoscaling.call(aws, "describe_lifecycle_hooks", AutoScalingGroupName="web")
    assert str(info.value) == ("autoscaling describe_lifecycle_hooks: access denied: the "
                               "instance role needs autoscaling:DescribeLifecycleHooks")
    assert aws.calls == [("autoscaling", "describe_lifecycle_hooks",
                          {"AutoScalingGroupName": "web"})]


def test_an_action_no_longer_pending_is_told_apart() -> None:
    aws = Answers(refused("ValidationError", "No active Lifecycle Action found with instance "
                                             "ID i-1"))
    with pytest.raises(autoscaling.NotPending):
        autoscaling.call(aws, "complete_lifecycle_action")
    other = Answers(refused("ValidationError", "Group web not found"))
    with pytest.raises(LifecycleError, match=r"^autoscaling complete_lifecycle_action: "):
        autoscaling.call(other, "complete_lifecycle_action")


def test_the_clients_own_failure_keeps_its_line() -> None:
    aws = Answers(AwsError("autoscaling DescribeAutoScalingInstances: gave up after 300 s"))
    with pytest.raises(LifecycleError, match=r"^autoscaling DescribeAutoScalingInstances: gave "):
        autoscaling.instance_state(aws, "i-1")


def test_the_instance_state_and_group_are_its_own_record() -> None:
    aws = Answers({"AutoScalingInstances": [
        {"InstanceId": "i-2", "LifecycleState": "InService", "AutoScalingGroupName": "other"},
        {"InstanceId": "i-1", "LifecycleState": "Pending:Wait", "AutoScalingGroupName": "web"}]})
    assert autoscaling.instance_state(aws, "i-1") == ("Pending:Wait", "web")
    assert aws.calls == [("autoscaling", "describe_auto_scaling_instances",
                          {"InstanceIds": ["i-1"]})]
    assert autoscaling.instance_state(Answers({"AutoScalingInstances": []}), "i-1") == ("", "")


def test_the_api_name() -> None:
    assert autoscaling.api_name("record_lifecycle_action_heartbeat") == (
        "RecordLifecycleActionHeartbeat")
