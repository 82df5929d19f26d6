"""The whole configuration: one class, whether validated or rebuilt from the cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.config import cache, document, loader, validator
from agent.errors import ConfigError
from agent.schema import fields
from agent.secrets.config import SecretFile, SecretsConfig


def test_the_defaults_are_what_an_empty_file_gives(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("")
    validated = loader.load(str(path))
    assert validated == document.Config()
    assert type(validated) is document.Config is loader.Config


def test_a_cached_configuration_is_the_same_class(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[signal]\ncloudformation_stack = "s"\ncloudformation_resource = "r"\n')
    validated = cache.load(str(path))
    cached = cache.load(str(path))
    assert cached is not validated and cached == validated
    assert type(cached.signal) is document.SignalConfig
    with pytest.raises(dataclasses.FrozenInstanceError):
        cached.signal.cloudformation_stack = "other"  # type: ignore[misc]


def test_a_rule_across_sections_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('mode = "oneshot"\n[readiness]\nunits = ["app.service"]\n')
    with pytest.raises(ConfigError) as info:
        loader.load(str(path))
    assert str(info.value).startswith(
        f'config {path}: (top level): mode "oneshot": [readiness] needs daemon mode')


def test_every_key_is_a_field_of_a_section() -> None:
    """The keys pydantic-settings reads are the dataclasses' init fields, nothing else."""
    assert list(validator.Settings.model_fields) == [
        f.name for f in dataclasses.fields(document.Config)]
    files = validator.section_of(fields.keys(SecretsConfig)["files"])
    assert files is SecretFile
    assert {"uid", "gid", "condition"}.isdisjoint(fields.keys(files))
