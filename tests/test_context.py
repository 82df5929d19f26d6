"""The launch context: placeholders checked at load and filled in at a launch, what a boot and
an offline plan say is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config, context, placeholders
from agent.context import ContextError, LaunchContext
from agent.errors import ConfigError


@pytest.mark.parametrize(("key", "text", "problem"), [
    ("secret_id", "{regoin}/db", "secrets.files[0].secret_id: unknown placeholder {regoin}"),
    ("role_arn", "arn:aws:iam::{acount}:role/r", "secrets.files[0].role_arn: unknown "
                                                  "placeholder {acount}"),
    ("region", "{tag:Region", "secrets.files[0].region: unbalanced '{'"),
    ("when", "tag('Role') ==", "secrets.files[0].when: when = \"tag('Role') ==\": syntax"),
])
def test_bad_placeholders_are_78_at_load(tmp_path: Path, key: str, text: str,
                                         problem: str) -> None:
    path = tmp_path / "agent.toml"
    extra = "" if key == "secret_id" else f'{key} = {text!r}\n'
    secret_id = text if key == "secret_id" else "prod/db"
    path.write_text(f'[[secrets.files]]\nsecret_id = "{secret_id}"\npath = "x"\n{extra}')
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert problem in str(info.value)


def boot_context(tags: dict[str, str] | None, group: str = "web-asg") -> LaunchContext:
    facts = {"region": "eu-west-1", "account": "111122223333", "availability_zone": "eu-west-1b",
             "instance_id": "i-1", "instance_type": "m5.large"}
    return LaunchContext(facts, tags=tags, group=group, missing=context._at_boot)


def test_resolve_every_placeholder() -> None:
    ctx = boot_context({"Environment": "prod"})
    assert ctx.resolve("{tag:Environment}/{region}/{account}/{availability_zone}/{instance_id}/"
                       "{instance_type}/{group}/{tag:Team|core}/{{x}}", "here") == (
        "prod/eu-west-1/111122223333/eu-west-1b/i-1/m5.large/web-asg/core/{x}")


@pytest.mark.parametrize(("text", "tags", "group", "message"), [
    ("{tag:Environment}/db", {}, "web-asg",
     "secrets.files[1]: no value for {tag:Environment}: the instance has no tag 'Environment' "
     "(tag it, or give a default: {tag:Environment|default})"),
    ("{group}/db", {}, "", "secrets.files[1]: no value for {group}: the instance is in no "
                           "Auto Scaling group"),
])
def test_a_missing_value_at_boot_names_entry_and_placeholder(
        text: str, tags: dict[str, str], group: str, message: str) -> None:
    with pytest.raises(ContextError) as info:
        boot_context(tags, group).resolve(text, "secrets.files[1]")
    assert str(info.value) == message


def test_tags_and_group_are_fetched_once_and_only_when_needed() -> None:
    calls: list[str] = []

    def tags() -> dict[str, str]:
        calls.append("tags")
        return {"Environment": "prod"}

    def group() -> str:
        calls.append("group")
        return "web-asg"

    ctx = LaunchContext({"region": "eu-west-1"}, tags=tags, group=group,
                        missing=context._at_boot)
    assert ctx.resolve("{region}/db", "x") == "eu-west-1/db"
    assert calls == []
    assert ctx.resolve("{tag:Environment}/{tag:Environment}/{group}", "x") == (
        "prod/prod/web-asg")
    ctx.resolve("{group}", "x")
    assert calls == ["tags", "group"]
    when = placeholders.condition("region == 'eu-west-1'")
    assert ctx.holds(when, {}, "x")
    assert calls == ["tags", "group"]


@pytest.mark.parametrize(("text", "message"), [
    ("{tag:Environment}/db", "no value for {tag:Environment}: give --tag Environment=VALUE"),
    ("{region}/db", "no value for {region}: give --region REGION"),
    ("{account}/db", "no value for {account}: give --account ACCOUNT"),
    ("{group}/db", "no value for {group}: give --group NAME"),
    ("{availability_zone}", "no value for {availability_zone}: give --availability-zone ZONE"),
    ("{instance_id}", "no value for {instance_id}: it is known only on the instance itself"),
])
def test_offline_says_which_option_gives_the_value(text: str, message: str) -> None:
    ctx = LaunchContext.offline("m5.large", tags={})
    with pytest.raises(ContextError) as info:
        ctx.resolve(text, "secrets.files[0]")
    assert str(info.value) == f"secrets.files[0]: {message}"


def test_offline_without_tags_asks_for_them() -> None:
    ctx = LaunchContext.offline("m5.large")
    with pytest.raises(ContextError, match="give them, --tag KEY=VALUE for each"):
        ctx.holds(placeholders.condition("tag('Role') == 'web'"), {}, "secrets.files[0]")
    ctx = LaunchContext.offline("m5.large", tags={"Role": "worker"}, region="us-east-1")
    assert not ctx.holds(placeholders.condition("tag('Role') == 'web'"), {}, "secrets.files[0]")
    assert ctx.holds(placeholders.condition("tag('Missing') == ''"), {}, "x")  # absent: ''
