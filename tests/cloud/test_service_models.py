"""The pruned service models: what they keep, when they are used, and that clients built from
them call moto (server mode) as clients built from botocore's own do."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import botocore
import botocore.handlers
import botocore.session
import pytest
from botocore.loaders import Loader

from agent.cloud import aws, service_models
from agent.sim import World

AGENT = Path(aws.__file__).parents[1]  # the agent package


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models as the package build writes them."""
    dest = tmp_path_factory.mktemp("models")
    service_models.write(dest)
    return dest


def test_a_pruned_model_keeps_the_operations_and_what_they_reach() -> None:
    loader = Loader()
    version = loader.determine_latest_version("autoscaling", "service-2")
    full = loader.load_data(f"autoscaling/{version}/service-2")
    small = service_models.prune(full, ("CompleteLifecycleAction",))
    assert list(small["operations"]) == ["CompleteLifecycleAction"]
    assert small["metadata"] == full["metadata"]
    assert "documentation" not in json.dumps(small).replace('"documentation":{', "")
    shapes = set(small["shapes"])
    assert {"CompleteLifecycleActionType", "CompleteLifecycleActionAnswer",
            "ResourceContentionFault", "AsciiStringMaxLen255"} <= shapes
    assert "DescribeAutoScalingGroupsType" not in shapes
    for shape in small["shapes"].values():  # everything a kept shape names is kept
        for ref in [shape.get(k) for k in ("member", "key", "value")] + list(
                shape.get("members", {}).values()):
            assert not ref or ref["shape"] in shapes


def test_they_are_used_only_with_the_botocore_they_came_from(
        pruned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (pruned / service_models.VERSION_FILE).read_text().strip() == botocore.__version__
    monkeypatch.setattr(service_models, "DATA", str(pruned.parent / "agent" / "data"))
    (pruned.parent / "agent" / "data").mkdir(parents=True)
    assert service_models.search_path() is None  # no models here: botocore's own
    (pruned.parent / "agent" / "data" / "models").symlink_to(pruned)
    assert service_models.search_path() == str(pruned.parent / "agent" / "data" / "models")
    monkeypatch.setattr(botocore, "__version__", "0.0.1")
    assert service_models.search_path() is None  # another botocore: its own models


def test_every_operation_the_code_names_is_in_the_list() -> None:
    """Any snake_case literal in the agent that is an operation of a service it calls."""
    loader = Loader()
    known = {}
    for service in service_models.OPERATIONS:
        version = loader.determine_latest_version(service, "service-2")
        for name in loader.load_data(f"{service}/{version}/service-2")["operations"]:
            known.setdefault(re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(), set()).add(
                (service, name))
    literals = set()
    for path in AGENT.rglob("*.py"):
        if "sim" in path.relative_to(AGENT).parts:
            continue
        literals |= {node.value for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Constant) and node.value in known}
    assert literals, "no operation found: the scan is broken"
    listed = {(service, op) for service, ops in service_models.OPERATIONS.items() for op in ops}
    # (describe_tags is an operation of ec2 and of autoscaling: one of them is enough)
    assert [name for name in literals if not known[name] & listed] == []
    used = {pair for name in literals for pair in known[name] & listed}
    # AssumeRole is called by botocore's role credentials, not by a literal of ours
    assert listed - used == {("sts", "AssumeRole")}


