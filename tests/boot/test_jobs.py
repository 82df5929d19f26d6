"""The resident's jobs as it runs them: ``python -m agent.boot.jobs HANDOFF KIND RESULT ARG`` in
a process of its own, from a hand-off file, its changes to state.json returned (never
written), what later jobs need written back. (A job of the whole boot against the simulated
cloud: tests/test_rotation.py, tests/boot/test_resident.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agentproc import clean_environment

from agent.boot import jobs


def handoff(tmp_path: Path, config: str, **job: Any) -> Path:
    """A hand-off as a boot without AWS would leave it, its configuration file beside it."""
    (tmp_path / "agent.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n{config}')
    doc = {"format": 1,
           "resident": {"state_dir": str(tmp_path / "state"), "lock_fd": -1, "verbose": False},
           "job": {"config": None, "config_path": str(tmp_path / "agent.toml"),
                   "meta": {"identity": {"instance_id": "i-0abc"}, "tags": {},
                            "target_state": None},
                   "aws": False, "secrets": None, "telemetry": None, "requests": [],
                   "earlier_boot": None, "previous": None, **job}}
    path = tmp_path / "resident.json"
    jobs.write_handoff(str(path), doc)
    return path


def run_job(path: Path, kind: str, arg: Any) -> tuple[subprocess.CompletedProcess[str], Path]:
    result = path.parent / "result.json"
    proc = subprocess.run([sys.executable, "-m", "agent.boot.jobs", str(path), kind, str(result),
                           json.dumps(arg)], capture_output=True, text=True, timeout=60,
                          env=clean_environment(), check=False)
    return proc, result


def test_the_handoff_is_private_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "resident.json"
    jobs.write_handoff(str(path), {"format": 1, "a": 1})
    inode = path.stat().st_ino
    jobs.write_handoff(str(path), {"format": 1, "a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"format": 1, "a": 2}
    assert path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["resident.json"]


@pytest.mark.integration
def test_a_rebalance_job_runs_its_command_and_returns_its_record(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = handoff(tmp_path, "[termination]\nrebalance_command = "
                             f'["/bin/sh", "-c", "echo ran > {marker}"]\n')
    proc, result = run_job(path, "rebalance", ["rebalance", "rebalance recommended at now"])
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "ran\n"
    answer = json.loads(result.read_text())
    ((kind, fields),) = answer["changes"]
    assert kind == "update"
    assert fields["rebalance"]["notice"] == "rebalance recommended at now"
    assert fields["rebalance"]["command"] == "ok"
    assert not (tmp_path / "state" / "state.json").exists()  # the resident writes it


@pytest.mark.integration
def test_a_drain_job_runs_the_commands_in_order_by_the_deadline(tmp_path: Path) -> None:
    log = tmp_path / "drain.log"
    path = handoff(tmp_path, "[termination]\ncommands = ["
                             f'["/bin/sh", "-c", "echo one >> {log}"], '
                             f'["/bin/sh", "-c", "echo two >> {log}; exit 4"]]\n'
                             "wipe_secrets = false\n")
    deadline = time.monotonic() + 30  # the resident's clock: the same monotonic clock
    proc, result = run_job(path, "drain", ["autoscaling", "target lifecycle state Terminated",
                                           deadline])
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == "one\ntwo\n"
    ((_, fields),) = json.loads(result.read_text())["changes"]
    record = fields["termination"]
    assert record["reason"] == "autoscaling"
    assert [s["result"] for s in record["steps"]] == ["ok", "drain: /bin/sh -c echo two >> "
                                                      f"{log}; exit 4 exited 4"]
    assert record["hook"] is None and record["secrets_wiped"] is False


@pytest.mark.integration
def test_a_job_that_cannot_run_exits_1_with_one_line_and_no_result(tmp_path: Path) -> None:
    path = handoff(tmp_path, "")
    (tmp_path / "agent.toml").write_text("[termination]\npoll_seconds = 0\n")  # now invalid
    proc, result = run_job(path, "rebalance", ["rebalance", "x"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agent: ERROR rebalance: internal error: ")
    assert "Traceback" not in proc.stderr
    assert not result.exists()
    assert os.path.exists(path)  # the hand-off stays for the next job
