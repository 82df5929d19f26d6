"""The launch hook's completion survives a kill at any moment: the next run of the same boot
neither completes it again nor takes its own completion for someone else's."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from agentproc import Booter

# `agent run`, killed (no cleanup, as SIGKILL) right after its Nth state.json write, or right
# after CompleteLifecycleAction was answered (before the result is recorded)
KILLED_RUN = """
import os, sys
from agent.lifecycle import hook as lifecycle
from agent.state import recorder as state
at, where = int(sys.argv[1]), sys.argv[2]
writes = [0]
real_write, real_complete = state.Recorder.write, lifecycle.complete

def write(self, **kwargs):
    real_write(self, **kwargs)
    writes[0] += 1
    if where == "write" and writes[0] == at:
        os._exit(137)

def complete(*args, **kwargs):
    result = real_complete(*args, **kwargs)
    if where == "complete":
        os._exit(137)
    return result

state.Recorder.write, lifecycle.complete = write, complete
from agent.cli.commands import main
sys.exit(main(sys.argv[3:]))
"""


def killed_run(b: Booter, at: int, where: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", KILLED_RUN, str(at), where, "run", "--oneshot",
                           "--config", str(b.config_path)], capture_output=True, text=True,
                          env=b.env(), timeout=60)


def completions(b: Booter) -> list[Any]:
    return b.world.cloud.calls("CompleteLifecycleAction")


def assert_completed_once_and_healthy(b: Booter, why: str, launches: int = 0,
                                      sent: int = 0) -> None:
    """The next run ends healthy; this launch's action was completed once, CONTINUE
    (``launches``, ``sent``: the actions and completions of earlier launches)."""
    proc = b.run()
    assert proc.returncode == 0, (why, proc.stderr)
    doc = b.doc()
    assert b.results()[launches:] == ["CONTINUE"], why
    assert len(completions(b)) - sent == 1, why  # never a second CompleteLifecycleAction
    assert doc["condition"] == "healthy" and doc["warnings"] == [], (why, doc["warnings"])
    assert doc["lifecycle"]["result"] == "CONTINUE", why
    # and a third run of the boot (after a clean second) knows it too
    assert b.run().returncode == 0 and len(completions(b)) - sent == 1, why
    assert b.doc()["warnings"] == [], why


@pytest.mark.integration
def test_a_kill_after_any_state_write_of_any_run(booter: Booter) -> None:
    """For every write N: the first run killed after its Nth write, the next one completes;
    then a later run of the same boot killed after its Nth write, and the next one."""
    writes = 0
    for at in range(1, 40):
        launches, sent = len(booter.results()) - 1, len(completions(booter))
        proc = killed_run(booter, at, "write")
        if proc.returncode == 0:  # the run wrote fewer times than that: every point is done
            writes = at - 1
            break
        assert proc.returncode == 137, proc.stderr
        assert_completed_once_and_healthy(booter, f"first run killed after write {at}",
                                          launches, sent)
        assert killed_run(booter, at, "write").returncode in (137, 0)  # 0: fewer writes
        assert_completed_once_and_healthy(booter, f"a later run killed after write {at}",
                                          launches, sent)
        booter.world.relaunch()  # a new pending launch action, a fresh state directory
        for path in booter.state_dir.iterdir():
            path.unlink()
    assert writes >= 10  # a boot writes its state about ten times, one of them the intent


@pytest.mark.integration
def test_a_kill_after_the_completion_was_answered(booter: Booter) -> None:
    proc = killed_run(booter, 0, "complete")
    assert proc.returncode == 137, proc.stderr
    assert booter.results() == ["CONTINUE"]  # admitted, and the run died before recording it
    assert_completed_once_and_healthy(booter, "killed after the answer")
    assert booter.world.cloud.calls("DescribeAutoScalingInstances")  # it asked, not assumed


@pytest.mark.integration
def test_a_kill_after_the_run_that_completed_rewrote_the_state(booter: Booter) -> None:
    """The case first seen: a completed boot, then a run killed just after its first write."""
    assert booter.run().returncode == 0 and len(completions(booter)) == 1
    proc = killed_run(booter, 1, "write")
    assert proc.returncode == 137, proc.stderr
    assert_completed_once_and_healthy(booter, "a later run killed after its first write")
