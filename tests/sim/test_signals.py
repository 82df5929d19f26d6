"""CloudFormation resource signals (:mod:`agent.sim.signals`): what ``SignalResource``
(cfn-signal) receives, and the ValidationError CloudFormation answers a signal to a stack or
resource that does not wait for one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from agent.sim.cloud import SimCloud
from agent.sim.signals import ResourceSignals, Signal
from agent.sim.wire import Call, SimAwsError


def signal(signals: ResourceSignals, stack: str = "web", resource: str = "Group",
           status: str = "SUCCESS", unique_id: str = "i-1") -> None:
    params = {"StackName": stack, "LogicalResourceId": resource, "UniqueId": unique_id,
              "Status": status}
    signals.interceptors[("cloudformation", "SignalResource")](
        Call("cloudformation", "SignalResource", params, "us-east-1", "query"))


def test_a_signal_to_an_expected_resource_is_received() -> None:
    signals = ResourceSignals()
    signals.expect("web", "Group")
    signal(signals, unique_id="i-1")
    signal(signals, status="FAILURE", unique_id="i-2")
    assert signals.received == [Signal("web", "Group", "i-1", "SUCCESS"),
                                Signal("web", "Group", "i-2", "FAILURE")]


@pytest.mark.parametrize(("stack", "resource", "status", "message"), [
    ("nope", "Group", "SUCCESS", "Stack nope does not exist"),
    ("web", "Other", "SUCCESS", "Resource Other does not exist for stack web"),
    ("web", "Group", "MAYBE", "Status must be SUCCESS or FAILURE"),
])
def test_a_signal_nothing_waits_for_is_a_validation_error(
        stack: str, resource: str, status: str, message: str) -> None:
    signals = ResourceSignals()
    signals.expect("web", "Group")
    with pytest.raises(SimAwsError) as error:
        signal(signals, stack, resource, status)
    assert (error.value.code, error.value.message, error.value.status) == (
        "ValidationError", message, 400)
    assert signals.received == []


def test_nothing_is_expected_at_first() -> None:
    with pytest.raises(SimAwsError, match="Stack web does not exist"):
        signal(ResourceSignals())


@pytest.fixture
def cloudformation() -> Iterator[tuple[SimCloud, Any]]:
    with SimCloud() as cloud:
        session = boto3.session.Session(aws_access_key_id="testing",
                                        aws_secret_access_key="testing", region_name="us-east-1")
        yield cloud, session.client("cloudformation", endpoint_url=cloud.endpoint_url,
                                    config=Config(retries={"total_max_attempts": 1}))


@pytest.mark.integration
def test_cfn_signal_s_call_through_botocore(cloudformation: tuple[SimCloud, Any]) -> None:
    """botocore's SignalResource succeeds on an expected resource and gets CloudFormation's
    ValidationError otherwise; moto, which lacks the call, never sees it."""
    cloud, client = cloudformation
    cloud.signals.expect("web", "Group")
    answer = client.signal_resource(StackName="web", LogicalResourceId="Group",
                                    UniqueId="i-0123456789abcdef0", Status="SUCCESS")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert cloud.signals.received == [Signal("web", "Group", "i-0123456789abcdef0", "SUCCESS")]
    with pytest.raises(ClientError) as error:
        client.signal_resource(StackName="web", LogicalResourceId="Queue",
                               UniqueId="i-0123456789abcdef0", Status="FAILURE")
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert error.value.response["Error"]["Message"] == "Resource Queue does not exist for stack web"
    assert len(cloud.signals.received) == 1
