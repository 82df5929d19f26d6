"""Shared fixtures: real tmpfs mounts, a clean AGENT_* environment."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IS_ROOT = os.geteuid() == 0
if not os.access(Path(__file__).parent.parent, os.W_OK):  # e.g. the unit tests as nobody
    from hypothesis import settings

    settings.register_profile("read-only-tree", database=None)
    settings.load_profile("read-only-tree")


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AGENT_* or AWS_* variable of the developer's shell leaks into a test; the
    validated-configuration cache of every agent it runs is the test's own."""
    for name in list(os.environ):
        if name.startswith(("AGENT_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_CONFIG_CACHE", str(tmp_path / "config-cache.json"))


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs ``agent run`` in-process sets up the agent's logging (its handler and
    filter on the root logger, the threads' excepthook): undone after it, so that no later
    test runs with them."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, threading.excepthook
    yield
    root.handlers[:] = [h for h in root.handlers if h in handlers or
                        type(h).__module__.startswith("_pytest")]
    root.setLevel(level)
    threading.excepthook = hook


SUITES = ("integration", "e2e", "fleet", "programs")  # the markers of tests that may start things
MAY_RUN = ("mount", "umount")  # what a unit test may start: its own tmpfs


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without a suite's marker is a unit test: it fails if it listens on a socket or
    starts a process (other than mounting its tmpfs): mark it ``integration``."""
    if any(request.node.get_closest_marker(name) for name in SUITES):
        return
    import socket
    import subprocess

    def listen(self: socket.socket, *args: Any) -> None:
        raise AssertionError("a unit test listens on a socket: mark it integration")

    popen = subprocess.Popen.__init__

    def start(self: subprocess.Popen[Any], args: Any, *more: Any, **kwargs: Any) -> None:
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if os.path.basename(str(argv[0])) not in MAY_RUN:
            raise AssertionError(f"a unit test starts {argv[0]!r}: mark it integration")
        popen(self, args, *more, **kwargs)

    monkeypatch.setattr(socket.socket, "listen", listen)
    monkeypatch.setattr(subprocess.Popen, "__init__", start)


def mount_tmpfs(path: Path, size: str = "4m", fstype: str = "tmpfs") -> None:
    """Mount a real tmpfs (or ramfs) at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" if fstype == "tmpfs" else "mode=0755"
    subprocess.run(["mount", "-t", fstype, "-o", options, fstype, str(path)], check=True)


def umount(path: Path) -> None:
    """Lazy unmount (a test may still hold a descriptor)."""
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs: freshly mounted as root, else a private directory in /dev/shm."""
    if not IS_ROOT:
        from agentproc import shm_dir

        with shm_dir("agent-test-") as private:
            yield private
        return
    mount = tmp_path / "tmpfs"
    mount_tmpfs(mount)
    try:
        yield mount
    finally:
        umount(mount)


@pytest.fixture
def mounted_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted for the test alone (its own options, size and inodes); needs root."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount_tmpfs(mount)
    try:
        yield mount
    finally:
        umount(mount)


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted ramfs; needs root."""
    if not IS_ROOT:
        pytest.skip("mounting a ramfs needs root")
    mount = tmp_path / "ramfs"
    mount_tmpfs(mount, fstype="ramfs")
    try:
        yield mount
    finally:
        umount(mount)


@pytest.fixture
def disk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on a disk filesystem (not tmpfs), even where /tmp is a tmpfs."""
    from agent.fsutil import is_memory_fs

    for base in (tmp_path_factory.mktemp("disk"), Path(__file__).parent.parent / ".cache"):
        base.mkdir(parents=True, exist_ok=True)
        if not is_memory_fs(base):
            target = base / f"disk-{os.getpid()}-{len(list(base.iterdir()))}"
            target.mkdir()
            return target
    pytest.skip("no disk filesystem available for this test")


@pytest.fixture
def booter(tmpfs: Path) -> Iterator[Any]:
    """A seeded simulated cloud (3 secrets, a group with a launch hook) and a tmpfs."""
    import json

    from agentproc import BINARY, DB, PLAIN, Booter

    from agent.sim import World

    with World() as world:
        world.seed(secrets={"prod/db": json.dumps(DB), "prod/plain": PLAIN, "prod/bin": BINARY})
        b = Booter(world, tmpfs)
        b.configure()
        yield b
        b.assert_no_secret_leaked()
