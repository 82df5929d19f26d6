"""Generations: all-or-none publishing, on any directory (no root needed but for mounts)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agentproc import FILES

from agent.errors import SecretsError
from agent.secrets import generations
from agent.secrets.generations import Item

SEVEN = ["api-key", "db.json", "db.env", "app/token", "app/cert.pem", "tls.key", "z.txt"]


def items(contents: dict[str, bytes], mode: int = 0o400) -> list[Item]:
    return [Item(path, data, mode) for path, data in contents.items()]


def visible(root: Path, names: list[str]) -> dict[str, bytes]:
    """What a reader can open now, by visible name."""
    found = {}
    for name in names:
        try:
            found[name] = (root / name).read_bytes()
        except OSError:
            continue
    return found


def test_publish_switches_whole_generations(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    first = generations.publish(root, items({"db.json": b"one", "app/api.env": b"A=1\n"}), 0o700)
    assert first.added == ["db.json", "app/api.env"] and first.changed == []
    assert (root / "db.json").read_bytes() == b"one"
    assert (root / "app" / "api.env").read_bytes() == b"A=1\n"
    assert os.readlink(root / ".current") == first.generation
    assert os.readlink(root / "db.json") == ".current/db.json"

    pub = generations.publish(root, items({"db.json": b"two", "app/api.env": b"A=1\n"}), 0o700)
    assert pub.changed == ["db.json"] and pub.added == []
    assert pub.generation > first.generation
    third = generations.publish(root, items({"db.json": b"3"}), 0o700).generation
    # the current and one previous generation are kept; older ones pruned
    assert [p.name for p in generations.existing(root)] == [pub.generation, third]
    assert not (root / "app").exists()  # its entry is gone: so is its visible name


def test_files_and_directories_get_their_modes(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    old = os.umask(0o077)  # as under the unit's UMask=0077
    try:
        generations.publish(root, items({"a/db.json": b"x"}, mode=0o440), 0o711)
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "a/db.json").stat().st_mode) == 0o440
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert stat.S_IMODE((root / os.readlink(root / ".current") / "a").stat().st_mode) == 0o711


class Snapshots:
    """What a reader could open at every rename and symlink of a publish (before and after)."""

    def __init__(self, root: Path, names: list[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.names = root, names
        self.seen: list[dict[str, bytes]] = []
        for name in ("rename", "symlink"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any, **kwargs: Any) -> None:
            self.seen.append(visible(self.root, self.names))
            real(*args, **kwargs)
            self.seen.append(visible(self.root, self.names))
        return call


def test_the_visible_set_changes_in_one_step(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secrets"
    names = [*SEVEN, "new-file"]
    one = {name: f"{name}-1".encode() for name in SEVEN}
    two = {**{name: f"{name}-2".encode() for name in SEVEN}, "new-file": b"added"}
    snaps = Snapshots(root, names, monkeypatch)
    generations.publish(root, items(one), 0o700)  # the first publish
    assert {len(s) for s in snaps.seen} == {0, 7}
    assert all(s in ({}, one) for s in snaps.seen)
    assert snaps.seen[-1] == one
    snaps.seen.clear()
    generations.publish(root, items(two), 0o700)  # one more file, every content changed
    assert all(s in (one, two) for s in snaps.seen), [sorted(s) for s in snaps.seen]
    assert snaps.seen[-1] == two
    snaps.seen.clear()
    generations.publish(root, items(one), 0o700)  # and a file removed
    assert all(s in (two, one) for s in snaps.seen)
    assert visible(root, names) == one


def listed(root: Path) -> list[str]:
    """The visible names a reader listing the directory sees now (not the hidden ones)."""
    try:
        return sorted(name for name in os.listdir(root) if not name.startswith("."))
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("made", ["absent", "empty"])
def test_the_first_publish_lists_no_name_then_all(tmp_path: Path, made: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secrets"
    if made == "empty":
        root.mkdir(mode=0o700)
    seen: list[list[str]] = []
    for name in ("rename", "symlink", "mkdir"):
        real = getattr(os, name)

        def call(*args: Any, _real: Callable[..., None] = real, **kwargs: Any) -> None:
            seen.append(listed(root))
            _real(*args, **kwargs)
            seen.append(listed(root))

        monkeypatch.setattr(os, name, call)
    tops = sorted({name.split("/")[0] for name in SEVEN})
    pub = generations.publish(root, items({name: b"1" for name in SEVEN}), 0o711)
    assert pub.added == SEVEN and pub.generation == ".gen-000001"
    assert {tuple(names) for names in seen} == {(), tuple(tops)}, seen  # never a part
    monkeypatch.undo()
    assert visible(root, SEVEN) == {name: b"1" for name in SEVEN}
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets"]  # nothing left beside
    second = generations.publish(root, items({name: b"2" for name in SEVEN}), 0o711)
    assert second.changed == SEVEN and visible(root, SEVEN) == {name: b"2" for name in SEVEN}


def test_a_kill_while_building_the_first_publish_beside(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secrets"
    real = os.rename
    with monkeypatch.context() as patch:
        def dying(src: Any, dst: Any) -> None:
            if Path(dst) == root:
                raise Crash
            real(src, dst)
        patch.setattr(os, "rename", dying)
        patch.setattr(generations.shutil, "rmtree", lambda *a, **k: None)  # killed: no undo
        with pytest.raises(Crash):
            generations.publish(root, items({"a": b"1"}), 0o700)
    assert listed(root) == [] and len(list(tmp_path.iterdir())) == 2  # root, and the stray
    generations.publish(root, items({"a": b"1"}), 0o700)  # the next run clears it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets"]
    assert visible(root, ["a"]) == {"a": b"1"}


READER = """
import json, os, sys, time
root, stop = sys.argv[1], sys.argv[2]
last = None
while not os.path.exists(stop):
    try:
        names = sorted(n for n in os.listdir(root) if not n.startswith("."))
    except FileNotFoundError:
        names = []
    dangling = [n for n in names if not os.path.exists(os.path.join(root, n))]
    if (names, dangling) != last:
        last = (names, dangling)
        print(json.dumps(last), flush=True)
