"""The AWS clients against the simulated cloud: one attempt per call on the wire, botocore's
adaptive client-side rate limit, the backoff per error and service, the request counts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.retries import bucket

from agent import DATA
from agent.cloud.aws import (
    ACCESS_DENIED,
    SERVER_ERRORS,
    THROTTLED_BACKOFF,
    THROTTLED_DEFAULT,
    THROTTLING,
    TRANSIENT_BACKOFF,
    Aws,
    is_access_denied,
    is_throttling,
    is_transient,
    pace,
)
from agent.errors import AwsError
from agent.sim.cloud import SimCloud


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimCloud]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_CONFIG_FILE": "/dev/null",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)
    with SimCloud() as sim:
        yield sim


def aws(cloud: SimCloud) -> Aws:
    return Aws("us-east-1", endpoint_url=cloud.endpoint_url, max_wait=60)


def error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.integration
def test_adaptive_rate_limit_acts_with_one_attempt_per_call(
        cloud: SimCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's adaptive mode with total_max_attempts 1: botocore retries nothing itself,
    yet its rate limiter sees every answer; after a throttle the client's requests wait for
    its client-side token bucket (and only that client's)."""
    waited: list[tuple[int, float]] = []  # (bucket, its rate) at each request that waited
    acquire = bucket.TokenBucket.acquire

    def counting(self: bucket.TokenBucket, amount: int = 1, block: bool = True) -> Any:
        waited.append((id(self), self.max_rate))
        return acquire(self, amount, block)

    monkeypatch.setattr(bucket.TokenBucket, "acquire", counting)
    client = aws(cloud)
    client.call("autoscaling", "describe_auto_scaling_groups")
    assert waited == []  # not throttled yet: no client-side limit
    cloud.fail_next("DescribeAutoScalingGroups", code="Throttling")
    client.call("autoscaling", "describe_auto_scaling_groups")  # refused, then retried by us
    assert len(cloud.calls("DescribeAutoScalingGroups")) == 3  # one attempt each on the wire
    client.call("autoscaling", "describe_auto_scaling_groups")
    assert len(waited) == 2  # the retry and the next call both waited for a token
    assert len({b for b, _ in waited}) == 1
    assert all(rate < 10 for _, rate in waited)  # a rate the limiter lowered (from none)
    client.call("secretsmanager", "list_secrets")  # another client: not limited
    assert len(waited) == 2


@pytest.mark.integration
def test_every_client_gets_the_event_handlers_and_each_attempt_tells_them(
        cloud: SimCloud) -> None:
    """``events``: botocore event handlers registered on every client the clients' home
    makes; ``request-created`` comes once per attempt that goes out (a throttled call
    retried: twice), and not for a call refused before any request is made."""
    seen: list[str] = []
    client = Aws("us-east-1", endpoint_url=cloud.endpoint_url, max_wait=60,
                 events=[("request-created", lambda event_name, **_: seen.append(event_name))])
    client.call("autoscaling", "describe_auto_scaling_groups")
    cloud.fail_next("ListSecrets", code="Throttling")
    client.call("secretsmanager", "list_secrets")
    with pytest.raises(AwsError):
        client.call("secretsmanager", "get_secret_value")  # no SecretId: nothing is sent
    assert seen == ["request-created.auto-scaling.DescribeAutoScalingGroups",
                    "request-created.secrets-manager.ListSecrets",
                    "request-created.secrets-manager.ListSecrets"]
    assert len(cloud.calls("ListSecrets")) == 2


@pytest.mark.integration
def test_every_attempt_is_counted_by_api_and_outcome(cloud: SimCloud) -> None:
    client = aws(cloud)
    cloud.fail_next("DescribeAutoScalingGroups", code="Throttling")
    client.call("autoscaling", "describe_auto_scaling_groups")
    cloud.fail_next("ListSecrets", code="AccessDeniedException", message="no")
    with pytest.raises(ClientError):
        client.call("secretsmanager", "list_secrets")
    assert client.request_counts() == {
        ("autoscaling:DescribeAutoScalingGroups", "throttled"): 1,
        ("autoscaling:DescribeAutoScalingGroups", "ok"): 1,
        ("secretsmanager:ListSecrets", "error"): 1,
    }


def test_a_throttle_backs_off_slower_than_a_blip_and_auto_scaling_slowest() -> None:
    throttled, blip = error("Throttling"), error("InternalFailure", 500)
    assert pace("secretsmanager")(blip) == pace("autoscaling")(blip) == TRANSIENT_BACKOFF
    assert pace("secretsmanager")(throttled) == THROTTLED_DEFAULT
    assert pace("autoscaling")(throttled) == THROTTLED_BACKOFF["autoscaling"]
    ordered = [TRANSIENT_BACKOFF, THROTTLED_DEFAULT, THROTTLED_BACKOFF["autoscaling"]]
    assert ordered == sorted(ordered)  # base and cap grow with the politeness needed


def test_endpoints_resolve_from_the_pruned_data_as_from_botocores_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)
    client = Aws("eu-west-1", max_wait=5)  # no endpoint_url: resolved from the data
    loader = client._session.get_component("data_loader")
    _, path = loader.load_data_with_path("endpoints")
    assert path == os.path.join(DATA, "endpoints")  # the pruned copy, not botocore's 1.2 MB
    assert loader.is_builtin_path(path)  # resolved as botocore's own data is
    assert client.client("secretsmanager").meta.endpoint_url == (
        "https://secretsmanager.eu-west-1.amazonaws.com")
    assert client.client("autoscaling", "cn-north-1").meta.endpoint_url == (
        "https://autoscaling.cn-north-1.amazonaws.com.cn")


def test_a_throttle_is_retried_and_counted_as_one_and_a_server_error_is_not_one() -> None:
    for code in THROTTLING:
        assert is_throttling(error(code)) and is_transient(error(code)), code
        assert pace("ec2")(error(code)) == THROTTLED_DEFAULT
    for code in SERVER_ERRORS:
        assert is_transient(error(code)) and not is_throttling(error(code)), code
    for code in ACCESS_DENIED:
        assert is_access_denied(error(code)) and not is_transient(error(code)), code
    assert not is_access_denied(error("ResourceNotFoundException"))
    assert not is_throttling(error("InternalFailure", 500))
