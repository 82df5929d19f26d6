"""Resize awareness: the instance's history across boots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import status
from agent.state.history import track_instance


def test_track_instance(tmp_path: Path) -> None:
    history = str(tmp_path / "lib/agent/instance.json")  # the directory is created
    assert track_instance(history, "i-1", "m5.large", boot="b1", now="T1") == (None, "")
    assert json.loads(Path(history).read_text()) == {
        "version": 1, "instance_id": "i-1", "instance_type": "m5.large",
        "target_lifecycle_state": None, "boot_id": "b1", "recorded_at": "T1", "previous": None}
    # the same boot again (agent restarted): nothing new
    assert track_instance(history, "i-1", "m5.large", boot="b1", now="T2") == (None, "")
    # stop, change type, start
    resize = {"from": "m5.large", "to": "m5.xlarge", "previous_boot_at": "T1"}
    assert track_instance(history, "i-1", "m5.xlarge", boot="b2", now="T3") == (resize, "")
    # a restart during that boot still knows
    assert track_instance(history, "i-1", "m5.xlarge", boot="b2", now="T4") == (resize, "")
    # the next boot at the same type: no longer a resize
    assert track_instance(history, "i-1", "m5.xlarge", boot="b3", now="T5") == (None, "")
    # a history baked into the image by another instance is not a previous boot of this one
    assert track_instance(history, "i-2", "c5.large", boot="b4", now="T6") == (None, "")
    Path(history).write_text("not json")
    assert track_instance(history, "i-2", "c5.large", boot="b5", now="T7") == (None, "")
    assert track_instance("", "i-2", "c5.large") == (None, "")


def test_unwritable_history_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "ro").write_text("a file where the directory should be")
    resize, problem = track_instance(str(tmp_path / "ro/instance.json"), "i-1", "m5.large")
    assert resize is None
    assert problem.startswith(f"cannot record the instance type in {tmp_path}/ro/instance.json:")
    assert problem.endswith("(needed to notice a resize at the next boot)")


def test_status_shows_the_resize() -> None:
    doc = {"state": "ready", "condition": "healthy", "instance": {"instance_type": "m5.xlarge"},
           "resize": {"from": "m5.large", "to": "m5.xlarge", "previous_boot_at": "T1"},
           "phases": []}
    lines = status.render(doc, "/run/agent").splitlines()
    assert "resized    m5.large -> m5.xlarge since the previous boot" in lines
    assert "resized" not in status.render(doc | {"resize": None}, "/run/agent")


@pytest.mark.integration
def test_run_fails_writing_nothing_and_notes_the_resize(booter: Any) -> None:
    """`agent run`: a value failing for this instance fails the boot (exit 1) and writes no
    output of the phase; the resize since the previous boot is in state.json and status."""
    history = booter.root / "lib/instance.json"
    history.parent.mkdir()
    history.write_text(json.dumps({"version": 1, "instance_id": booter.world.instance_id,
                                   "instance_type": "m5.large", "boot_id": "an-earlier-boot",
                                   "recorded_at": "2026-01-01T00:00:00Z", "previous": None}))
    booter.configure(extra="""
[[tuning.dropins]]
unit = "app.service"
[tuning.dropins.service]
MemoryMax = "instance_memory_mib - 20000"
""")
    text = booter.config_path.read_text()  # the world's [tuning] table: point it here
    text = text.replace(f'history_file = "{booter.state_dir}/history.json"',
                        f'history_file = "{history}"\nunit_dir = "{booter.root}/units"')
    booter.config_path.write_text(text)
    proc = booter.run()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    error = "tuning drop-in app.service: MemoryMax: must be at least 0 (MiB), got -3616"
    assert error in proc.stderr
    assert not (booter.root / "tuning").exists() and not (booter.root / "units").exists()
    doc = booter.doc()
    assert doc["state"] == "failed"
    assert next(p for p in doc["phases"] if p["name"] == "tuning")["error"] == error
    assert doc["resize"] == {"from": "m5.large", "to": "m5.xlarge",
                             "previous_boot_at": "2026-01-01T00:00:00Z"}
    status_proc = booter.status()
    assert status_proc.returncode == 1
    assert "resized    m5.large -> m5.xlarge since the previous boot" in status_proc.stdout
    recorded = json.loads(history.read_text())
    assert (recorded["instance_type"], recorded["previous"]["instance_type"]) == (
        "m5.xlarge", "m5.large")