"""


@pytest.mark.integration
def test_a_reader_polling_a_first_publish_sees_none_then_all(booter: Any) -> None:
    """A reader process lists the secrets directory (a real tmpfs) while the agent's first
    publish runs, each GetSecretValue slowed to 0.4 s: no name, then every name."""
    many = [{"secret_id": "prod/plain", "path": f"plain-{i:02d}.txt"} for i in range(60)]
    booter.configure(files=[*FILES, *many])  # 65 names: a window a poller cannot miss
    booter.world.cloud.action_latency["GetSecretValue"] = 0.4
    stop = booter.root / "stop-reading"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(booter.secrets_dir), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        proc = booter.run()
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads(line) for line in out.splitlines()]
    every = sorted(n for n in os.listdir(booter.secrets_dir) if not n.startswith("."))
    assert len(every) == 65 and every[:3] == ["app", "db.env", "db.json"]
    assert seen[0] == [[], []] and seen[-1] == [every, []], seen
    assert all(snap in ([[], []], [every, []]) for snap in seen), seen


class Crash(BaseException):
    """A kill: the process ends here, nothing cleans up."""


def test_a_kill_between_links_leaves_the_old_set_then_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = {name: b"1" for name in SEVEN}
    links = len({name.split("/")[0] for name in SEVEN})
    real = os.symlink
    for kill_at in range(1, links + 2):  # at each link, and at the switch itself
        root = tmp_path / f"secrets-{kill_at}"
        calls = {"n": 0}

        def dying(*args: Any, _calls: dict[str, int] = calls, _at: int = kill_at,
                  **kwargs: Any) -> None:
            _calls["n"] += 1
            if _calls["n"] == _at:
                raise Crash
            real(*args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(os, "symlink", dying)
            patch.setattr(generations, "_undo", lambda staging, made: None)  # killed: no undo
            with pytest.raises(Crash):
                generations.publish(root, items(one), 0o700)
        assert visible(root, SEVEN) == {}, kill_at  # a first publish: nothing, not a part
        generations.publish(root, items(one), 0o700)  # the next run
        assert visible(root, SEVEN) == one
        assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


FAULTS = ["open", "fchmod", "write", "fsync", "mkdir", "chmod", "rename", "symlink"]


@pytest.mark.parametrize("call", FAULTS)
def test_out_of_space_at_any_step_keeps_the_earlier_generation(
        tmp_path: Path, call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secrets"
    one = {name: b"1" for name in SEVEN}
    two = {**{name: b"2" for name in SEVEN}, "extra/new": b"2"}
    generations.publish(root, items(one), 0o700)
    first = os.readlink(root / ".current")
    failures = 0
    for n in range(1, 200):
        with monkeypatch.context() as patch:
            calls = {"n": 0}
            real = getattr(os, call)

            def failing(*args: Any, _real: Any = real, _calls: Any = calls,
                        _n: int = n, **kwargs: Any) -> Any:
                _calls["n"] += 1
                if _calls["n"] == _n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return _real(*args, **kwargs)

            patch.setattr(os, call, failing)
            try:
                generations.publish(root, items(two), 0o700)
            except SecretsError as exc:
                failures += 1
                assert "\n" not in str(exc)
                assert "No space left on device" in str(exc)
                assert os.readlink(root / ".current") == first
                assert visible(root, [*SEVEN, "extra/new"]) == one
                continue
            if calls["n"] < n:  # the fault was never reached: the publish is whole
                break
    assert visible(root, [*SEVEN, "extra/new"]) == two
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert failures >= 1  # each step of this kind failed once, in turn


def test_recover_removes_half_written_generation(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    gen = generations.publish(root, items({"a": b"1"}), 0o700).generation
    partial = root / ".gen-000099.tmp"
    partial.mkdir()
    (partial / "a").write_bytes(b"partial")
    (root / ".current.123.tmp").symlink_to(".gen-000099.tmp")
    assert sorted(generations.recover(root)) == [".current.123.tmp", ".gen-000099.tmp"]
    assert os.readlink(root / ".current") == gen
    assert (root / "a").read_bytes() == b"1"


def test_refuses_foreign_file_at_a_visible_name(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir(mode=0o700)
    (root / "db.json").write_bytes(b"someone else's")
    with pytest.raises(SecretsError, match="not managed by the agent"):
        generations.publish(root, items({"db.json": b"x"}), 0o700)
    assert (root / "db.json").read_bytes() == b"someone else's"


@pytest.mark.parametrize("make", ["symlink", "file", "parent"])
def test_refuses_a_directory_others_could_tamper_with(tmp_path: Path, make: str) -> None:
    root = tmp_path / "secrets"
    if make == "symlink":
        (tmp_path / "elsewhere").mkdir()
        root.symlink_to(tmp_path / "elsewhere")
    elif make == "file":
        root.write_bytes(b"")
    else:
        parent = tmp_path / "open"
        parent.mkdir()
        parent.chmod(0o777)
        root = parent / "secrets"
    with pytest.raises(SecretsError) as info:
        generations.publish(root, items({"db.json": b"x"}), 0o700)
    assert "\n" not in str(info.value)
    assert {"symlink": "is a symlink", "file": "not a directory",
            "parent": "its parent"}[make] in str(info.value)
    assert not (tmp_path / "elsewhere" / ".current").exists()


def test_a_world_writable_directory_of_ours_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    root.mkdir()
    root.chmod(0o1777)  # as a tmpfs mounted without a mode
    generations.publish(root, items({"db.json": b"x"}), 0o700)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert (root / "db.json").read_bytes() == b"x"


def test_refuses_a_directory_another_user_owns_or_planted_in(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    root = tmp_path / "secrets"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(SecretsError, match="owned by uid 65534"):
        generations.publish(root, items({"db.json": b"x"}), 0o700)
    assert list(root.iterdir()) == []
    os.chown(root, 0, 0)
    root.chmod(0o777)
    (root / ".current").symlink_to("/etc")  # planted while it was open to everyone
    os.lchown(root / ".current", 65534, 65534)
    with pytest.raises(SecretsError, match=r"\.current in it belongs to uid 65534"):
        generations.publish(root, items({"db.json": b"x"}), 0o700)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # closed to others before looking


def test_a_sticky_parent_is_fine(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o1777)  # as /tmp and /dev/shm
    generations.publish(parent / "secrets", items({"a": b"1"}), 0o700)
    assert (parent / "secrets" / "a").read_bytes() == b"1"


def test_out_of_inodes_on_a_real_tmpfs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    one = {name: b"1" for name in SEVEN}
    two = {**{name: b"2" for name in SEVEN}, "extra/new": b"2"}
    outcomes = []
    for inodes in range(4, 40):
        mount.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,nr_inodes={inodes},mode=0700",
                        "tmpfs", str(mount)], check=True)
        try:
            try:
                generations.publish(mount / "s", items(one), 0o700)
            except SecretsError as exc:
                assert "out of space or inodes" in str(exc)
                assert visible(mount / "s", SEVEN) == {}
                outcomes.append("first failed")
                continue
            try:
                generations.publish(mount / "s", items(two), 0o700)
            except SecretsError as exc:
                assert "out of space or inodes" in str(exc)
                assert visible(mount / "s", SEVEN) == one
                outcomes.append("second failed")
                continue
            assert visible(mount / "s", [*SEVEN, "extra/new"]) == two
            outcomes.append("both")
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=True)
    assert {"first failed", "second failed", "both"} <= set(outcomes)


def test_out_of_space_on_a_real_tmpfs(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(tiny)],
                   check=True)
    try:
        generations.publish(tiny / "s", items({"small": b"x"}), 0o700)
        with pytest.raises(SecretsError, match=r"cannot publish to .*: No space left on device"):
            generations.publish(tiny / "s", items({"small": b"y", "big": b"x" * 100_000}),
                                0o700)
        assert visible(tiny / "s", ["small", "big"]) == {"small": b"x"}
        assert not [p for p in (tiny / "s").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)


def test_wipe(tmp_path: Path) -> None:
    root = tmp_path / "secrets"
    assert generations.wipe(root) is False
    generations.publish(root, items({"a/b": b"1"}), 0o700)
    assert generations.wipe(root) is True
    assert list(root.iterdir()) == []