@pytest.mark.integration
def test_clients_from_pruned_models_call_moto(pruned: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_models, "search_path", lambda: str(pruned))
    skipped = service_models.skipped_handlers()
    kept = aws.builtin_handlers(skipped)
    monkeypatch.setattr(aws.Aws, "HANDLERS", kept)  # as when the package is built
    assert len(skipped) > 50
    # the handlers: every one of our services' kept, other services' and the docs' not
    events = [spec[0] for spec in kept]
    everything = [spec[0] for spec in botocore.handlers.BUILTIN_HANDLERS
                  if not spec[0].startswith("docs.")]
    assert "before-parameter-build.s3.PutObject" not in events
    assert not [e for e in events if e.startswith("docs.")]
    ours = ("auto-scaling", "autoscaling", "secretsmanager", "secrets-manager", "ec2", "sts")
    assert [e for e in everything if any(f".{name}." in f"{e}." for name in ours)] == [
        e for e in events if any(f".{name}." in f"{e}." for name in ours)]
    with World() as world:
        instance = world.seed(secrets={"prod/db": "pw"}, ssm_parameters={"/prod/x": "y"},
                              tags={"Role": "web"})
        for name, value in world.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        client = aws.Aws(world.region, endpoint_url=world.cloud.endpoint_url)
        for service, operations in service_models.OPERATIONS.items():
            meta = client.client(service).meta
            assert sorted(meta.service_model.operation_names) == sorted(operations), service
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("secretsmanager", "get_secret_value", {"SecretId": "prod/db"}),
            ("secretsmanager", "describe_secret", {"SecretId": "prod/db"}),
            ("ssm", "get_parameters", {"Names": ["/prod/x"], "WithDecryption": True}),
            ("autoscaling", "describe_auto_scaling_instances", {"InstanceIds": [instance]}),
            ("autoscaling", "describe_lifecycle_hooks", {"AutoScalingGroupName": world.group}),
            ("ec2", "describe_tags", {"Filters": [{"Name": "resource-id",
                                                   "Values": [instance]}]}),
            ("ec2", "describe_instance_types", {"InstanceTypes": ["m5.large"]}),
            ("sts", "assume_role", {"RoleArn": world.boto3_client("iam").create_role(
                RoleName="reader", AssumeRolePolicyDocument="{}")["Role"]["Arn"],
                "RoleSessionName": "i-1"}),
        ]
        replies = {op: client.call(service, op, **params) for service, op, params in calls}
    assert replies["get_secret_value"]["SecretString"] == "pw"
    assert replies["get_parameters"]["Parameters"][0]["Value"] == "y"
    assert replies["describe_auto_scaling_instances"]["AutoScalingInstances"][0][
        "LifecycleState"] == "Pending:Wait"
    assert {t["Key"]: t["Value"] for t in replies["describe_tags"]["Tags"]}["Role"] == "web"
    assert replies["describe_instance_types"]["InstanceTypes"][0]["MemoryInfo"][
        "SizeInMiB"] == 8192
    assert replies["assume_role"]["Credentials"]["AccessKeyId"]


def test_the_handlers_skipped_are_other_services_and_documentation_only() -> None:
    aliases = {"autoscaling": "auto-scaling", "secretsmanager": "secrets-manager",
               "route53": "route-53"}
    events = ["choose-service-name", "before-call", "before-parameter-build.s3.PutObject",
              "docs.request-params.s3.PutObject", "before-call.route-53",
              "before-parameter-build.auto-scaling.CreateLaunchConfiguration",
              "before-parameter-build.autoscaling.CreateLaunchConfiguration",
              "before-call.secrets-manager", "before-parameter-build.ec2.*",
              "before-parameter-build.s3-control", "creating-client-class.*"]
    kept = {"s3", "ec2", "autoscaling", "route53"}
    assert service_models.others_handlers(events, kept, aliases) == [
        "before-parameter-build.s3.PutObject", "docs.request-params.s3.PutObject",
        "before-call.route-53"]  # a word it does not know as a service (s3-control) is kept


def test_handlers_are_skipped_only_with_the_botocore_they_were_named_for(
        pruned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_models, "search_path", lambda: str(pruned))
    named = service_models.skipped_handlers()
    assert "before-parameter-build.s3.PutObject" in named
    assert not {e for e in named if ".secretsmanager." in e or ".auto-scaling." in e}
    monkeypatch.setattr(service_models, "search_path", lambda: None)  # another botocore
    assert service_models.skipped_handlers() == frozenset()
    (pruned / service_models.HANDLERS_FILE).rename(pruned / "saved")
    try:
        monkeypatch.setattr(service_models, "search_path", lambda: str(pruned))
        assert service_models.skipped_handlers() == frozenset()  # no file: every handler
    finally:
        (pruned / "saved").rename(pruned / service_models.HANDLERS_FILE)
