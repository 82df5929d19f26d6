"""The lifecycle's sections: ``[lifecycle]``, ``[termination]`` and ``[signal]``."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import error_of, load

from agent.lifecycle.config import LifecycleConfig, SignalConfig, TerminationConfig


def test_the_defaults_are_what_an_empty_file_gives(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert (cfg.lifecycle, cfg.termination, cfg.signal) == (
        LifecycleConfig(), TerminationConfig(), SignalConfig())
    assert cfg.lifecycle.on_failure == "abandon" and cfg.termination.wipe_secrets


def test_a_signal_to_cloudformation_needs_its_stack_and_resource() -> None:
    with pytest.raises(ValueError, match="set both cloudformation_stack and"):
        SignalConfig(cloudformation_stack="web")
    assert SignalConfig(cloudformation_stack="web", cloudformation_resource="Group")


@pytest.mark.parametrize(("text", "line"), [
    ("[lifecycle]\non_failure = 'retry'\n", "lifecycle.on_failure"),
    ("[lifecycle]\nheartbeat_seconds = 0.5\n", "lifecycle.heartbeat_seconds"),
    ("[termination]\ncommands = [['drain.sh']]\n",
     "termination.commands[0]: ['drain.sh'] is an argv list starting with"),
    ("[termination]\nstop_units = ['app']\n", "termination.stop_units[0]: 'app' is not a unit"),
    ("[termination]\nrebalance_command = ['notify']\n", "termination.rebalance_command"),
    ("[termination]\npoll_seconds = 0.1\n", "termination.poll_seconds"),
    ("[termination]\nscheduled_events = 'sometimes'\n", "termination.scheduled_events"),
    ("[signal]\ncloudformation_stack = 'web'\n",
     "signal: set both cloudformation_stack and cloudformation_resource"),
    ("[signal]\nmarker_file = 'ready'\n", "signal.marker_file: 'ready' must be an absolute path"),
])
def test_each_rule_is_one_line_naming_the_key(tmp_path: Path, text: str, line: str) -> None:
    assert error_of(tmp_path, text).startswith(line)
