"""The fault proxy (:mod:`agent.sim.proxy`): per AWS operation, an answer passed through, cut
short, replaced (empty, HTML, ``{}``) or dripped, as a real botocore client sees it through the
proxy in front of the simulated cloud."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from botocore.parsers import ResponseParserError

from agent.sim.cloud import SimCloud
from agent.sim.proxy import HTML, Fault, FaultProxy, action_of

# -- faults and operations, on their own -----------------------------------------------------


def test_the_faults() -> None:
    assert Fault() == FaultProxy.PASS and Fault().kind == "pass"
    assert (Fault.truncate(300).kind, Fault.truncate(300).keep) == ("truncate", 300)
    assert Fault.empty() == Fault("replace", body=b"")
    assert Fault.html() == Fault("replace", body=HTML, content_type="text/html")
    assert Fault.empty_json() == Fault("replace", body=b"{}")
    assert (Fault.drip(0.5).kind, Fault.drip(0.5).interval) == ("drip", 0.5)


@pytest.mark.parametrize(("headers", "body", "action"), [
    ({"X-Amz-Target": "secretsmanager.GetSecretValue"}, b'{"SecretId": "x"}', "GetSecretValue"),
    ({"X-Amz-Target": "AmazonSSM.GetParameter"}, b"{}", "GetParameter"),
    ({}, b"Action=AssumeRole&Version=2011-06-15&RoleArn=arn", "AssumeRole"),
    ({}, b"Version=2011-06-15", ""),
    ({}, b"", ""),
])
def test_the_operation_of_a_request(headers: dict[str, str], body: bytes, action: str) -> None:
    assert action_of(headers, body) == action


def test_a_fault_holds_for_its_count_then_answers_pass() -> None:
    proxy = FaultProxy("http://127.0.0.1:9")  # not started: nothing is forwarded
    proxy.set("GetSecretValue", Fault.empty(), count=2)
    proxy.set("AssumeRole", Fault.html())
    taken = [proxy.take(a).kind for a in ["GetSecretValue"] * 3 + ["AssumeRole"] * 3]
    assert taken == ["replace", "replace", "pass", "replace", "replace", "replace"]
    assert proxy.calls("GetSecretValue") == ["replace", "replace", "pass"]
    proxy.clear()
    assert proxy.take("AssumeRole") == FaultProxy.PASS
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.endpoint_url


# -- through the proxy -----------------------------------------------------------------------


class Seen:
    """A botocore client through the proxy, and what it received before parsing."""

    def __init__(self, proxy: FaultProxy, service: str, read_timeout: float = 5) -> None:
        session = boto3.session.Session(aws_access_key_id="testing",
                                        aws_secret_access_key="testing", region_name="us-east-1")
        config = Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout,
                        connect_timeout=2)
        self.client: Any = session.client(service, endpoint_url=proxy.endpoint_url,
                                          config=config)
        self.raw: list[tuple[int, dict[str, str], bytes]] = []
        self.client.meta.events.register("before-parse", self._keep)

    def _keep(self, response_dict: dict[str, Any], **_: Any) -> None:
        headers = {k.lower(): v for k, v in response_dict["headers"].items()}
        self.raw.append((response_dict["status_code"], headers, response_dict["body"]))


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with SimCloud() as cloud, FaultProxy(cloud.endpoint_url) as served:
        Seen(served, "secretsmanager").client.create_secret(Name="prod/db", SecretString="pw")
        yield served


def get_secret(seen: Seen) -> dict[str, Any]:
    answer: dict[str, Any] = seen.client.get_secret_value(SecretId="prod/db")
    answer.pop("ResponseMetadata")
    return answer


@pytest.mark.integration
def test_a_passed_answer_is_moto_s_own(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "secretsmanager")
    assert get_secret(seen)["SecretString"] == "pw"
    assert proxy.calls("GetSecretValue") == ["pass"]
    (moto,) = [body for action, body in proxy.answers if action == "GetSecretValue"]
    assert seen.raw[-1][2] == moto
    assert seen.raw[-1][1]["connection"] == "keep-alive"


@pytest.mark.integration
def test_only_the_chosen_operation_is_faulted(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "secretsmanager")
    proxy.set("GetSecretValue", Fault.empty_json())
    assert seen.client.describe_secret(SecretId="prod/db")["Name"] == "prod/db"
    assert "SecretString" not in get_secret(seen)
    assert proxy.calls("DescribeSecret")[-1] == "pass"


@pytest.mark.integration
@pytest.mark.parametrize("fault", [Fault.truncate(20), Fault.truncate(-1), Fault.empty(),
                                   Fault.html(), Fault.empty_json()])
def test_a_json_answer_cut_or_replaced_is_a_success_without_its_value(
        proxy: FaultProxy, fault: Fault) -> None:
    """botocore reads a JSON document it cannot parse, or none, as an answer without fields:
    no error at all, only the value missing (what the agent must notice itself)."""
    seen = Seen(proxy, "secretsmanager")
    proxy.set("GetSecretValue", fault, count=1)
    assert get_secret(seen) == {}
    assert get_secret(seen)["SecretString"] == "pw"  # the next call passes
    assert proxy.calls("GetSecretValue") == [fault.kind, "pass"]


@pytest.mark.integration
@pytest.mark.parametrize(("fault", "body"), [
    (Fault.truncate(20), b"<GetCallerIdentityRe"),
    (Fault.empty(), b""),
    (Fault.empty_json(), b"{}"),
])
def test_a_query_answer_cut_or_replaced_cannot_be_parsed(
        proxy: FaultProxy, fault: Fault, body: bytes) -> None:
    """A whole HTTP answer (status 200, Content-Length of the short body) whose XML is not
    a document: botocore's ResponseParserError."""
    seen = Seen(proxy, "sts")
    proxy.set("GetCallerIdentity", fault)
    with pytest.raises(ResponseParserError, match="invalid XML"):
        seen.client.get_caller_identity()
    status, headers, received = seen.raw[-1]
    assert (status, received, headers["content-length"]) == (200, body, str(len(body)))
    assert headers["connection"] == "close"


