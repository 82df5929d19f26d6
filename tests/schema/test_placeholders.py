"""Placeholders and when conditions: how a text is split, what is refused and how it is said."""

from __future__ import annotations

import pytest

from agent.schema import placeholders
from agent.schema.placeholders import Placeholder


def test_parse_pieces_and_literal_braces() -> None:
    assert placeholders.parse("{tag:Environment}/orders/{region}") == [
        Placeholder("{tag:Environment}", "tag", "Environment"), "/orders/",
        Placeholder("{region}", "region")]
    assert placeholders.parse("a{{b}}c") == ["a{b}c"]
    assert placeholders.parse("{tag:aws:autoscaling:groupName}") == [
        Placeholder("{tag:aws:autoscaling:groupName}", "tag", "aws:autoscaling:groupName")]
    assert placeholders.parse("{tag:Env|staging}") == [
        Placeholder("{tag:Env|staging}", "tag", "Env", "staging")]
    assert placeholders.parse("{tag:Env|}") == [Placeholder("{tag:Env|}", "tag", "Env", "")]


@pytest.mark.parametrize(("text", "problem"), [
    ("{regoin}/db", r"unknown placeholder \{regoin\} \(did you mean \{region\}\?"),
    ("prod/{tag}", r"unknown placeholder \{tag\}"),
    ("prod/{tag:}", r"a tag placeholder is \{tag:KEY\}"),
    ("prod/{region", r"unbalanced '\{' at 5"),
    ("prod/region}", r"unbalanced '\}' at 11"),
    ("{{region}", r"unbalanced '\}'"),
])
def test_bad_placeholders(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        placeholders.parse(text)


def test_a_condition_is_compiled_or_refused_naming_it() -> None:
    assert placeholders.condition("region == 'eu-west-1'").evaluate({"region": "eu-west-1"})
    with pytest.raises(ValueError, match=r"when = 'regoin == 1': .*regoin"):
        placeholders.condition("regoin == 1")
