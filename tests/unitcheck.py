"""systemd's own judgement of the unit drop-ins a test wrote (``systemd-analyze verify``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

UNIT = "[Unit]\nDescription=test\n[Service]\nExecStart=/bin/true\n"


def assert_systemd_accepts(unit_dir: Path) -> None:
    """Every drop-in under ``unit_dir/<unit>.d/`` loads without a complaint, beside a
    minimal unit of that name (skipped only when systemd-analyze is not installed)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted(d.name.removesuffix(".d") for d in unit_dir.glob("*.service.d"))
    assert units, f"no drop-in under {unit_dir}"
    with tempfile.TemporaryDirectory() as own:
        for unit in units:
            (Path(own) / unit).write_text(UNIT)
        for unit in units:
            proc = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", str(Path(own) / unit)],
                env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:{own}:"},
                capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, proc.stderr
            assert proc.stderr == "", proc.stderr  # verify warns (exit 0) on a line it ignores
