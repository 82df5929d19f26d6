"""Plans of the files the agent writes, and the one writer that stages and switches them."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import IS_ROOT

from agent.files import Change, Existing, FilePlan, Writer, remove


def test_the_change_of_each_plan(tmp_path: Path) -> None:
    target = tmp_path / "f.conf"
    assert FilePlan.of(str(target), b"a").change is Change.NEW
    target.write_bytes(b"a")
    target.chmod(0o644)
    assert FilePlan.of(str(target), b"a").change is Change.UNCHANGED
    assert FilePlan.of(str(target), b"b").change is Change.CHANGED
    assert FilePlan.of(str(target), b"a", 0o600).change is Change.MODE
    assert FilePlan.of(str(target), None).change is Change.REMOVE
    assert FilePlan.of(str(tmp_path / "absent"), None).change is Change.UNCHANGED
    assert FilePlan.of("", b"a").change is Change.NOT_WRITTEN
    assert [p.writes for p in (FilePlan.of(str(target), b"a"), FilePlan.of(str(target), b"b"),
                               FilePlan.of(str(target), b"a", 0o600))] == [False, True, True]


def test_a_symlink_or_a_directory_is_no_existing_content(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.write_bytes(b"not ours")
    link = tmp_path / "link"
    link.symlink_to(secret)
    assert Existing.read(str(link)) == Existing(None, None)
    assert Existing.read(str(tmp_path)) == Existing(None, None)
    assert FilePlan.of(str(link), b"not ours").change is Change.NEW


def test_a_plan_repr_shows_the_change_never_the_content(tmp_path: Path) -> None:
    plan = FilePlan.of(str(tmp_path / "f"), b"hunter2")
    assert "hunter2" not in repr(plan)
    assert repr(plan) == f"FilePlan({str(tmp_path / 'f')!r}, new)"


def test_the_writer_stages_beside_then_switches_replacing_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    link = tmp_path / "d" / "link.conf"
    link.parent.mkdir()
    link.symlink_to(outside)
    plans = [FilePlan.of(str(tmp_path / "new" / "deep" / "a.conf"), b"A", 0o640),
             FilePlan.of(str(link), b"B")]
    writer = Writer(dir_mode=0o711)
    writer.stage(plans)
    assert not Path(plans[0].path).exists()  # nothing in place before the switch
    staged = sorted(p.name for p in (tmp_path / "new" / "deep").iterdir())
    assert len(staged) == 1 and staged[0].startswith(".a.conf.") and staged[0].endswith(".tmp")
    writer.switch()
    assert Path(plans[0].path).read_bytes() == b"A"
    assert stat.S_IMODE(os.stat(plans[0].path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o711
    assert not link.is_symlink() and link.read_bytes() == b"B"
    assert outside.read_bytes() == b"keep"  # written over the link, never through it
    assert writer.staged == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 64 kB that a large file fills; needs root."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_failed_stage_leaves_nothing_behind(tiny_tmpfs: Path) -> None:
    """A full filesystem while staging: the staged files and the directories made for them
    are removed by undo, and what was there is untouched."""
    kept = tiny_tmpfs / "kept.conf"
    kept.write_bytes(b"old")
    plans = [FilePlan.of(str(kept), b"new"),
             FilePlan.of(str(tiny_tmpfs / "made" / "big.bin"), b"x" * (1 << 20))]
    writer = Writer()
    with pytest.raises(OSError) as info:
        writer.stage(plans)
    assert info.value.errno == 28  # ENOSPC
    writer.undo()
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["kept.conf"]
    assert kept.read_bytes() == b"old"


def test_remove_deletes_what_is_planned_and_says_what_it_could_not(tmp_path: Path) -> None:
    gone, stays, turned = (tmp_path / n for n in ("gone", "stays", "turned"))
    for path in (gone, stays, turned):
        path.write_bytes(b"x")
    plans = [FilePlan.of(str(gone), None), FilePlan.of(str(stays), b"x"),
             FilePlan.of(str(turned), None), FilePlan.of(str(tmp_path / "never"), None)]
    turned.unlink()
    turned.mkdir()  # a directory now: unlink refuses it
    removed, problems = remove(plans)
    assert [p.path for p in removed] == [str(gone)]
    assert problems == [f"cannot remove {turned}: Is a directory"]
    assert not gone.exists() and stays.exists() and turned.is_dir()
