"""The AWS wire protocols as the simulated cloud speaks them: the call in a request, and
error and empty answers that botocore parses as it parses AWS's (query, ec2, JSON)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
NAMESPACES = {"cloudformation": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
              "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}

_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/([^/,]+)/")


@dataclasses.dataclass(frozen=True)
class Call:
    """One AWS API call as the simulator received it."""

    service: str
    action: str
    params: dict[str, Any]
    region: str
    protocol: str  # "query" | "ec2" | "json"
    at: float = 0.0  # time.monotonic() when it arrived (after the added latency)
    throttled: bool = False  # refused by a quota or an injected throttling error


class SimAwsError(Exception):
    """Raised by an interceptor: answered as an AWS error in the call's protocol."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


Interceptor = Callable[[Call], None]


# How AWS refuses a call over its quota, by wire protocol: (code, HTTP status, message).
THROTTLED = {
    "query": ("Throttling", 400, "Rate exceeded"),  # Auto Scaling, CloudFormation, STS
    "json": ("ThrottlingException", 400, "Rate exceeded"),  # Secrets Manager, SSM
    "ec2": ("RequestLimitExceeded", 503, "Request limit exceeded."),
}
THROTTLING_CODES = frozenset(code for code, _, _ in THROTTLED.values())


def parse_call(environ: dict[str, Any]) -> Call | None:
    """The AWS call in a WSGI request (body restored for moto), or None if not one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    region, service = scope.groups() if scope else ("us-east-1", "")
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        params = json.loads(body or b"{}")
        return Call(service, target.rpartition(".")[2], params, region, "json")
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = form.pop("Action", "")
        form.pop("Version", None)
        if action:
            protocol = "ec2" if service == "ec2" else "query"
            return Call(service, action, form, region, protocol)
    return None


def error_response(
    protocol: str, code: str, message: str, status: int, namespace: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """An AWS error body that botocore parses into ``ClientError(code)`` (``namespace``: the
    query service's XML namespace, as AWS writes it on its ErrorResponse)."""
    request_id = str(uuid.uuid4())
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
    elif protocol == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    else:
        kind = "Sender" if status < 500 else "Receiver"
        xmlns = f' xmlns="{namespace}"' if namespace else ""
        body = (
            f"<ErrorResponse{xmlns}><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    return status, [*headers, ("x-amzn-RequestId", request_id)], body


def empty_response(call: Call) -> tuple[int, list[tuple[str, str]], bytes]:
    """The success answer of an action whose result is empty."""
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        return 200, [("Content-Type", "application/x-amz-json-1.1")], b"{}"
    action = call.action
    body = (
        f'<{action}Response xmlns="{NAMESPACES.get(call.service, AUTOSCALING_NS)}">'
        f"<{action}Result/>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    ).encode()
    return 200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


def namespace(call: Call) -> str:
    """The XML namespace of a query service's answers."""
    return NAMESPACES.get(call.service, AUTOSCALING_NS) if call.protocol == "query" else ""