@pytest.mark.integration
def test_a_middlebox_page_replaces_the_answer_and_its_type(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "sts")
    proxy.set("GetCallerIdentity", Fault.html())
    with pytest.raises((ResponseParserError, KeyError)):  # no result element in the page
        seen.client.get_caller_identity()
    status, headers, received = seen.raw[-1]
    assert (status, headers["content-type"], received) == (200, "text/html", HTML)


@pytest.mark.integration
def test_the_last_bytes_cut_are_missing_from_moto_s_answer(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "sts")
    proxy.set("GetCallerIdentity", Fault.truncate(-1))
    with pytest.raises(ResponseParserError):
        seen.client.get_caller_identity()
    (moto,) = [body for action, body in proxy.answers if action == "GetCallerIdentity"]
    assert seen.raw[-1][2] == moto[:-1]


@pytest.mark.integration
def test_a_slow_drip_is_a_read_timeout(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "secretsmanager", read_timeout=0.3)
    proxy.set("GetSecretValue", Fault.drip(5.0))
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        get_secret(seen)
    assert time.monotonic() - started < 2


@pytest.mark.integration
def test_stopping_the_proxy_ends_a_dripping_answer(proxy: FaultProxy) -> None:
    """The client waiting on a drip sees the connection close, not the rest of the answer
    trickling in after the proxy stopped."""
    proxy.set("GetSecretValue", Fault.drip(0.2))
    parts = urlsplit(proxy.endpoint_url)
    body = b'{"SecretId": "prod/db"}'
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=5) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: sim\r\nX-Amz-Target: secretsmanager."
                     b"GetSecretValue\r\nContent-Type: application/x-amz-json-1.1\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert conn.recv(1) == b"H"
        started = time.monotonic()
        proxy.stop()
        rest = b""
        while chunk := conn.recv(100):
            rest += chunk
    assert time.monotonic() - started < 2
    assert len(rest) < 10  # of an answer of hundreds of bytes


@pytest.mark.integration
def test_a_fast_drip_delivers_the_whole_answer(proxy: FaultProxy) -> None:
    seen = Seen(proxy, "secretsmanager")
    proxy.set("GetSecretValue", Fault.drip(0.0005))
    started = time.monotonic()
    assert get_secret(seen)["SecretString"] == "pw"
    (moto,) = [body for action, body in proxy.answers if action == "GetSecretValue"]
    assert json.loads(seen.raw[-1][2]) == json.loads(moto)
    assert time.monotonic() - started >= len(moto) * 0.0005
