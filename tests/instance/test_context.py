"""The launch context: placeholders checked at load and filled in at a launch, what a boot and
an offline plan say is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import loader
from agent.errors import ConfigError
from agent.instance import context
from agent.instance.context import ContextError, LaunchContext
from agent.schema import placeholders


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
        loader.load(str(path))
    assert problem in str(info.value)


def boot_context(tags: dict[str, str] | None, group: str = "web-asg") -> LaunchContext:
    facts = {"region": "eu-west-1", "account": "111122223333", "availability_zone": "eu-west-1b",
             "instance_id": "i-1", "instance_type": "m5.large"}
    return LaunchContext(facts, tags=tags, group=group, missing=context._at_boot)


def test_resolve_every_placeholder() -> None:
    ctx = boot_context({"Environment": "prod"})
    assert ctx.resolve("{tag:Environment}/{region}/{account}/{availability_zone}/{instance_id}/"
                       "{instance_type}/{group}/{tag:Team|core}/{{x}}", "here", "secret_id") == (
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
        boot_context(tags, group).resolve(text, "secrets.files[1]", "secret_id")
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
    assert ctx.resolve("{region}/db", "x", "secret_id") == "eu-west-1/db"
    assert calls == []
    assert ctx.resolve("{tag:Environment}/{tag:Environment}/{group}", "x", "secret_id") == (
        "prod/prod/web-asg")
    ctx.resolve("{group}", "x", "secret_id")
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
        ctx.resolve(text, "secrets.files[0]", "secret_id")
    assert str(info.value) == f"secrets.files[0]: {message}"


def test_offline_without_tags_asks_for_them() -> None:
    ctx = LaunchContext.offline("m5.large")
    with pytest.raises(ContextError, match="give them, --tag KEY=VALUE for each"):
        ctx.holds(placeholders.condition("tag('Role') == 'web'"), {}, "secrets.files[0]")
    ctx = LaunchContext.offline("m5.large", tags={"Role": "worker"}, region="us-east-1")
    assert not ctx.holds(placeholders.condition("tag('Role') == 'web'"), {}, "secrets.files[0]")
    assert ctx.holds(placeholders.condition("tag('Missing') == ''"), {}, "x")  # absent: ''


# -- a placeholder's value is outside input: only the characters of its destination ----------

EVIL = "arn:aws:secretsmanager:eu-west-1:999999999999:secret:evil"


@pytest.mark.parametrize(("key", "value"), [
    ("secret_id", "Team+a=b.c@d-e_f/g"),
    ("parameter", "/team/a_b.c-d"),
    ("role_arn", "a+b=c,d.e@f-g_h"),
    ("region", "us-gov-west-1"),
])
def test_a_value_may_hold_what_its_destination_holds(key: str, value: str) -> None:
    assert boot_context({"V": value}).resolve("{tag:V}", "secrets.files[0]", key) == value


@pytest.mark.parametrize(("key", "value", "bad", "rule"), [
    ("secret_id", EVIL, ":", "a secret name: ':' is not allowed (letters, digits and "
                             "/_+=.@- only)"),
    ("secret_id", "prod db", " ", "a secret name: ' ' is not allowed"),
    ("parameter", "/prod/db@x", "@", "a parameter name: '@' is not allowed (letters, digits "
                                    "and _.-/ only)"),
    ("role_arn", "team/admin", "/", "a role name: '/' is not allowed (letters, digits and "
                                   "_+=,.@- only)"),
    ("region", "EU-WEST-1", "E", "a region: 'E' is not allowed (lowercase letters, digits "
                                "and - only)"),
    ("region", "eu-west-1.evil.example", ".", "a region: '.' is not allowed"),
    ("secret_id", "ümlaut", "ü", "a secret name: 'ü' is not allowed"),
])
def test_a_value_its_destination_refuses_names_entry_and_tag(key: str, value: str, bad: str,
                                                            rule: str) -> None:
    with pytest.raises(ContextError) as info:
        boot_context({"Environment": value}).resolve("{tag:Environment}/db",
                                                     "secrets.files[2]", key)
    assert str(info.value).startswith(f"secrets.files[2]: {key}: {{tag:Environment}} is "
                                      f"'{value}', which may not go into {rule}")


def test_the_facts_follow_the_same_rules() -> None:
    with pytest.raises(ContextError, match=r"secrets.files\[0\]: secret_id: \{group\} is "
                                           r"'web asg', which may not go into a secret name"):
        boot_context({}, group="web asg").resolve("{group}/db", "secrets.files[0]", "secret_id")
    assert boot_context({}).resolve("{instance_type}", "x", "secret_id") == "m5.large"


def test_a_refused_value_is_shown_escaped_and_short() -> None:
    with pytest.raises(ContextError) as info:
        boot_context({"R": "eu-west-1\n\x1b]0;t\x07" + "x" * 300}).resolve(
            "{tag:R}", "secrets.files[0]", "region")
    message = str(info.value)
    assert message.isprintable()
    assert "is 'eu-west-1\\n\\x1b]0;t\\x07xxx" in message
    assert "xxx...', which may not go into a region: '\\n' is not allowed" in message
    assert len(message) < 300


def test_an_empty_tag_is_absent() -> None:
    ctx = boot_context({"Environment": "", "Team": ""})
    assert ctx.resolve("{tag:Environment|staging}/db", "x", "secret_id") == "staging/db"
    with pytest.raises(ContextError) as info:
        ctx.resolve("{tag:Team}/db", "secrets.files[1]", "secret_id")
    assert str(info.value) == (
        "secrets.files[1]: no value for {tag:Team}: the instance's tag 'Team' is empty (tag "
        "it, or give a default: {tag:Team|default})")
    offline = LaunchContext.offline("m5.large", tags={"Team": ""})
    with pytest.raises(ContextError, match=r"give --tag Team=VALUE \(an empty value counts "
                                           r"as absent\)"):
        offline.resolve("{tag:Team}", "x", "secret_id")


def test_a_name_that_resolves_to_nothing_fails() -> None:
    ctx = boot_context({})
    with pytest.raises(ContextError, match=r"^secrets.files\[0\]: secret_id '\{tag:Env\|\}' "
                                           r"is empty here$"):
        ctx.resolve("{tag:Env|}", "secrets.files[0]", "secret_id")
    assert ctx.resolve("{tag:Region|}", "secrets.files[0]", "region") == ""  # the default


def test_offline_without_tags_names_each_tag_and_where() -> None:
    uses = [("secrets.files[0].secret_id", "Environment"), ("tuning.files[1].when", "Role"),
            ("secrets.files[2].role_arn", "Environment")]
    with pytest.raises(ContextError) as info:
        LaunchContext.offline("m5.large").require_tags(uses)
    assert str(info.value) == (
        "the instance's tags are needed, give --tag KEY=VALUE for each: 'Environment' "
        "(secrets.files[0].secret_id, secrets.files[2].role_arn), 'Role' (tuning.files[1].when)")
    LaunchContext.offline("m5.large", tags={}).require_tags(uses)  # given (none): no error
    LaunchContext.offline("m5.large").require_tags([])  # none needed
