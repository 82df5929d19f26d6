"""The fleet simulation's own parts, without a fleet: how it counts calls beyond those a boot
needs, and that its agents run behind the simulated cloud."""

from __future__ import annotations

import os
import subprocess

import pytest

from agent.sim import fleet


def report(calls: dict[str, tuple[int, int]], size: int = 2) -> fleet.Report:
    """A report of ``size`` instances with these (attempts, throttled) per API."""
    apis = {api: fleet.Api(attempts, throttled) for api, (attempts, throttled) in calls.items()}
    return fleet.Report(size, fleet.NORMAL, 0.02, [], apis, 1.0)


def test_only_the_calls_a_boot_needs_are_nothing_beyond() -> None:
    needed = {api: (per * 2 + 3, 3) for api, per in fleet.NEEDED.items()}  # 3 refused each
    assert report(needed).beyond_needed() == {}


def test_retried_answers_missing_calls_and_other_apis_are_counted() -> None:
    calls = {"secretsmanager:GetSecretValue": (9, 0), "autoscaling:DescribeLifecycleHooks": (5, 4),
             "autoscaling:CompleteLifecycleAction": (2, 0),
             "autoscaling:DescribeAutoScalingInstances": (2, 0)}
    assert report(calls).beyond_needed() == {
        "secretsmanager:GetSecretValue": 3, "autoscaling:DescribeLifecycleHooks": -1,
        "autoscaling:DescribeAutoScalingInstances": 2}
    assert report(calls).summary()["beyond_needed"] == report(calls).beyond_needed()


@pytest.mark.integration
def test_an_agent_runs_on_the_cpu_the_cloud_leaves() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        fleet.behind_the_cloud(proc.pid)
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    finally:
        proc.kill()
        proc.wait()
    fleet.behind_the_cloud(proc.pid)  # ended and reaped: nothing to do, no error
