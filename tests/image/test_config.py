"""The image's section: ``[image]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import loader
from agent.config.loader import Config
from agent.errors import EXIT_CONFIG, ConfigError
from agent.image.config import ImageConfig


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return loader.load(str(path))


def error_of(tmp_path: Path, text: str) -> str:
    """The one line a configuration error says, after the file's name."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.exit_code == EXIT_CONFIG
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"config {tmp_path / 'agent.toml'}: ")


def test_the_defaults_are_what_an_empty_file_gives(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.image == ImageConfig() and type(cfg.image) is ImageConfig
    assert (cfg.image.manifest, cfg.image.max_age_days) == ("/etc/agent/image.json", 0.0)


@pytest.mark.parametrize(("text", "line"), [
    ("[image]\nmanifest = 'image.json'\n", "image.manifest: 'image.json' must be an absolute"),
    ("[image]\nmax_age_days = 'old'\n", "image.max_age_days"),
    ("[image]\nmax_age_days = 3651\n", "image.max_age_days"),
])
def test_each_rule_is_one_line_naming_the_key(tmp_path: Path, text: str, line: str) -> None:
    assert error_of(tmp_path, text).startswith(line)
