"""The IMDSv2 client against the IMDS simulator, fault by fault."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agent.cloud.imds import ImdsClient
from agent.errors import ImdsError
from agent.sim.imds import ImdsSimulator, SimInstance

TOKEN = "/latest/api/token"


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    instance = SimInstance(instance_id="i-0feedface", instance_type="c6g.large",
                           region="eu-west-1", availability_zone="eu-west-1b",
                           image_id="ami-0abc", architecture="arm64",
                           tags={"Name": "web", "aws:autoscaling:groupName": "web-asg"},
                           target_lifecycle_state="InService")
    with ImdsSimulator(instance=instance) as server:
        yield server


def client(sim: ImdsSimulator, **kw: float) -> ImdsClient:
    kw.setdefault("max_wait", 5.0)
    kw.setdefault("timeout", 1.0)
    return ImdsClient(sim.endpoint, **kw)  # type: ignore[arg-type]


@pytest.mark.integration
def test_identity_tags_and_target_state(sim: ImdsSimulator) -> None:
    imds = client(sim)
    ident = imds.identity()
    assert (ident.instance_id, ident.instance_type, ident.region, ident.availability_zone,
            ident.image_id, ident.architecture) == (
        "i-0feedface", "c6g.large", "eu-west-1", "eu-west-1b", "ami-0abc", "arm64")
    assert ident.account_id == "123456789012"
    assert imds.tags() == {"Name": "web", "aws:autoscaling:groupName": "web-asg"}
    assert imds.target_lifecycle_state() == "InService"


@pytest.mark.integration
def test_tags_disabled_is_none_not_an_error(sim: ImdsSimulator) -> None:
    sim.instance.update(tags=None, target_lifecycle_state=None)
    imds = client(sim)
    assert imds.tags() is None
    assert imds.target_lifecycle_state() is None


@pytest.mark.integration
def test_one_token_for_many_requests_and_never_imdsv1(sim: ImdsSimulator) -> None:
    imds = client(sim)
    imds.identity()
    imds.tags()
    imds.target_lifecycle_state()
    assert sim.count("PUT", TOKEN) == 1
    assert sim.count(status=401) == 0  # every GET carried the token
    assert sim.count("GET") >= 5


@pytest.mark.integration
def test_identity_is_cached(sim: ImdsSimulator) -> None:
    imds = client(sim)
    imds.identity()
    imds.identity()
    assert sim.count("GET", "/latest/dynamic/instance-identity/document") == 1


@pytest.mark.integration
def test_concurrent_threads_share_one_token(sim: ImdsSimulator) -> None:
    imds = client(sim)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                imds.tags()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sim.count("PUT", TOKEN) == 1


@pytest.mark.integration
def test_503s_are_retried_then_recover(sim: ImdsSimulator) -> None:
    sim.fail_next(4, status=503)
    imds = client(sim)
    assert imds.identity().instance_id == "i-0feedface"
    assert sim.count(status=503) == 4


@pytest.mark.integration
def test_token_expiring_mid_boot_is_renewed(sim: ImdsSimulator) -> None:
    imds = client(sim)
    imds.identity()
    sim.expire_tokens()  # IMDS forgets the token before the client thinks it expired
    assert imds.tags() is not None
    assert sim.count(status=401) == 1
    assert sim.count("PUT", TOKEN) == 2


@pytest.mark.integration
def test_short_token_lifetime(sim: ImdsSimulator) -> None:
    sim.token_lifetime = 0.3
    imds = client(sim)
    imds.identity()
    time.sleep(0.4)
    assert imds.target_lifecycle_state() == "InService"
    assert sim.count("PUT", TOKEN) == 2


@pytest.mark.integration
def test_token_renewed_before_expiry_from_its_ttl(sim: ImdsSimulator) -> None:
    imds = client(sim, token_ttl=2)  # below 2 minutes: renewed at half its life
    imds.identity()
    time.sleep(1.1)
    imds.tags()
    assert sim.count("PUT", TOKEN) == 2
    assert sim.count(status=401) == 0


@pytest.mark.integration
def test_403_fails_fast(sim: ImdsSimulator) -> None:
    sim.disabled = True
    with pytest.raises(ImdsError, match="403"):
        client(sim, max_wait=30).identity()
    assert sim.count() == 1  # the token PUT, refused: never retried


@pytest.mark.integration
def test_400_fails_fast(sim: ImdsSimulator) -> None:
    sim.fail_next(1, status=400)
    with pytest.raises(ImdsError, match="400"):
        client(sim, max_wait=30).identity()
    assert sim.count() == 1


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_absent_imds_gives_up_when_max_wait_is_spent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    fake = FakeClock()
    imds = ImdsClient(f"http://127.0.0.1:{port}", max_wait=120.0, timeout=0.5,
                      clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(ImdsError, match=r"unavailable after .* connection refused") as info:
        imds.identity()
    assert sum(fake.slept) <= 120.0  # never a sleep past the budget
    assert len(fake.slept) >= 50  # retried all along (backoff capped at 2 s)
    assert max(fake.slept) <= 2.0
    assert f"({len(fake.slept) + 1} attempts)" in str(info.value)


@pytest.mark.integration
def test_slow_imds_times_out_and_is_retried(sim: ImdsSimulator) -> None:
    sim.latency = 0.5
    with pytest.raises(ImdsError, match="timed out"):
        client(sim, timeout=0.1, max_wait=1.0).identity()
    assert sim.count() >= 2  # each timed-out request was tried again
    sim.latency = 0.0
    assert client(sim, timeout=0.5).identity().instance_id == "i-0feedface"


@pytest.mark.integration
def test_token_never_logged(sim: ImdsSimulator, caplog: pytest.LogCaptureFixture) -> None:
    sim.fail_next(2, status=503)
    caplog.set_level(logging.DEBUG)
    imds = client(sim)
    imds.identity()
    sim.expire_tokens()
    imds.tags()
    token = imds._token
    assert token
    assert token not in caplog.text
    assert "retry" in caplog.text  # the retries themselves are logged


def test_endpoint_must_be_http() -> None:
    with pytest.raises(ImdsError, match="not an http:// URL"):
        ImdsClient("https://169.254.169.254")
