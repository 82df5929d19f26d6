"""One image for every environment, account and role: the launch context at boot and in plan.

Against moto (server mode) and the IMDS simulator: placeholders resolved from the instance's
facts and tags (IMDS, else DescribeTags), conditions, roles in other accounts, ARNs in other
regions, secret templates, and the offline plan.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import IS_ROOT, MINE, Booter, clean_environment

from agent.sim import World

pytestmark = pytest.mark.integration  # every test here starts servers or processes

OTHER = "222222222222"  # a second account (moto keeps each apart)
ROLE = f"arn:aws:iam::{OTHER}:role/orders-secrets"
ENV_FILES = [{"secret_id": "{tag:Environment}/orders/db", "path": "db.json"}]


@pytest.fixture
def world() -> Iterator[World]:
    with World() as sim:
        sim.seed(tags={"Environment": "staging", "Role": "web"}, secrets={
            "staging/orders/db": '{"user": "orders", "password": "staging-pw-1"}',
            "prod/orders/db": '{"user": "orders", "password": "prod-pw-2"}',
            "shared/api-key": "key-everywhere"})
        yield sim


def booter(world: World, root: Path, files: list[dict[str, Any]], extra: str = "") -> Booter:
    b = Booter(world, root)
    root.mkdir(parents=True, exist_ok=True)
    b.state_dir, b.secrets_dir = root / "state", root / "secrets"
    b.configure(files, extra=extra)
    return b


def test_one_config_two_environments(world: World, tmpfs: Path) -> None:
    staging = booter(world, tmpfs / "staging", ENV_FILES)
    assert staging.run().returncode == 0, staging.outputs[-1]
    prod_id = world.add_instance({"Environment": "prod", "Role": "web"})
    world.become(prod_id)
    prod = booter(world, tmpfs / "prod", ENV_FILES)
    prod.config_path.write_text(staging.config_path.read_text().replace(
        str(tmpfs / "staging"), str(tmpfs / "prod")))  # the very same configuration
    assert prod.run().returncode == 0, prod.outputs[-1]
    assert json.loads((staging.secrets_dir / "db.json").read_text())["password"] == "staging-pw-1"
    assert json.loads((prod.secrets_dir / "db.json").read_text())["password"] == "prod-pw-2"
    record = prod.doc()["secrets"][0]
    assert (record["secret_id"], record["configured"]) == ("prod/orders/db",
                                                           "{tag:Environment}/orders/db")
    assert "prod/orders/db" in prod.status().stdout
    assert "from {tag:Environment}/orders/db" in prod.status().stdout
    assert world.cloud.calls("DescribeTags") == []  # the tags came from IMDS
    for b in (staging, prod):
        b.assert_no_secret_leaked()


def test_tags_off_in_metadata_come_from_describe_tags_once(tmpfs: Path) -> None:
    with World() as world:
        world.seed(tags_enabled=False, tags={"Environment": "staging"},
                   secrets={"staging/orders/db": "x", "staging/other": "y"})
        b = booter(world, tmpfs, [*ENV_FILES, {"secret_id": "{tag:Environment}/other",
                                               "path": "other"}])
        assert b.run().returncode == 0, b.outputs[-1]
        assert len(world.cloud.calls("DescribeTags")) == 1
        assert (b.secrets_dir / "other").read_text() == "y"


def test_tags_are_not_fetched_when_nothing_needs_them(tmpfs: Path) -> None:
    with World() as world:
        world.seed(tags_enabled=False, secrets={"shared/api-key": "k"})
        b = booter(world, tmpfs, [{"secret_id": "shared/api-key", "path": "key"}])
        assert b.run().returncode == 0
        assert world.cloud.calls("DescribeTags") == []


def test_describe_tags_denied_names_the_permission(tmpfs: Path) -> None:
    with World() as world:
        world.seed(tags_enabled=False, secrets={"staging/orders/db": "x"})
        world.cloud.fail_next("DescribeTags", code="UnauthorizedOperation", status=403,
                              message="You are not authorized to perform this operation.")
        b = booter(world, tmpfs, ENV_FILES)
        proc = b.run()
        assert proc.returncode == 1
        assert ("instance tags: access denied: the instance role needs ec2:DescribeTags "
                "(or turn on instance metadata tags)") in proc.stderr
        assert world.cloud.calls("GetSecretValue") == []
        assert b.results() == ["ABANDON"]


def test_a_missing_tag_fails_before_any_fetch(world: World, tmpfs: Path) -> None:
    b = booter(world, tmpfs, [{"secret_id": "shared/api-key", "path": "key"},
                              {"secret_id": "{tag:Team}/db", "path": "db"}])
    proc = b.run()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert ("secrets.files[1]: no value for {tag:Team}: the instance has no tag 'Team' (tag "
            "it, or give a default: {tag:Team|default})") in proc.stderr
    assert world.cloud.calls("GetSecretValue") == []
    assert b.results() == ["ABANDON"]
    assert not (b.secrets_dir / "key").exists()


def test_a_default_fills_an_absent_tag(world: World, tmpfs: Path) -> None:
    b = booter(world, tmpfs, [{"secret_id": "{tag:Tier|shared}/api-key", "path": "key"}])
    assert b.run().returncode == 0
    assert (b.secrets_dir / "key").read_text() == "key-everywhere"


def test_conditions_choose_the_role(world: World, tmpfs: Path) -> None:
    files = [{"secret_id": "{tag:Environment}/orders/db", "path": "web-db",
              "when": "tag('Role') == 'web'"},
             {"secret_id": "prod/orders/db", "path": "worker-db",
              "when": "tag('Role') == 'worker' and region == 'us-east-1'"},
             {"secret_id": "shared/api-key", "path": "key", "when": "memory_mib >= 1024"}]
    b = booter(world, tmpfs, files)
    assert b.run().returncode == 0, b.outputs[-1]
    assert sorted(p.name for p in b.secrets_dir.iterdir() if not p.name.startswith(".")) == [
        "key", "web-db"]
    doc = b.doc()
    assert doc["skipped"] == [{"entry": "secrets.files[1]", "phase": "secrets", "reason":
                               "when = \"tag('Role') == 'worker' and region == 'us-east-1'\" "
                               "is false"}]
    assert "skipped secrets.files[1]: when" in b.status().stdout
    assert len(world.cloud.calls("GetSecretValue")) == 2  # a skipped entry fetches nothing


def other_account_secret(world: World, name: str, value: str, region: str = "us-east-1"
                         ) -> str:
    return str(world.boto3_client("secretsmanager", region, account=OTHER).create_secret(
        Name=name, SecretString=value)["ARN"])


def test_a_role_in_another_account(world: World, tmpfs: Path) -> None:
    arn = other_account_secret(world, "orders/db", "from-the-other-account")
    other_account_secret(world, "orders/api", "api-of-the-other-account")
    before = len(world.cloud.calls("AssumeRole"))  # the world's own, creating those
    role = f"arn:aws:iam::{OTHER}:role/{{tag:Environment}}-orders"
    files = [{"secret_id": arn, "path": "db", "role_arn": role, "external_id": "e-123"},
             {"secret_id": "orders/api", "path": "api", "role_arn": role,
              "external_id": "e-123"},
             {"secret_id": "shared/api-key", "path": "mine"}]
    b = booter(world, tmpfs, files)
    assert b.run().returncode == 0, b.outputs[-1]
    assert (b.secrets_dir / "db").read_text() == "from-the-other-account"
    assert (b.secrets_dir / "api").read_text() == "api-of-the-other-account"
    assert (b.secrets_dir / "mine").read_text() == "key-everywhere"  # the instance's own
    (assumed,) = world.cloud.calls("AssumeRole")[before:]  # one per distinct role per boot
    assert assumed.params["RoleArn"] == f"arn:aws:iam::{OTHER}:role/staging-orders"
    assert assumed.params["RoleSessionName"] == world.instance_id
    assert assumed.params["ExternalId"] == "e-123"
    records = {r["path"].rsplit("/", 1)[1]: r for r in b.doc()["secrets"]}
    assert records["db"]["role"] == f"arn:aws:iam::{OTHER}:role/staging-orders"
    assert records["mine"]["role"] == ""


def test_a_boot_and_each_refresh_assume_a_role_once(world: World, tmpfs: Path) -> None:
    """One AssumeRole per role for the boot, and one for each refresh (a refresh is a job of
    its own: the role's credentials never leave the process that assumed it)."""
    other_account_secret(world, "orders/db", "v1")
    other_account_secret(world, "orders/api", "v1")
    before = len(world.cloud.calls("AssumeRole"))
    b = booter(world, tmpfs, [{"secret_id": "orders/db", "path": "db", "role_arn": ROLE},
                              {"secret_id": "orders/api", "path": "api", "role_arn": ROLE}])
    with b.daemon() as daemon:
        assert len(world.cloud.calls("AssumeRole")) == before + 1
        for count in (1, 2):
            daemon.send_signal(signal.SIGHUP)
            assert b.refreshed(count)["refresh"]["result"] == "unchanged"
    assert len(world.cloud.calls("AssumeRole")) == before + 3


def test_assume_role_denied_names_the_role(world: World, tmpfs: Path) -> None:
    world.cloud.fail_next("AssumeRole", code="AccessDenied", status=403,
                          message="not authorized to perform sts:AssumeRole")
    b = booter(world, tmpfs, [{"secret_id": "orders/db", "path": "db", "role_arn": ROLE}])
    proc = b.run()
    assert proc.returncode == 1
    assert (f"secret 'orders/db': cannot assume role {ROLE}: AccessDenied: not authorized to "
            "perform sts:AssumeRole (the instance role needs sts:AssumeRole on it") in proc.stderr
    assert b.results() == ["ABANDON"]


def test_an_arn_is_fetched_from_its_region_and_region_overrides(world: World,
                                                                  tmpfs: Path) -> None:
    europe = world.boto3_client("secretsmanager", "eu-west-1")
    arn = europe.create_secret(Name="eu/only", SecretString="in-europe")["ARN"]
    europe.create_secret(Name="eu/by-name", SecretString="also-in-europe")
    files = [{"secret_id": arn, "path": "by-arn"},
             {"secret_id": "eu/by-name", "path": "by-region", "region": "eu-{tag:Zone|west}-1"}]
    b = booter(world, tmpfs, files)
    assert b.run().returncode == 0, b.outputs[-1]
    assert (b.secrets_dir / "by-arn").read_text() == "in-europe"
    assert (b.secrets_dir / "by-region").read_text() == "also-in-europe"
    assert {c.region for c in world.cloud.calls("GetSecretValue")} == {"eu-west-1"}
    assert {r["region"] for r in b.doc()["secrets"]} == {"eu-west-1"}


def test_an_arn_of_the_wrong_region_says_where_it_looked(world: World, tmpfs: Path) -> None:
    arn = world.boto3_client("secretsmanager").create_secret(
        Name="us/only", SecretString="x")["ARN"].replace("us-east-1", "ap-south-1")
    b = booter(world, tmpfs, [{"secret_id": arn, "path": "x"}])
    proc = b.run()
    assert proc.returncode == 1
    assert f"secret {arn!r} not found in ap-south-1" in proc.stderr


TEMPLATE = ("jdbc.url=jdbc:postgresql://db.{region}.internal/orders\n"
            "jdbc.user=${DB_USER}\njdbc.password=${DB_PASSWORD}\n"
            "region=${region} account=${account} group=${group} price=$$5\n")


def template_extra(source: Path, owner: str = "", hook: str = "") -> str:
    lines = ["", "[[secrets.templates]]", f'source = "{source}"',
             'path = "orders/application.properties"', 'mode = "0440"']
    # as another user, its own files (only root gives files away)
    for key, value in ({**MINE, "owner": owner} if owner else MINE).items():
        lines.append(f'{key} = "{value}"')
    if hook:
        lines.append(f'on_change = [["{hook}"]]')
    return "\n".join(lines) + "\n"


TEMPLATE_FILES = [
    {"name": "DB_PASSWORD", "secret_id": "{tag:Environment}/orders/db", "key": "password",
     "publish": False},
    {"name": "DB_USER", "secret_id": "{tag:Environment}/orders/db", "key": "user",
     "publish": False},
    {"secret_id": "shared/api-key", "path": "api-key"}]


def test_a_template_combines_secrets_and_facts(world: World, tmpfs: Path,
                                               tmp_path: Path) -> None:
    source = tmp_path / "application.properties.in"
    source.write_text(TEMPLATE)
    b = booter(world, tmpfs, TEMPLATE_FILES, extra=template_extra(source))
    assert b.run().returncode == 0, b.outputs[-1]
    out = b.secrets_dir / "orders/application.properties"
    assert out.read_text() == ("jdbc.url=jdbc:postgresql://db.{region}.internal/orders\n"
                               "jdbc.user=orders\njdbc.password=staging-pw-1\n"
                               "region=us-east-1 account=123456789012 group=web-asg price=$5\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o440
    # published in the same generation as the files
    assert os.path.realpath(out).split("/")[-3] == os.path.realpath(
        b.secrets_dir / "api-key").split("/")[-2]
    assert not [p for p in b.secrets_dir.iterdir() if p.name in ("DB_PASSWORD", "DB_USER")]
    doc = b.doc()
    assert any(r.get("template") == str(source) for r in doc["secrets"])
    for text in [*b.outputs, json.dumps(doc), b.status().stdout]:
        assert "staging-pw-1" not in text


def test_a_template_reloads_only_when_its_bytes_change(world: World, tmpfs: Path,
                                                       tmp_path: Path) -> None:
    source = tmp_path / "application.properties.in"
    source.write_text(TEMPLATE)
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$AGENT_SECRET_SOURCE $AGENT_SECRET_PATH" >> "{log}"\n')
    hook.chmod(0o755)
    b = booter(world, tmpfs, TEMPLATE_FILES, extra=template_extra(source, hook=str(hook)))
    sm = world.boto3_client("secretsmanager")
    with b.daemon() as daemon:
        sm.put_secret_value(SecretId="shared/api-key", SecretString="rotated-key")
        daemon.send_signal(signal.SIGHUP)
        assert b.refreshed(1)["refresh"]["result"].startswith("published")
        assert not log.exists()  # the template's bytes did not change
        sm.put_secret_value(SecretId="staging/orders/db",
                            SecretString='{"user": "orders", "password": "staging-pw-3"}')
        daemon.send_signal(signal.SIGHUP)
        assert b.refreshed(2)["refresh"]["result"].startswith("published")
        out = b.secrets_dir / "orders/application.properties"
        assert "jdbc.password=staging-pw-3" in out.read_text()
        assert log.read_text().splitlines() == [f"template {out}"]


def test_template_variables_are_checked_at_load(world: World, tmpfs: Path,
                                                tmp_path: Path) -> None:
    source = tmp_path / "t.in"
    source.write_text("password=${DB_PASWORD}\n")
    b = booter(world, tmpfs, TEMPLATE_FILES, extra=template_extra(source))
    proc = b.run()
    assert proc.returncode == 78
    assert ("secrets: templates[0] " + str(source) + ": unknown variable ${DB_PASWORD} (did "
            "you mean ${DB_PASSWORD}?)") in proc.stderr


def test_a_template_missing_at_load_fails_the_boot(world: World, tmpfs: Path,
                                                   tmp_path: Path) -> None:
    b = booter(world, tmpfs, TEMPLATE_FILES, extra=template_extra(tmp_path / "absent.in"))
    proc = b.run()
    assert proc.returncode == 1
    assert f"secrets.templates[0] {tmp_path / 'absent.in'}: cannot read" in proc.stderr
    assert b.results() == ["ABANDON"]
    assert not (b.secrets_dir / "api-key").exists()  # all or none


def test_a_template_owned_by_its_reader(world: World, tmpfs: Path, tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("giving a file to another user needs root")
    source = tmp_path / "t.in"
    source.write_text("${DB_PASSWORD}")
    b = booter(world, tmpfs, TEMPLATE_FILES, extra=template_extra(source, owner="nobody"))
    assert b.run().returncode == 0, b.outputs[-1]
    assert (b.secrets_dir / "orders/application.properties").stat().st_uid == 65534


# -- agent plan, offline -------------------------------------------------------------------


def plan(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment()
    return subprocess.run([sys.executable, "-m", "agent", "plan", "--config", str(config),
                           *args], capture_output=True, text=True, env=env, timeout=60)


PLAN_CONFIG = """
[[secrets.files]]
secret_id = "{tag:Environment}/orders/db"
path = "db.json"
role_arn = "arn:aws:iam::{account}:role/{tag:Environment}-orders"

[[secrets.files]]
secret_id = "{group}/{region}/cache"
path = "cache"
when = "tag('Role') == 'web'"

[[secrets.files]]
secret_id = "worker/queue"
path = "queue"
when = "tag('Role') == 'worker'"
"""


def test_offline_plan_resolves_everything(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(PLAN_CONFIG)
    args = ["--instance-type", "m5.large", "--tag", "Environment=prod", "--tag", "Role=web",
            "--region", "eu-west-1", "--account", "111122223333", "--group", "orders-web"]
    proc = plan(config, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(f["secret_id"], f["role"]) for f in doc["secrets"]["files"]] == [
        ("prod/orders/db", "arn:aws:iam::111122223333:role/prod-orders"),
        ("orders-web/eu-west-1/cache", "")]
    assert doc["skipped"] == [{"entry": "secrets.files[2]",
                               "reason": "when = \"tag('Role') == 'worker'\" is false"}]
    text = plan(config, *args).stdout
    assert "<- prod/orders/db" in text and "role arn:aws:iam::111122223333:role/prod-orders" in text
    assert "skipped secrets.files[2]: when" in text


@pytest.mark.parametrize(("missing", "message"), [
    ("--tag", "secrets.files[0]: no value for {tag:Environment}: give --tag Environment=VALUE"),
    ("--account", "secrets.files[0]: no value for {account}: give --account ACCOUNT"),
    ("--group", "secrets.files[1]: no value for {group}: give --group NAME"),
])
def test_offline_plan_names_what_it_needs(tmp_path: Path, missing: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(PLAN_CONFIG)
    given = {"--tag": ["Environment=prod"], "--account": ["111122223333"],
             "--group": ["orders-web"]}
    args = ["--instance-type", "m5.large", "--region", "eu-west-1", "--tag", "Role=web"]
    for option, values in given.items():
        if option != missing:
            args += [option, *values]
    proc = plan(config, *args)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"agent: {message}"


def test_offline_options_need_an_instance_type(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(PLAN_CONFIG)
    proc = plan(config, "--tag", "Environment=prod")
    assert proc.returncode == 2
    assert "they go with --instance-type" in proc.stderr
    assert plan(config, "--instance-type", "m5.large", "--tag", "novalue").returncode == 2


ROLES_TUNING = """
[[tuning.files]]
path = "{root}/tuning/launch.env"
[tuning.files.values]
ROLE = "tag('Role')"
REGION = "region"
ZONE = "availability_zone"
ACCOUNT = "account"

[[tuning.profiles]]
use = "gunicorn"
path = "{root}/tuning/web.env"
when = "tag('Role') == 'web'"

[[tuning.profiles]]
use = "gunicorn"
path = "{root}/tuning/worker.env"
when = "tag('Role') == 'worker'"
"""


def test_tuning_reads_the_launch_and_keeps_what_holds(world: World, tmpfs: Path) -> None:
    b = booter(world, tmpfs, [{"secret_id": "shared/api-key", "path": "key"}],
               extra=ROLES_TUNING.format(root=tmpfs))
    assert b.run().returncode == 0, b.outputs[-1]
    launch = (tmpfs / "tuning/launch.env").read_text()
    assert 'ROLE="web"' in launch and 'ZONE="us-east-1a"' in launch
    assert 'ACCOUNT="123456789012"' in launch
    assert (tmpfs / "tuning/web.env").exists() and not (tmpfs / "tuning/worker.env").exists()
    assert b.doc()["skipped"] == [{"entry": "tuning.profiles[1]", "phase": "tuning",
                                   "reason": "when = \"tag('Role') == 'worker'\" is false"}]
    text = plan(b.config_path, "--instance-type", "m5.large", "--tag", "Role=worker",
                "--region", "eu-west-1", "--availability-zone", "eu-west-1c",
                "--account", "1").stdout
    assert "skipped tuning.profiles[0]: when = \"tag('Role') == 'web'\" is false" in text
    assert "ZONE = eu-west-1c" in text and "REGION = eu-west-1" in text


def test_conditional_entries_may_share_a_path(world: World, tmpfs: Path) -> None:
    files = [{"secret_id": "{tag:Environment}/orders/db", "path": "db.json",
              "when": "tag('Role') == 'web'"},
             {"secret_id": "prod/orders/db", "path": "db.json",
              "when": "tag('Role') == 'worker'"}]
    b = booter(world, tmpfs, files)
    assert b.run().returncode == 0, b.outputs[-1]
    assert "staging-pw-1" in (b.secrets_dir / "db.json").read_text()
    both = [{**files[0], "when": "region == 'us-east-1'"}, files[1] | {"when": "1"}]
    b.configure(both)
    proc = b.run()
    assert proc.returncode == 1
    assert ("secrets: secrets.files[1] and secrets.files[0] both write 'db.json' (both of "
            "their conditions hold here)") in proc.stderr
