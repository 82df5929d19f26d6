"""A fleet scaling out: 50 agents booting at once against one simulated account whose quotas
are AWS's (``make fleet``; ``bench/fleet.py`` runs 200).

Each agent is a process with an IMDS of its own; the account throttles each API with a token
bucket and answers as AWS does. At the normal Auto Scaling quota (40 burst + 10/s per API)
and at a harsh one (10 burst + 2/s), every boot must be ready, every launch action completed
exactly once (CONTINUE, never ABANDON), with the group tag two Auto Scaling calls per
instance; at the harsh quota the refused Auto Scaling answers stay within 3x the admitted
calls (retries that respect the quota as a fleet, not a retry storm).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import shm_dir

from agent.sim import fleet

pytestmark = pytest.mark.fleet
SIZE = 50


@pytest.fixture
def shm() -> Iterator[Path]:
    """The agents' state and secrets, on a tmpfs (/dev/shm) for any user."""
    with shm_dir("agent-fleet-") as path:
        yield path


def check(report: fleet.Report) -> None:
    """Every boot ready, completed once, none abandoned; only the calls a boot needs."""
    print(f"\n{report.table()}")
    assert [(a.instance_id, a.code, a.state, a.last_line) for a in report.agents
            if a not in report.ready] == []
    assert len(report.completed_once) == report.size
    assert report.abandoned == []
    # with the group tag no DescribeAutoScalingInstances; one GetSecretValue per secret, one
    # hook lookup and one completion: nothing retried after a lost answer
    assert report.beyond_needed() == {}
    assert report.repeated_completions == 0


def test_a_fleet_at_the_normal_quota(shm: Path) -> None:
    check(fleet.boot(SIZE, shm, quota=fleet.NORMAL))


def test_a_fleet_at_a_harsh_quota_retries_politely(shm: Path) -> None:
    report = fleet.boot(SIZE, shm, quota=fleet.HARSH)
    check(report)
    autoscaling = report.service("autoscaling")
    assert autoscaling.throttled > 0  # the quota did bite
    assert autoscaling.throttled <= 3 * autoscaling.admitted
