"""``agent bake-check``: the image's checks, the manifest, the primed configuration cache, and
the exit codes (0 passed, 1 a problem, 78 the configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentproc import clean_environment

from agent.cli.bake import bake_check
from agent.config import cache
from agent.errors import ConfigError


def clean_root(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "agent.service").symlink_to("/lib/systemd/system/agent.service")
    (root / "root").mkdir()
    (root / "etc/environment").write_text('PATH="/usr/bin:/bin"\n')
    return root


@pytest.mark.integration  # the manifest asks the platform module, which runs uname
def test_a_clean_image_gets_its_manifest_and_the_cache_primed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = clean_root(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text('[image]\nmax_age_days = 90\n')
    assert bake_check(str(config), str(root), None) == 0
    manifest = json.loads((root / "etc/agent/image.json").read_text())
    assert abs(manifest["built_at_epoch"] - time.time()) < 60
    primed = root / cache.DEFAULT_CACHE.lstrip("/")
    assert primed.is_file()
    out = capsys.readouterr().out
    assert f"agent: bake-check passed; manifest {root}/etc/agent/image.json" in out
    assert f"validated configuration cached in {primed}" in out


def test_a_problem_fails_the_bake_and_writes_no_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = clean_root(tmp_path)
    (root / "root/.boto").write_text("[Credentials]\n")
    config = tmp_path / "agent.toml"
    config.write_text("")
    assert bake_check(str(config), str(root), None) == 1
    err = capsys.readouterr().err
    assert f"agent: bake-check: credential file {root}/root/.boto" in err
    assert "agent: bake-check failed: 1 problem(s)" in err
    assert not (root / "etc/agent/image.json").exists()


def test_an_invalid_configuration_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[image]\nmax_age_days = 'old'\n")
    with pytest.raises(ConfigError, match=r"image\.max_age_days"):
        bake_check(str(config), str(clean_root(tmp_path)), None)


def run_bake_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment()
    return subprocess.run([sys.executable, "-m", "agent", "bake-check", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.integration
def test_bake_check_cli(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text("")
    proc = run_bake_check("--config", str(config), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((root / "etc/agent/image.json").read_text())
    assert manifest["agent"] and manifest["packages"]["botocore"]
    assert abs(manifest["built_at_epoch"] - time.time()) < 60

    (root / "root/.boto").write_text("[Credentials]\n")
    failed = run_bake_check("--config", str(config), "--root", str(root))
    assert failed.returncode == 1
    assert f"agent: bake-check: credential file {root}/root/.boto" in failed.stderr
    assert "Traceback" not in failed.stderr

    config.write_text("[image]\nmax_age_days = 'old'\n")
    bad = run_bake_check("--config", str(config), "--root", str(root))
    assert bad.returncode == 78
    assert "image.max_age_days" in bad.stderr
