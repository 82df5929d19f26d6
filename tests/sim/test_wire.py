"""The AWS wire protocols as the simulated cloud speaks them (:mod:`agent.sim.wire`).

Every request here is the one a real botocore client prepares and signs; its ``before-send``
event hands it to :func:`parse_call` instead of the network, and answers with the simulator's
error or empty document, which botocore then parses as it parses AWS's. Nothing listens.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from agent.sim.wire import (
    AUTOSCALING_NS,
    NAMESPACES,
    THROTTLED,
    THROTTLING_CODES,
    Call,
    SimAwsError,
    empty_response,
    error_response,
    namespace,
    parse_call,
)

Answer = tuple[int, list[tuple[str, str]], bytes]
SESSION = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")


def environ_of(request: AWSPreparedRequest) -> dict[str, Any]:
    """The WSGI environ a server builds for this prepared request."""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "PATH_INFO": urlsplit(request.url).path or "/",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, raw in request.headers.items():
        value = raw.decode() if isinstance(raw, bytes) else raw
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return environ


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self) -> Iterator[bytes]:
        yield self.body


class Wire:
    """A botocore client of ``service`` whose requests end in :func:`parse_call` and whose
    answers are ``answer(call)``."""

    def __init__(self, service: str, answer: Any, region: str = "eu-west-1") -> None:
        self.calls: list[Call | None] = []
        self.bodies: list[bytes] = []
        self.answer = answer
        self.client: Any = SESSION.client(service, region_name=region,
                                          endpoint_url="http://sim.invalid",
                                          config=Config(retries={"total_max_attempts": 1}))
        self.client.meta.events.register("before-send", self._send)

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        environ = environ_of(request)
        call = parse_call(environ)
        self.calls.append(call)
        self.bodies.append(environ["wsgi.input"].read())
        assert call is not None
        status, headers, body = self.answer(call)
        return AWSResponse(request.url, status, dict(headers), _Raw(body))


def fails(code: str, message: str, status: int = 400) -> Any:
    return lambda call: error_response(call.protocol, code, message, status, namespace(call))


def test_a_json_call_is_read_from_its_target_and_signed_scope() -> None:
    wire = Wire("secretsmanager", empty_response)
    wire.client.get_secret_value(SecretId="prod/db", VersionStage="AWSCURRENT")
    (call,) = wire.calls
    assert call == Call("secretsmanager", "GetSecretValue",
                        {"SecretId": "prod/db", "VersionStage": "AWSCURRENT"}, "eu-west-1",
                        "json")


def test_a_query_call_is_read_from_its_form_without_action_and_version() -> None:
    wire = Wire("autoscaling", empty_response, region="ap-south-1")
    wire.client.complete_lifecycle_action(
        AutoScalingGroupName="web-asg", LifecycleHookName="agent-ready",
        LifecycleActionResult="CONTINUE", InstanceId="i-0123456789abcdef0")
    (call,) = wire.calls
    assert call == Call("autoscaling", "CompleteLifecycleAction", {
        "AutoScalingGroupName": "web-asg", "LifecycleHookName": "agent-ready",
        "LifecycleActionResult": "CONTINUE", "InstanceId": "i-0123456789abcdef0"},
        "ap-south-1", "query")


def test_an_ec2_call_has_the_ec2_protocol() -> None:
    wire = Wire("ec2", lambda call: (200, [], b"<DescribeTagsResponse/>"))
    wire.client.describe_tags(Filters=[{"Name": "resource-id", "Values": ["i-1"]}])
    (call,) = wire.calls
    assert call is not None
    assert (call.service, call.action, call.protocol) == ("ec2", "DescribeTags", "ec2")
    assert call.params["Filter.1.Name"] == "resource-id"


def test_the_body_is_restored_for_the_server_behind() -> None:
    """moto reads the request body after :func:`parse_call` did."""
    wire = Wire("secretsmanager", empty_response)
    wire.client.get_secret_value(SecretId="prod/db")
    assert json.loads(wire.bodies[0]) == {"SecretId": "prod/db"}


@pytest.mark.parametrize("environ", [
    {"REQUEST_METHOD": "GET", "PATH_INFO": "/moto-api/reset"},
    {"CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": "5",
     "wsgi.input": io.BytesIO(b"a=b&c")},  # a form, no Action
    {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"{}")},
])
def test_what_is_no_aws_call_is_none(environ: dict[str, Any]) -> None:
    environ.setdefault("wsgi.input", io.BytesIO(b""))
    assert parse_call(environ) is None


def test_an_unsigned_call_is_in_us_east_1() -> None:
    body = b"Action=DescribeAutoScalingGroups&Version=2011-01-01"
    call = parse_call({"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
                       "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)})
    assert call == Call("", "DescribeAutoScalingGroups", {}, "us-east-1", "query")


@pytest.mark.parametrize(("service", "call", "kwargs"), [
    ("secretsmanager", "get_secret_value", {"SecretId": "x"}),
    ("ssm", "get_parameter", {"Name": "x"}),
    ("autoscaling", "record_lifecycle_action_heartbeat",
     {"AutoScalingGroupName": "g", "LifecycleHookName": "h", "InstanceId": "i-1"}),
    ("cloudformation", "signal_resource", {"StackName": "s", "LogicalResourceId": "r",
                                           "UniqueId": "i-1", "Status": "SUCCESS"}),
    ("sts", "get_caller_identity", {}),
    ("ec2", "describe_instances", {}),
])
def test_an_error_is_the_client_error_botocore_makes_of_aws_s(
        service: str, call: str, kwargs: dict[str, Any]) -> None:
    """Code, message and status as botocore reads them from AWS in every protocol, text
    escaped in the XML ones."""
    wire = Wire(service, fails("ValidationError", "Stack <x> & \"y\" does not exist"))
    with pytest.raises(ClientError) as error:
        getattr(wire.client, call)(**kwargs)
    response = error.value.response
    assert response["Error"]["Code"] == "ValidationError"
    assert response["Error"]["Message"] == "Stack <x> & \"y\" does not exist"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["RequestId"]


def test_a_server_error_is_a_receiver_fault_with_its_status() -> None:
    wire = Wire("autoscaling", fails("InternalFailure", "boom", 500))
    with pytest.raises(ClientError) as error:
        wire.client.describe_auto_scaling_groups()
    assert error.value.response["Error"]["Type"] == "Receiver"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


@pytest.mark.parametrize(("service", "call", "kwargs", "expected"), [
    ("autoscaling", "describe_auto_scaling_groups", {}, ("Throttling", 400, "Rate exceeded")),
    ("secretsmanager", "get_secret_value", {"SecretId": "x"},
     ("ThrottlingException", 400, "Rate exceeded")),
    ("ec2", "describe_instances", {}, ("RequestLimitExceeded", 503, "Request limit exceeded.")),
])
def test_throttling_is_answered_in_each_protocol_s_own_words(
        service: str, call: str, kwargs: dict[str, Any],
        expected: tuple[str, int, str]) -> None:
    """What AWS answers a call over its quota: Throttling (query), ThrottlingException
    (JSON), RequestLimitExceeded with 503 (EC2)."""
    wire = Wire(service, lambda c: error_response(c.protocol, *_code_message_status(c.protocol),
                                                  namespace(c)))
    with pytest.raises(ClientError) as error:
        getattr(wire.client, call)(**kwargs)
    response = error.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"],
            response["Error"]["Message"]) == expected
    assert expected[0] in THROTTLING_CODES


def _code_message_status(protocol: str) -> tuple[str, str, int]:
    code, status, message = THROTTLED[protocol]
    return code, message, status


def test_a_query_error_carries_its_service_s_namespace() -> None:
    """AWS writes the service's namespace on a query ErrorResponse; the EC2 and JSON
    protocols have none."""
    seen: dict[str, bytes] = {}

    def answer(call: Call) -> Answer:
        status, headers, body = error_response(call.protocol, "ValidationError", "no", 400,
                                               namespace(call))
        seen[call.service] = body
        return status, headers, body

    for service, call, kwargs in (
            ("autoscaling", "describe_auto_scaling_groups", {}),
            ("cloudformation", "describe_stacks", {}),
            ("sts", "get_caller_identity", {}),
            ("ec2", "describe_instances", {})):
        with pytest.raises(ClientError):
            getattr(Wire(service, answer).client, call)(**kwargs)
    assert seen["autoscaling"].startswith(f'<ErrorResponse xmlns="{AUTOSCALING_NS}">'.encode())
    assert seen["cloudformation"].startswith(
        f'<ErrorResponse xmlns="{NAMESPACES["cloudformation"]}">'.encode())
    assert seen["sts"].startswith(f'<ErrorResponse xmlns="{NAMESPACES["sts"]}">'.encode())
    assert seen["ec2"].startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors>')


@pytest.mark.parametrize(("service", "call", "kwargs"), [
    ("autoscaling", "complete_lifecycle_action",
     {"AutoScalingGroupName": "g", "LifecycleHookName": "h", "LifecycleActionResult": "CONTINUE",
      "InstanceId": "i-1"}),
    ("autoscaling", "set_instance_health", {"InstanceId": "i-1", "HealthStatus": "Healthy"}),
    ("cloudformation", "signal_resource", {"StackName": "s", "LogicalResourceId": "r",
                                           "UniqueId": "i-1", "Status": "SUCCESS"}),
    ("secretsmanager", "tag_resource", {"SecretId": "x", "Tags": []}),
])
def test_an_empty_answer_is_a_success_with_its_request_id(
        service: str, call: str, kwargs: dict[str, Any]) -> None:
    wire = Wire(service, empty_response)
    response = getattr(wire.client, call)(**kwargs)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    if service != "secretsmanager":  # the JSON protocol's id is in a header AWS sets
        assert len(response["ResponseMetadata"]["RequestId"]) == 36


def test_an_empty_answer_is_in_the_call_s_own_document() -> None:
    call = Call("cloudformation", "SignalResource", {}, "us-east-1", "query")
    status, headers, body = empty_response(call)
    assert status == 200 and ("Content-Type", "text/xml") in headers
    assert body.startswith(f'<SignalResourceResponse xmlns="{NAMESPACES["cloudformation"]}">'
                           "<SignalResourceResult/>".encode())
    assert namespace(call) == NAMESPACES["cloudformation"]
    assert namespace(Call("secretsmanager", "GetSecretValue", {}, "us-east-1", "json")) == ""


@pytest.mark.integration
def test_over_http_the_simulated_cloud_s_answers_parse_the_same() -> None:
    """Through the simulated cloud's server: an interceptor's error in each protocol, and its
    empty success, reach a botocore client as AWS's would."""
    from agent.sim.cloud import SimCloud

    def refuse(call: Call) -> None:
        raise SimAwsError("AccessDenied" if call.protocol != "json" else "AccessDeniedException",
                          f"not authorized to perform {call.action} <on> this")

    with SimCloud() as cloud:
        cloud.interceptors.update({("ssm", "GetParameter"): refuse,
                                   ("sts", "GetCallerIdentity"): refuse,
                                   ("ec2", "DescribeInstances"): refuse,
                                   ("secretsmanager", "TagResource"): lambda call: None})
        clients = {service: SESSION.client(service, region_name="eu-west-1",
                                           endpoint_url=cloud.endpoint_url)
                   for service in ("ssm", "sts", "ec2", "secretsmanager")}
        answers = []
        for service, call, kwargs in (("ssm", "get_parameter", {"Name": "x"}),
                                      ("sts", "get_caller_identity", {}),
                                      ("ec2", "describe_instances", {})):
            with pytest.raises(ClientError) as error:
                getattr(clients[service], call)(**kwargs)
            answers.append((error.value.response["Error"]["Code"],
                            error.value.response["Error"]["Message"],
                            error.value.response["ResponseMetadata"]["HTTPStatusCode"]))
        tagged = clients["secretsmanager"].tag_resource(SecretId="x", Tags=[])
        assert tagged["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert [(c.service, c.region, c.protocol) for c in cloud.calls()] == [
            ("ssm", "eu-west-1", "json"), ("sts", "eu-west-1", "query"),
            ("ec2", "eu-west-1", "ec2"), ("secretsmanager", "eu-west-1", "json")]
    assert answers == [
        ("AccessDeniedException", "not authorized to perform GetParameter <on> this", 400),
        ("AccessDenied", "not authorized to perform GetCallerIdentity <on> this", 400),
        ("AccessDenied", "not authorized to perform DescribeInstances <on> this", 400)]
