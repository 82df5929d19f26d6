"""Clone hygiene in an image root, called directly: what is found, what fix does, and the
links it never follows (bake-check's lines as the operator sees them: tests/test_bake_check.py)."""

from __future__ import annotations

from pathlib import Path

from agent.image import hygiene


def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    for directory in ("root", "etc/ssh", "home/admin", "var/log/journal/ab"):
        (root / directory).mkdir(parents=True)
    return root


def test_an_unset_machine_id_is_no_problem(tmp_path: Path) -> None:
    root = image(tmp_path)
    for text in ("", "uninitialized\n", "  \n"):
        (root / "etc/machine-id").write_text(text)
        assert hygiene.find(root).machine_ids == []
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    assert hygiene.find(root).machine_ids == [root / "etc/machine-id"]


def test_host_keys_are_named_by_pattern_only(tmp_path: Path) -> None:
    root = image(tmp_path)
    names = ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key-cert.pub",
             "ssh_host_rsa_key.bak", "ssh_host_key", "moduli"]
    for name in names:
        (root / "etc/ssh" / name).write_text("k")
    assert [p.name for p in hygiene.find(root).host_keys] == names[:3]


def test_homes_are_root_and_home_dirs_never_through_a_link(tmp_path: Path) -> None:
    root = image(tmp_path)
    elsewhere = tmp_path / "host-home"
    elsewhere.mkdir()
    (elsewhere / ".bash_history").write_text("the host's")
    (root / "home/linked").symlink_to(elsewhere)
    (root / "home/file").write_text("")
    assert hygiene.homes(root) == [root / "root", root / "home/admin"]
    assert hygiene.find(root).histories == []
    assert hygiene.fix(root) == []
    assert (elsewhere / ".bash_history").read_text() == "the host's"


def test_a_long_list_is_shown_short_and_counted(tmp_path: Path) -> None:
    root = image(tmp_path)
    for i in range(5):
        (root / f"var/log/app{i}.log").write_text("line\n")
    (root / "var/log/empty.log").write_text("")
    (root / "var/log/journal/ab/system.journal").write_bytes(b"J")
    assert hygiene.problems(root) == [
        "the build's journal: 1 file(s) under /var/log/journal (remove them, or --fix)",
        "the build's logs: 5 non-empty file(s) under /var/log (/var/log/app0.log, "
        "/var/log/app1.log, /var/log/app2.log and 2 more) (empty them, or --fix)"]


def test_a_name_with_control_characters_is_printed_escaped(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "var/log/evil\x1b[2J\nforged.log").write_text("x")
    (line,) = hygiene.problems(root)
    assert "\x1b" not in line and "\n" not in line
    assert "evil" in line


def test_fix_removes_rotated_logs_and_empties_the_others(tmp_path: Path) -> None:
    root = image(tmp_path)
    rotated = ["syslog.1", "syslog.2.gz", "dpkg.log.old", "auth.log-20261201",
               "kern.log-20261201.zst"]
    for name in [*rotated, "syslog", "dpkg.log"]:
        (root / "var/log" / name).write_text("line\n")
    (root / "var/log/syslog").chmod(0o640)
    assert hygiene.fix(root) == ["removed 5 rotated log file(s) from /var/log",
                                 "emptied 2 log file(s) under /var/log"]
    assert sorted(p.name for p in (root / "var/log").iterdir() if p.is_file()) == [
        "dpkg.log", "syslog"]
    assert (root / "var/log/syslog").read_text() == ""
    assert (root / "var/log/syslog").stat().st_mode & 0o777 == 0o640  # kept for its owner
    assert hygiene.problems(root) == []


def test_fix_empties_etc_machine_id_and_removes_dbus_copy(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "root/.ssh").mkdir()
    (root / "root/.ssh/authorized_keys2").write_text("ssh-ed25519 AAAA builder\n")
    done = hygiene.fix(root)
    assert done == ["emptied /etc/machine-id (systemd makes one at each instance's first boot)",
                    "removed /var/lib/dbus/machine-id (D-Bus reads /etc/machine-id)",
                    "removed 1 authorized_keys file(s)"]
    assert (root / "etc/machine-id").read_bytes() == b""
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert not (root / "root/.ssh/authorized_keys2").exists()
