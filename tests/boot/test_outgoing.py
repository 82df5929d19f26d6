"""When a thread's request goes out to AWS: real clients against the simulated cloud."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.boot.outgoing import Outgoing
from agent.cloud.aws import Aws
from agent.errors import AwsError
from agent.sim.cloud import SimCloud

pytestmark = pytest.mark.integration  # every test here starts the simulated cloud

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
NO_FILES = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimCloud]:
    for name, value in {**CREDENTIALS, **NO_FILES}.items():
        monkeypatch.setenv(name, value)
    with SimCloud() as sim:
        yield sim


def clients(cloud: SimCloud, outgoing: Outgoing) -> Aws:
    return Aws("us-east-1", endpoint_url=cloud.endpoint_url, max_wait=60,
               events=outgoing.handlers())


def test_the_first_request_and_a_watched_threads_are_told_as_they_go_out(
        cloud: SimCloud) -> None:
    """``first``: set by the first request, of any thread; a watched thread's event: set by
    its own request while it is out (before its answer), not by another thread's. Neither
    by a client made nor by a call refused before anything is sent; after the block, the
    thread's event no more."""
    outgoing = Outgoing()
    aws = clients(cloud, outgoing)
    mine = threading.Event()
    with outgoing.watch(mine):
        aws.client("secretsmanager")  # made: nothing sent
        with pytest.raises(AwsError):
            aws.call("secretsmanager", "get_secret_value")  # no SecretId: refused unsent
        assert not outgoing.first.is_set()
        other = threading.Thread(target=aws.call, args=("secretsmanager", "list_secrets"))
        other.start()
        other.join()
        assert outgoing.first.is_set() and not mine.is_set()
        assert len(cloud.calls("ListSecrets")) == 1  # the other thread's did go out

    cloud.action_latency["ListSecrets"] = 1.0
    answered = threading.Event()

    def ask() -> None:
        with outgoing.watch(mine):
            aws.call("secretsmanager", "list_secrets")
        answered.set()

    asking = threading.Thread(target=ask)
    asking.start()
    assert mine.wait(10)
    assert not answered.is_set()  # told as it went out, not when answered
    asking.join()
    assert answered.is_set() and len(cloud.calls("ListSecrets")) == 2

    mine.clear()
    aws.call("secretsmanager", "list_secrets")  # outside the block
    assert not mine.is_set()


def test_a_request_that_cannot_be_signed_tells_nothing(
        cloud: SimCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials: botocore refuses to sign, nothing goes out, nothing is told."""
    for name in CREDENTIALS:
        monkeypatch.delenv(name)
    outgoing = Outgoing()
    aws = clients(cloud, outgoing)
    asked = threading.Event()
    with outgoing.watch(asked), pytest.raises(AwsError, match="no AWS credentials"):
        aws.call("secretsmanager", "list_secrets")
    assert not asked.is_set() and not outgoing.first.is_set()
    assert cloud.calls("ListSecrets") == []
