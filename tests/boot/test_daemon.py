"""``agent run``'s own rules: one run per state directory (the lock), and the modes' rules
checked before anything is locked or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from agentproc import clean_environment

from agent.boot import daemon
from agent.errors import EXIT_CONFIG, EXIT_LOCKED, BootError, ConfigError, LockedError


def test_the_lock_is_held_by_one_run_and_names_its_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fd = daemon.acquire_lock(str(state))
    try:
        assert (state / daemon.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError) as info:
            daemon.acquire_lock(str(state))  # another open file: flock refuses it
        assert str(info.value) == (f"another agent run (pid {os.getpid()}) holds "
                                   f"{state}/{daemon.LOCK_FILE}")
        assert info.value.exit_code == EXIT_LOCKED
    finally:
        os.close(fd)
    os.close(daemon.acquire_lock(str(state)))  # released with its descriptor


def test_a_stale_lock_file_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / daemon.LOCK_FILE).write_text("99999999 and more text\n")
    fd = daemon.acquire_lock(str(tmp_path))
    try:
        assert (tmp_path / daemon.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


def test_a_lock_file_that_is_a_link_or_a_state_dir_that_is_a_file_is_one_line(
        tmp_path: Path) -> None:
    (tmp_path / "target").write_text("")
    (tmp_path / daemon.LOCK_FILE).symlink_to(tmp_path / "target")
    with pytest.raises(BootError, match=f"^state_dir {tmp_path}: Too many levels of symbolic "
                                        "links$"):
        daemon.acquire_lock(str(tmp_path))
    assert (tmp_path / "target").read_text() == ""
    with pytest.raises(BootError, match=f"^state_dir {tmp_path / 'target'}: it is not a "
                                        "directory$"):
        daemon.acquire_lock(str(tmp_path / "target"))


def test_oneshot_with_readiness_is_a_configuration_error_before_any_lock(
        tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[readiness]\n'
                      'units = ["app.service"]\n')
    with pytest.raises(ConfigError) as info:
        daemon.run(str(config), oneshot=True)
    assert str(info.value).startswith("--oneshot: [readiness] needs daemon mode")
    assert info.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "state").exists()  # nothing locked, nothing written


@pytest.mark.integration
def test_a_second_run_on_a_held_state_dir_exits_locked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\nmode = "oneshot"\n')
    fd = daemon.acquire_lock(str(state))
    try:
        proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                              capture_output=True, text=True, timeout=60,
                              env=clean_environment(), check=False)
    finally:
        os.close(fd)
    assert proc.returncode == EXIT_LOCKED
    assert proc.stderr.strip().splitlines() == [
        f"agent: another agent run (pid {os.getpid()}) holds {state}/agent.lock"]
    assert not (state / "state.json").exists()  # the running one's record is untouched
