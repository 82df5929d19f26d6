"""The package builds' choices, checked without building: the release and the interpreter.

``packaging/deb/build.sh`` builds one release's package with one interpreter; a release name
that is not one, an interpreter that is missing or older than 3.11 is one line on stderr and
a non-zero exit, before anything is built or written. (The builds themselves, for Debian 12
and 13, are checked by the e2e tests.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs the build scripts (bash) as processes

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "packaging" / "deb" / "build.sh"


def host_release() -> str:
    """This machine's release codename (the one build.sh builds here, without a root)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if fields.get("ID") != "debian" or not fields.get("VERSION_CODENAME"):
        pytest.skip("not a Debian machine")
    return fields["VERSION_CODENAME"].strip('"')


def build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """build.sh with ``env`` added; it must not have written anything."""
    before = sorted(p.name for p in (REPO / "dist").glob("*")) if (REPO / "dist").exists() else []
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, **env, "HOME": str(tmp_path)})
    after = sorted(p.name for p in (REPO / "dist").glob("*")) if (REPO / "dist").exists() else []
    assert after == before
    return proc


def test_an_interpreter_older_than_3_11_is_refused(tmp_path: Path) -> None:
    """Ubuntu 22.04's default python3 (3.10): one line naming it and the way out."""
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\ncase "$2" in *"%d.%d"*) echo 3.10 ;; *) exit 1 ;; esac\n')
    old.chmod(0o755)
    proc = build(tmp_path, DIST=host_release(), PYTHON=str(old))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"deb: {old} is Python 3.10; the agent needs 3.11 or newer "
        "(e.g. PYTHON=python3.11 where the release has it)"], proc.stderr


def test_a_missing_interpreter_is_named(tmp_path: Path) -> None:
    """PYTHON=python3.99: a name under /usr/bin that is not there."""
    proc = build(tmp_path, DIST=host_release(), PYTHON="python3.99")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "deb: no interpreter /usr/bin/python3.99 (install it, or choose another: "
        "PYTHON=python3.12)"], proc.stderr


@pytest.mark.parametrize("name", ["Trixie", "../etc", "trixie-security", " "])
def test_a_release_name_that_is_not_one_is_a_usage_error(tmp_path: Path, name: str) -> None:
    """DIST is a codename: never a path, never something debootstrap would be asked for."""
    proc = build(tmp_path, DIST=name)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"deb: DIST must name a release (bookworm, trixie, ...), not '{name}'"], proc.stderr
