"""The one validator: pydantic-settings over the sections' dataclasses, errors in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import validator
from agent.errors import ConfigError
from agent.secrets.config import SecretFile
from agent.tuning.config import TuningProfile


def test_the_environment_reaches_a_key_inside_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_IMDS__TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("AGENT_SECRETS__FILES", '[{"secret_id": "a", "path": "a"}]')
    monkeypatch.setenv("AGENT_SECRETS__NOT_A_KEY", "ignored")
    cfg = validator.validate(Path("agent.toml"), {"imds": {"timeout_seconds": 9}})
    assert cfg.imds.timeout_seconds == 3.0  # the environment wins over the file
    assert cfg.secrets.files == [validator.section(SecretFile, secret_id="a", path="a")]


def test_an_unknown_key_gets_the_closest_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validator.validate(tmp_path / "a.toml", {"tuning": {"profiles": [{"uze": "jvm"}]}})
    assert str(info.value) == (f"config {tmp_path / 'a.toml'}: tuning.profiles[0].uze: "
                               "unknown key (did you mean 'use'?) (and 1 more)")


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENT_TERMINATION__DEADLINE_SECONDS", "0")
    with pytest.raises(ConfigError, match=r"^environment AGENT_TERMINATION__DEADLINE_SECONDS: "
                       r"termination.deadline_seconds: Input should be greater than or equal"):
        validator.validate(tmp_path / "a.toml", {})


def test_one_entry_validates_as_in_a_file() -> None:
    assert validator.section(TuningProfile, use="jvm", share=0.5).share == 0.5
    with pytest.raises(ValidationError, match="share\n  Input should be greater than 0"):
        validator.section(TuningProfile, use="jvm", share=0)
    with pytest.raises(ValidationError, match="unknown profile 'jvn' \\(did you mean 'jvm'"):
        validator.section(TuningProfile, use="jvn")
