"""The IMDSv2 simulator against real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from botocore.utils import InstanceMetadataFetcher

from agent.sim.imds import ImdsSimulator, SimInstance, scheduled_event

pytestmark = pytest.mark.integration  # every test here starts servers or processes

TOKEN = "/latest/api/token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    instance = SimInstance(
        instance_id="i-0abc123def4567890",
        instance_type="c6g.large",
        region="eu-west-1",
        availability_zone="eu-west-1b",
        image_id="ami-0feedbeef0000000",
        private_ip="10.1.2.3",
        architecture="arm64",
        tags={"Name": "web", "aws:autoscaling:groupName": "web-asg"},
        target_lifecycle_state="InService",
    )
    with ImdsSimulator(instance=instance) as simulator:
        yield simulator


def connect(sim: ImdsSimulator) -> http.client.HTTPConnection:
    url = urlsplit(sim.endpoint)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)


def call(
    sim: ImdsSimulator, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = connect(sim)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def token(sim: ImdsSimulator, ttl: str = "21600") -> str:
    status, body, _ = call(sim, "PUT", TOKEN, {TTL: ttl})
    assert status == 200
    return body.decode()


def get(sim: ImdsSimulator, path: str, tok: str | None = None) -> tuple[int, bytes]:
    status, body, _ = call(sim, "GET", path, {"X-aws-ec2-metadata-token": tok or token(sim)})
    return status, body


@pytest.mark.parametrize("ttl", ["0", "21601", "abc", "-5", "1.5", ""])
def test_token_ttl_out_of_range_or_not_an_integer_is_400(sim: ImdsSimulator, ttl: str) -> None:
    assert call(sim, "PUT", TOKEN, {TTL: ttl})[0] == 400


def test_token_without_ttl_header_is_400(sim: ImdsSimulator) -> None:
    assert call(sim, "PUT", TOKEN)[0] == 400


@pytest.mark.parametrize("ttl", ["1", "21600"])
def test_token_ttl_bounds_accepted_and_echoed(sim: ImdsSimulator, ttl: str) -> None:
    status, body, response = call(sim, "PUT", TOKEN, {TTL: ttl})
    assert status == 200
    assert body
    assert response.getheader(TTL) == ttl


def test_get_on_token_path_is_405(sim: ImdsSimulator) -> None:
    assert call(sim, "GET", TOKEN)[0] == 405


def test_x_forwarded_for_is_refused(sim: ImdsSimulator) -> None:
    assert call(sim, "PUT", TOKEN, {TTL: "60", "X-Forwarded-For": "10.0.0.9"})[0] == 403
    tok = token(sim)
    headers = {"X-aws-ec2-metadata-token": tok, "X-Forwarded-For": "10.0.0.9"}
    assert call(sim, "GET", "/latest/meta-data/instance-id", headers)[0] == 403


def test_get_needs_a_valid_token(sim: ImdsSimulator) -> None:
    path = "/latest/meta-data/instance-id"
    assert call(sim, "GET", path)[0] == 401  # no IMDSv1 fallback
    assert get(sim, path, "not-a-token")[0] == 401
    assert call(sim, "GET", "/latest/meta-data/nope")[0] == 401  # auth before 404
    assert get(sim, path) == (200, b"i-0abc123def4567890")


def test_token_expires_after_its_ttl(sim: ImdsSimulator) -> None:
    tok = token(sim, ttl="1")
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 200
    time.sleep(1.1)
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 401


def test_token_lifetime_caps_the_requested_ttl(sim: ImdsSimulator) -> None:
    sim.token_lifetime = 0.2
    tok = token(sim, ttl="21600")
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 200
    time.sleep(0.3)
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 401
    sim.token_lifetime = None
    assert get(sim, "/latest/meta-data/instance-id")[0] == 200


def test_expire_tokens_invalidates_issued_tokens(sim: ImdsSimulator) -> None:
    tok = token(sim)
    sim.expire_tokens()
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 401
    assert get(sim, "/latest/meta-data/instance-id")[0] == 200


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/latest/meta-data/ami-id", "ami-0feedbeef0000000"),
        ("/latest/meta-data/instance-id", "i-0abc123def4567890"),
        ("/latest/meta-data/instance-type", "c6g.large"),
        ("/latest/meta-data/local-ipv4", "10.1.2.3"),
        ("/latest/meta-data/hostname", "ip-10-1-2-3.eu-west-1.compute.internal"),
        ("/latest/meta-data/local-hostname", "ip-10-1-2-3.eu-west-1.compute.internal"),
        ("/latest/meta-data/placement/availability-zone", "eu-west-1b"),
        ("/latest/meta-data/placement/region", "eu-west-1"),
        ("/latest/meta-data/iam/security-credentials/", "agent-instance-role"),
        ("/latest/meta-data/tags/instance/Name", "web"),
        ("/latest/meta-data/tags/instance/aws:autoscaling:groupName", "web-asg"),
        ("/latest/meta-data/autoscaling/target-lifecycle-state", "InService"),
    ],
)
def test_text_paths(sim: ImdsSimulator, path: str, expected: str) -> None:
    assert get(sim, path) == (200, expected.encode())


def test_mac_looks_like_a_mac(sim: ImdsSimulator) -> None:
    status, body = get(sim, "/latest/meta-data/mac")
    assert status == 200
    assert len(body.split(b":")) == 6


def test_listings(sim: ImdsSimulator) -> None:
    listing = get(sim, "/latest/meta-data/")[1].decode().splitlines()
    assert {"instance-id", "placement/", "iam/", "tags/", "autoscaling/"} <= set(listing)
    assert "spot/" not in listing
    tags = get(sim, "/latest/meta-data/tags/instance/")[1].decode().splitlines()
    assert sorted(tags) == ["Name", "aws:autoscaling:groupName"]


def test_identity_document(sim: ImdsSimulator) -> None:
    status, body = get(sim, "/latest/dynamic/instance-identity/document")
    assert status == 200
    document = json.loads(body)
    assert document["instanceId"] == "i-0abc123def4567890"
    assert document["instanceType"] == "c6g.large"
    assert document["region"] == "eu-west-1"
    assert document["availabilityZone"] == "eu-west-1b"
    assert document["imageId"] == "ami-0feedbeef0000000"
    assert document["accountId"] == "123456789012"
    assert document["architecture"] == "arm64"
    assert document["privateIp"] == "10.1.2.3"
    assert document["version"] == "2017-09-30"
    assert document["pendingTime"].endswith("Z")


def test_iam_credentials_and_info(sim: ImdsSimulator) -> None:
    info = json.loads(get(sim, "/latest/meta-data/iam/info")[1])
    assert info["Code"] == "Success"
    assert info["InstanceProfileArn"].endswith("instance-profile/agent-instance-role")
    creds = json.loads(
        get(sim, "/latest/meta-data/iam/security-credentials/agent-instance-role")[1]
    )
    assert creds["Code"] == "Success"
    assert creds["Type"] == "AWS-HMAC"
    assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "LastUpdated"} <= set(creds)


def test_botocore_fetches_role_credentials(sim: ImdsSimulator) -> None:
    fetched = InstanceMetadataFetcher(base_url=sim.endpoint).retrieve_iam_role_credentials()
    assert fetched["role_name"] == "agent-instance-role"
    assert fetched["access_key"].startswith("ASIA")


def test_optional_categories_404_when_absent(sim: ImdsSimulator) -> None:
    sim.instance.update(tags=None, target_lifecycle_state=None, role_name=None)
    for path in (
        "/latest/meta-data/tags/instance/",
        "/latest/meta-data/tags/instance/Name",
        "/latest/meta-data/autoscaling/target-lifecycle-state",
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data/events/recommendations/rebalance",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/info",
        "/latest/user-data",
        "/latest/meta-data/no-such-thing",
    ):
        assert get(sim, path)[0] == 404, path


def test_events_and_user_data_when_set(sim: ImdsSimulator) -> None:
    sim.instance.update(
        spot_action={"action": "terminate", "time": "2026-11-26T12:02:00Z"},
        rebalance={"noticeTime": "2026-11-26T12:00:00Z"},
        user_data=b"#!/bin/sh\necho hi\n",
        target_lifecycle_state="Terminated",
    )
    spot = json.loads(get(sim, "/latest/meta-data/spot/instance-action")[1])
    assert spot == {"action": "terminate", "time": "2026-11-26T12:02:00Z"}
    rebalance = json.loads(get(sim, "/latest/meta-data/events/recommendations/rebalance")[1])
    assert rebalance == {"noticeTime": "2026-11-26T12:00:00Z"}
    assert get(sim, "/latest/user-data") == (200, b"#!/bin/sh\necho hi\n")
    assert get(sim, "/latest/meta-data/autoscaling/target-lifecycle-state")[1] == b"Terminated"


def test_scheduled_events_as_imds_serves_them(sim: ImdsSimulator) -> None:
    """A JSON list (empty without events); finished events say so in State and Description."""
    path = "/latest/meta-data/events/maintenance/scheduled"
    assert get(sim, path) == (200, b"[]")
    assert "scheduled" in get(sim, "/latest/meta-data/events/maintenance/")[1].decode()
    when = datetime(2026, 12, 14, 9, 0, 43, tzinfo=UTC)
    events = [scheduled_event("instance-retirement", not_before=when, event_id="instance-event-1"),
              scheduled_event("system-reboot", state="completed"),
              scheduled_event("instance-stop", state="canceled")]
    sim.instance.update(scheduled_events=events)
    served = json.loads(get(sim, path)[1])
    assert served[0] == {"NotBefore": "14 Dec 2026 09:00:43 GMT", "Code": "instance-retirement",
                         "Description": "The instance is running on degraded hardware",
                         "EventId": "instance-event-1", "State": "active"}
    assert [e["State"] for e in served] == ["active", "completed", "canceled"]
    assert served[1]["Description"].startswith("[Completed] ")
    assert served[2]["Description"].startswith("[Canceled] ")
    assert "NotAfter" in served[1]  # a reboot has a window
    assert {e["EventId"] for e in served[1:]}.isdisjoint({"instance-event-1"})


def test_update_rejects_unknown_fields(sim: ImdsSimulator) -> None:
    with pytest.raises(TypeError):
        sim.instance.update(no_such_fact=1)


def test_fail_next_counts_and_includes_token_puts(sim: ImdsSimulator) -> None:
    sim.fail_next(2)
    assert call(sim, "PUT", TOKEN, {TTL: "60"})[0] == 503
    assert call(sim, "PUT", TOKEN, {TTL: "60"})[0] == 503
    assert get(sim, "/latest/meta-data/instance-id")[0] == 200
    assert sim.count(method="PUT", path_prefix=TOKEN, status=503) == 2


def test_fail_next_path_filter_and_status(sim: ImdsSimulator) -> None:
    sim.fail_next(1, status=500, paths=["/latest/dynamic/"])
    tok = token(sim)  # not matched: the token PUT succeeds
    assert get(sim, "/latest/meta-data/instance-id", tok)[0] == 200
    assert get(sim, "/latest/dynamic/instance-identity/document", tok)[0] == 500
    assert get(sim, "/latest/dynamic/instance-identity/document", tok)[0] == 200


def test_disabled_answers_403(sim: ImdsSimulator) -> None:
    sim.disabled = True
    status, body, _ = call(sim, "PUT", TOKEN, {TTL: "60"})
    assert (status, body) == (403, b"IMDS disabled")


def test_latency(sim: ImdsSimulator) -> None:
    sim.latency = 0.2
    started = time.monotonic()
    call(sim, "PUT", TOKEN, {TTL: "60"})
    assert time.monotonic() - started >= 0.2


def test_request_log_never_holds_the_token(sim: ImdsSimulator) -> None:
    tok = token(sim)
    get(sim, "/latest/meta-data/instance-id", tok)
    assert sim.count() == 2
    assert sim.count(method="GET", status=200) == 1
    assert tok not in repr(sim.requests)


def test_keep_alive_on_one_connection(sim: ImdsSimulator) -> None:
    conn = connect(sim)
    try:
        conn.request("PUT", TOKEN, headers={TTL: "60"})
        response = conn.getresponse()
        tok = response.read().decode()
        first_socket = conn.sock
        for _ in range(3):
            conn.request(
                "GET", "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": tok}
            )
            response = conn.getresponse()
            assert response.read() == b"i-0abc123def4567890"
            assert conn.sock is first_socket
    finally:
        conn.close()


def test_stop_closes_the_port() -> None:
    simulator = ImdsSimulator().start()
    url = urlsplit(simulator.endpoint)
    simulator.stop()
    with pytest.raises(OSError):
        http.client.HTTPConnection(url.hostname or "", url.port, timeout=1).connect()
