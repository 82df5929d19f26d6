"""The image's section: ``[image]``."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import error_of, load

from agent.image.config import ImageConfig


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
