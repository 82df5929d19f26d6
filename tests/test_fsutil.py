"""File-system helpers: atomic replace, exact modes, claiming a directory, filesystem types."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from agentproc import IS_ROOT

from agent.fsutil import (
    RAMFS_MAGIC,
    TMPFS_MAGIC,
    atomic_write,
    claim_dir,
    fs_name,
    fs_type,
    is_memory_fs,
    is_mount_point,
    make_dirs,
    mount_tmpfs,
    write_new,
)

root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown, mount)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_new_sets_the_mode_whatever_the_umask_and_refuses_an_existing_path(
        tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_new(tmp_path / "f", b"data", 0o644)
    finally:
        os.umask(old)
    assert mode(tmp_path / "f") == 0o644
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "f", b"other", 0o600)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):  # never through a link, even a dangling one
        write_new(tmp_path / "link", b"x", 0o600)
    assert not (tmp_path / "target").exists()


def test_make_dirs_creates_the_missing_ones_with_the_exact_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        made = make_dirs(tmp_path / "a" / "b" / "c", 0o711)
    finally:
        os.umask(old)
    assert made == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert {mode(p) for p in made} == {0o711}
    assert make_dirs(tmp_path / "a" / "b", 0o700) == []


def test_atomic_write_replaces_in_one_step_and_cleans_up_a_failure(tmp_path: Path) -> None:
    target = tmp_path / "d" / "state.json"
    atomic_write(target, b"one", mode=0o600, dir_mode=0o750)
    inode = os.stat(target).st_ino
    atomic_write(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two" and mode(target) == 0o644
    assert os.stat(target).st_ino != inode  # a new file renamed over, never rewritten
    assert mode(tmp_path / "d") == 0o750
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert target.read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["state.json"]


def test_claim_dir_creates_and_takes_over(tmp_path: Path) -> None:
    assert claim_dir(tmp_path / "new" / "dir", 0o700) == ""
    assert mode(tmp_path / "new" / "dir") == 0o700
    existing = tmp_path / "open"
    existing.mkdir()
    existing.chmod(0o777)
    assert claim_dir(existing, 0o755, exact=False) == ""
    assert mode(existing) == 0o755  # only group and other write bits removed
    existing.chmod(0o770)
    assert claim_dir(existing, 0o700) == ""
    assert mode(existing) == 0o700


def test_claim_dir_refuses_a_link_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_bytes(b"")
    assert claim_dir(tmp_path / "link", 0o700) == "it is a symlink"
    assert claim_dir(tmp_path / "file", 0o700) == "it is not a directory"


@root_only
def test_claim_dir_refuses_what_another_user_could_replace(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(0o777)  # writable by all, not sticky
    problem = claim_dir(parent / "state", 0o700)
    assert problem.startswith(f"refused: its parent {parent} is mode 0777")
    assert not (parent / "state").exists()
    parent.chmod(0o1777)  # sticky, as /tmp: nobody renames what is not theirs
    assert claim_dir(parent / "state", 0o700) == ""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    assert "owned by uid 65534" in claim_dir(theirs, 0o700)
    ours = tmp_path / "ours"
    (ours / "sub").mkdir(parents=True)
    (ours / "sub" / "planted").symlink_to("/etc/shadow")
    os.lchown(ours / "sub" / "planted", 65534, 65534)
    assert claim_dir(ours, 0o700, deep=False) == ""  # only the top looked at
    assert "planted in it belongs to uid 65534" in claim_dir(ours, 0o700)


def test_filesystem_types(tmpfs: Path, disk_dir: Path) -> None:
    assert fs_type(tmpfs) == TMPFS_MAGIC and is_memory_fs(tmpfs)
    assert not is_memory_fs(disk_dir)
    assert fs_name(TMPFS_MAGIC) == "tmpfs" and fs_name(RAMFS_MAGIC) == "ramfs"
    assert fs_name(0x1234) == "0x1234"
    with pytest.raises(FileNotFoundError):
        fs_type(tmpfs / "absent")


@root_only
def test_mount_tmpfs_is_private_and_noexec(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    mount_tmpfs(target, "1m", 0o700)
    try:
        assert is_mount_point(target) and is_memory_fs(target)
        assert mode(target) == 0o700
        options = {line.split()[1]: line.split()[3]
                   for line in Path("/proc/self/mounts").read_text().splitlines()}
        assert {"nosuid", "nodev", "noexec", "size=1024k"} <= set(options[str(target)].split(","))
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
    assert not is_mount_point(target)
