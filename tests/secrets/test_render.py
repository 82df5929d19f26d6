"""Rendering beyond the secrets phase's own tests (tests/secrets/test_publish.py): the json format,
values that are not text, and secret templates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.errors import SecretsError
from agent.secrets.config import SecretFile
from agent.secrets.render import SecretValue, render, render_template, template_variables

WHERE = "secret 'prod/db' (secrets.files[0] db)"


def entry(**kw: Any) -> SecretFile:
    kw.setdefault("secret_id", "prod/db")
    kw.setdefault("path", "db")
    return SecretFile(**kw)


def value(doc: Any) -> SecretValue:
    return SecretValue("prod/db", "v1", text=json.dumps(doc))


def test_json_format_is_an_indented_document_with_its_unicode() -> None:
    out = render(entry(format="json", key="db"), value({"db": {"user": "ünï", "n": 1}}), WHERE)
    assert out == '{\n  "user": "ünï",\n  "n": 1\n}\n'.encode()
    whole = render(entry(format="json"), value([1, None]), WHERE)
    assert json.loads(whole) == [1, None]


@pytest.mark.parametrize(("selected", "text"), [
    (None, b""), (True, b"true"), (1.5, b"1.5"), ({"a": [1, 2]}, b'{"a":[1,2]}'),
])
def test_a_key_of_another_type_is_its_compact_json(selected: Any, text: bytes) -> None:
    assert render(entry(key="k"), value({"k": selected}), WHERE) == text


def test_a_lone_surrogate_is_one_line_without_the_value() -> None:
    doc = SecretValue("prod/db", "v1", text='{"k": "hunter2\\ud800"}')
    with pytest.raises(SecretsError) as info:
        render(entry(key="k"), doc, WHERE)
    assert str(info.value).startswith(WHERE)
    assert "lone surrogate" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_deeply_nested_secret_is_refused_not_a_crash() -> None:
    deep = SecretValue("prod/db", "v1", text="[" * 100_000 + "]" * 100_000)
    with pytest.raises(SecretsError, match="not JSON"):
        render(entry(key="k"), deep, WHERE)


def test_a_template_fills_in_every_variable() -> None:
    text = "postgres://${USER}:${PASS}@${host}/db?cost=$$5"
    assert template_variables(text, WHERE) == ["USER", "PASS", "host"]
    out = render_template(text, {"USER": b"app", "PASS": "p@ss $x", "host": "db.local"}, WHERE)
    assert out == b"postgres://app:p@ss $x@db.local/db?cost=$5"


def test_a_template_refuses_an_unknown_variable_and_binary_values() -> None:
    with pytest.raises(SecretsError, match=r"unknown variable \$\{PASS\}"):
        render_template("${USER} ${PASS}", {"USER": b"app"}, WHERE)
    with pytest.raises(SecretsError) as info:
        render_template("${KEY}", {"KEY": b"\xff\xfehunter2"}, WHERE)
    assert "is binary" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_stray_dollar_is_a_template_error() -> None:
    with pytest.raises(SecretsError) as info:
        template_variables("cost: 5$", WHERE)
    assert str(info.value).startswith(f"{WHERE}: ")
    assert "\n" not in str(info.value)
