"""Loading a configuration file as ``agent run`` does, for the sections' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import loader
from agent.config.loader import Config
from agent.errors import EXIT_CONFIG, ConfigError


def load(tmp_path: Path, text: str) -> Config:
    """``text`` as ``tmp_path/agent.toml``, loaded and validated."""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return loader.load(str(path))


def error_of(tmp_path: Path, text: str) -> str:
    """The one line a configuration error says, after the file's name (exit 78)."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.exit_code == EXIT_CONFIG
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"config {tmp_path / 'agent.toml'}: ")
