"""Hostile AWS answers: cut short, empty, garbled, dripped, refused.

Integration tests run the agent as a process against the simulated cloud behind the fault
proxy (:mod:`agent.sim.proxy`); the unit tests check the one describer of SDK failures and
the logging filter on their own (the transport's deadline: tests/cloud/test_transport.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import Booter
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from agent.cloud.aws import describe
from agent.errors import SecretsError, describe_failure
from agent.secrets import generations
from agent.service.notify import ForeignTracebacks
from agent.sim import Fault, FaultProxy, World

OTHER = "222222222222"
ROLE = f"arn:aws:iam::{OTHER}:role/orders-secrets"
BODY = (b"<AssumeRoleResponse><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId>"
        b"<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>"
        b"<SessionToken>FwoGZXIvYXdzEXAMPLETOKEN")
LEAKS = ("SecretAccessKey", "SessionToken", "wJalrXUtnFEMI", "FwoGZXIvYXdzEXAMPLETOKEN", "<")


# -- the describer ---------------------------------------------------------------------------


def client_error(code: str, message: str, operation: str = "GetSecretValue",
                 status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def test_a_parser_error_is_described_without_its_body() -> None:
    exc = ResponseParserError(f"Unable to parse response ({BODY.decode()}), invalid XML")
    line = describe(exc)
    assert line == "an answer that cannot be parsed (cut short, or not the service's format)"
    for leak in LEAKS:
        assert leak not in line


def test_aws_messages_are_kept_and_bodies_are_not() -> None:
    assert describe(client_error("AccessDenied", "not authorized to perform sts:AssumeRole")
                    ) == "AccessDenied: not authorized to perform sts:AssumeRole"
    # botocore puts an unparsable error body into Message verbatim
    assert describe(client_error("", BODY.decode(), status=502)) == "HTTP 502"
    assert describe(client_error("ValidationError", '{"SecretString": "pw"}')) == \
        "ValidationError"
    assert describe(client_error("Bad\nCode", "x" * 301)) == "HTTP 400"


def test_other_failures_are_described_by_their_kind() -> None:
    url = "http://127.0.0.1:9/"
    assert describe(NoCredentialsError()).startswith("no AWS credentials")
    assert describe(ReadTimeoutError(endpoint_url=url)) == f"no complete answer in time ({url})"
    assert describe(ConnectionClosedError(endpoint_url=url)) == \
        f"the connection closed before the answer was complete ({url})"
    assert describe(EndpointConnectionError(endpoint_url=url)) == f"cannot connect to {url}"
    assert describe(KeyError(BODY.decode())) == \
        "KeyError (details withheld: they may quote the answer)"
    assert describe(SecretsError("secret 'x': fine")) == "secret 'x': fine"
    mine = ParamValidationError(report="Invalid length for parameter SecretId, value: 0")
    assert describe(mine) == "Parameter validation failed: Invalid length for parameter " \
        "SecretId, value: 0"


def test_an_unexpected_sdk_exception_is_not_quoted_as_an_internal_error() -> None:
    line = describe_failure("the secrets phase", ResponseParserError(BODY.decode()))
    assert line == ("internal error in the secrets phase: ResponseParserError (run with -v "
                    "for the traceback)")
    assert "boom" in describe_failure("x", RuntimeError("boom"))


def record(name: str, level: int, exc: bool) -> logging.LogRecord:
    try:
        raise ResponseParserError(BODY.decode())
    except ResponseParserError as error:
        info = (type(error), error, error.__traceback__) if exc else None
    return logging.LogRecord(name, level, __file__, 1, "refresh failed", (), info)


def test_other_libraries_tracebacks_are_debug_records() -> None:
    root = logging.getLogger()
    level = root.level
    keep = ForeignTracebacks()
    try:
        root.setLevel(logging.INFO)
        assert not keep.filter(record("botocore.credentials", logging.WARNING, exc=True))
        assert keep.filter(record("botocore.credentials", logging.WARNING, exc=False))
        assert keep.filter(record("agent.boot.sequence", logging.ERROR, exc=True))
        root.setLevel(logging.DEBUG)  # -v: shown, as a debug record
        shown = record("botocore.credentials", logging.WARNING, exc=True)
        assert keep.filter(shown) and shown.levelname == "DEBUG"
    finally:
        root.setLevel(level)


# -- against the simulated cloud, behind the fault proxy -------------------------------------


class Faulty(Booter):
    """A booter whose agent reaches AWS through the fault proxy."""

    def __init__(self, world: World, root: Path, proxy: FaultProxy) -> None:
        super().__init__(world, root)
        self.proxy = proxy

    def configure(self, files: Any = (), extra: str = "", secrets_dir: Path | None = None,
                  max_wait: float = 30) -> None:
        super().configure(list(files), extra, secrets_dir)
        text = self.config_path.read_text()
        direct = f'endpoint_url = "{self.world.cloud.endpoint_url}"'
        assert direct in text
        self.config_path.write_text(text.replace(direct, f'endpoint_url = '
                                                 f'"{self.proxy.endpoint_url}"\n'
                                                 f"max_wait_seconds = {max_wait}"))

    def everything(self) -> str:
        """Every output of every run so far, and state.json."""
        return "\n".join([*self.outputs, (self.state_dir / "state.json").read_text()])


@pytest.fixture
def faulty(tmpfs: Path) -> Iterator[Faulty]:
    with World() as world, FaultProxy(world.cloud.endpoint_url) as proxy:
        world.seed(secrets={"orders/db": '{"user": "orders", "password": "pw-8xQ"}',
                            "app/api-key": "key-3Lm"},
                   ssm_parameters={"/app/token": "tok-9Zr"})
        yield Faulty(world, tmpfs, proxy)


FILES = [{"secret_id": "orders/db", "path": "db.json"},
         {"secret_id": "app/api-key", "path": "api-key"}]
VALUES = ("pw-8xQ", "key-3Lm", "tok-9Zr")


def phase(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in doc["phases"] if p["name"] == name)


@pytest.mark.integration
def test_a_truncated_assume_role_answer_leaks_no_credentials(faulty: Faulty) -> None:
    faulty.proxy.set("AssumeRole", Fault.truncate(-60))  # the closing tags cut off
    faulty.configure([{"secret_id": "orders/db", "path": "db", "role_arn": ROLE}])
    proc = faulty.run()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"AssumeRole {ROLE}: an answer that cannot be parsed" in proc.stderr
    faulty.world.relaunch()
    verbose = faulty.agent("run", "--oneshot", "-v", "--config", str(faulty.config_path))
    assert verbose.returncode == 1, verbose.stderr  # debug records and tracebacks too
    answers = [body for action, body in faulty.proxy.answers if action == "AssumeRole"]
    assert answers and b"<SessionToken>" in answers[0][:-60]  # the cut answer held them
    secret_key = answers[0].split(b"<SecretAccessKey>")[1].split(b"<")[0].decode()
    token = answers[0].split(b"<SessionToken>")[1].split(b"<")[0].decode()
    text = faulty.everything()
    for leak in ("SecretAccessKey", "SessionToken", "<Credentials>", secret_key, token[:40]):
        assert leak not in text
    doc = faulty.doc()
    assert doc["state"] == "failed" and phase(doc, "secrets")["state"] == "failed"
    assert faulty.results()[0] == "ABANDON"


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["empty", "html", "empty_json"])
def test_an_answer_without_a_value_publishes_nothing(faulty: Faulty, fault: str) -> None:
    faulty.configure(FILES)
    assert faulty.run().returncode == 0
    root = faulty.secrets_dir
    before = generations.current(root)
    kept = generations.contents(before, ["db.json", "api-key"])
    assert set(kept) == {"db.json", "api-key"}
    faulty.world.relaunch()  # launched again (its hook pending), the secrets still there
    shutil.rmtree(faulty.state_dir)
    faulty.proxy.set("GetSecretValue", getattr(Fault, fault)())
    proc = faulty.run()
    assert proc.returncode == 1, proc.stderr
    assert "GetSecretValue answered no value" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert generations.current(root) == before
    assert generations.contents(generations.current(root), ["db.json", "api-key"]) == kept
    assert generations.existing(root) == [before]  # nothing of this boot left behind
    doc = faulty.doc()
    assert doc["state"] == "failed" and phase(doc, "secrets")["state"] == "failed"
    assert faulty.results() == ["CONTINUE", "ABANDON"]
    assert "<html" not in faulty.everything()
    assert set(faulty.proxy.calls("GetSecretValue")) == {"pass", "replace"}
    assert not any(v in text for v in VALUES for text in faulty.outputs)


@pytest.mark.integration
def test_a_parameter_answered_without_a_value_publishes_nothing(faulty: Faulty) -> None:
    garbled = json.dumps({"Parameters": [{"Name": "/app/token", "Version": 1}],
                          "InvalidParameters": []}).encode()
    faulty.proxy.set("GetParameters", Fault.replace(garbled))
    faulty.configure([{"source": "ssm", "parameter": "/app/token", "path": "token"}, *FILES])
    proc = faulty.run()
    assert proc.returncode == 1, proc.stderr
    assert "parameter '/app/token'" in proc.stderr and "without a value" in proc.stderr
    assert generations.current(faulty.secrets_dir) is None
    assert not (faulty.secrets_dir / "token").exists()
    assert faulty.results() == ["ABANDON"]


@pytest.mark.integration
def test_assume_role_refused_is_one_line_naming_the_role(faulty: Faulty) -> None:
    faulty.world.cloud.fail_next("AssumeRole", code="AccessDenied", status=403,
                                 message="not authorized to perform sts:AssumeRole")
    faulty.configure([{"secret_id": "orders/db", "path": "db", "role_arn": ROLE}])
    proc = faulty.run()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "File \"" not in proc.stderr
    loud = [line for line in proc.stderr.splitlines() if " WARNING " in line
            or " ERROR " in line or not line.startswith("agent: ")]
    assert loud, proc.stderr
    for line in loud:  # said in one line (per record) naming the role; nothing else loud
        assert f"cannot assume role {ROLE}: AccessDenied" in line, proc.stderr
    assert faulty.results() == ["ABANDON"]


@pytest.mark.integration
def test_a_dripped_answer_ends_the_boot_within_its_budget(faulty: Faulty) -> None:
    budget = 5
    faulty.proxy.set("GetSecretValue", Fault.drip(1.0))
    faulty.configure(FILES, max_wait=budget)
    start = time.monotonic()
    proc = faulty.run()
    took = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert took < 3 * budget, f"the boot took {took:.1f} s with a {budget} s budget"
    assert "no complete answer in time" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert generations.current(faulty.secrets_dir) is None
    assert faulty.results() == ["ABANDON"]


@pytest.mark.integration
def test_any_answer_that_cannot_be_parsed_is_one_line_naming_the_operation(
        faulty: Faulty) -> None:
    faulty.proxy.set("DescribeLifecycleHooks", Fault.truncate(-30))
    faulty.configure(FILES)
    proc = faulty.run()
    assert proc.returncode == 1, proc.stderr
    assert ("autoscaling describe_lifecycle_hooks: an answer that cannot be parsed"
            in proc.stderr)
    assert "<" not in faulty.everything() and "Traceback" not in proc.stderr
    assert phase(faulty.doc(), "lifecycle")["state"] == "failed"
