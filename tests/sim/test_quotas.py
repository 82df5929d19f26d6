"""Request quotas as AWS enforces them (:mod:`agent.sim.quotas`): a token bucket per API,
``burst`` calls at once and ``rate`` per second after that, on an injected clock."""

from __future__ import annotations

from agent.sim.quotas import Quotas, TokenBucket


def admitted(bucket: TokenBucket, times: list[float]) -> list[bool]:
    return [bucket.take(now) for now in times]


def test_a_full_bucket_passes_its_burst_then_throttles() -> None:
    bucket = TokenBucket(burst=3, rate=1)
    assert admitted(bucket, [100.0] * 5) == [True, True, True, False, False]


def test_the_bucket_is_full_at_its_first_call_whenever_that_is() -> None:
    assert admitted(TokenBucket(burst=2, rate=0.001), [5000.0, 5000.0, 5000.0]) == [
        True, True, False]


def test_tokens_come_back_at_the_rate() -> None:
    """At 2 tokens a second an empty bucket admits one call every half second."""
    bucket = TokenBucket(burst=1, rate=2)
    assert admitted(bucket, [0.0, 0.0, 0.25, 0.5, 0.5, 0.99, 1.0]) == [
        True, False, False, True, False, False, True]


def test_a_long_pause_refills_only_up_to_the_burst() -> None:
    bucket = TokenBucket(burst=2, rate=10)
    admitted(bucket, [0.0, 0.0])
    assert admitted(bucket, [60.0, 60.0, 60.0]) == [True, True, False]


def test_a_refused_call_takes_no_token() -> None:
    """Throttled calls cost nothing: a client that keeps calling is admitted once a token
    refilled, not later."""
    bucket = TokenBucket(burst=1, rate=1)
    assert admitted(bucket, [0.0, 0.3, 0.6, 0.9, 1.0]) == [True, False, False, False, True]


def test_each_api_of_a_limited_service_has_its_own_bucket() -> None:
    quotas = Quotas()
    quotas.limit("autoscaling", burst=1, rate=0.001)
    assert quotas.admit("autoscaling", "DescribeAutoScalingGroups", 0.0)
    assert not quotas.admit("autoscaling", "DescribeAutoScalingGroups", 0.0)
    assert quotas.admit("autoscaling", "CompleteLifecycleAction", 0.0)
    assert not quotas.admit("autoscaling", "CompleteLifecycleAction", 0.0)


def test_a_service_without_a_quota_is_never_throttled() -> None:
    quotas = Quotas()
    quotas.limit("autoscaling", burst=1, rate=0.001)
    assert all(quotas.admit("secretsmanager", "GetSecretValue", 0.0) for _ in range(100))


def test_a_new_limit_starts_full_buckets_for_its_service_only() -> None:
    quotas = Quotas()
    quotas.limit("autoscaling", burst=1, rate=0.001)
    quotas.limit("secretsmanager", burst=1, rate=0.001)
    quotas.admit("autoscaling", "DescribeAutoScalingGroups", 0.0)
    quotas.admit("secretsmanager", "GetSecretValue", 0.0)
    quotas.limit("autoscaling", burst=2, rate=0.001)
    assert [quotas.admit("autoscaling", "DescribeAutoScalingGroups", 1.0) for _ in range(3)] == [
        True, True, False]
    assert not quotas.admit("secretsmanager", "GetSecretValue", 1.0)


def test_clear_lifts_every_quota() -> None:
    quotas = Quotas()
    quotas.limit("ec2", burst=1, rate=0.001)
    quotas.admit("ec2", "DescribeInstances", 0.0)
    quotas.clear()
    assert all(quotas.admit("ec2", "DescribeInstances", 0.0) for _ in range(10))
