"""The image's packages: dpkg's and rpm's inventories, apt's simulated upgrade read for
security releases (against a real local repository: tests/test_bake_check.py's), and the
tools' failures in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bake_check import SECURITY, apt_root, repo  # noqa: F401 - the repository fixture

from agent.image import packages
from agent.image.packages import INST, Inventory, ToolError, Update

STATUS = b"""\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u9
Description: GNU C Library
 continuation: Status: not-installed

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
"""


def test_dpkg_installed_counts_installed_packages_only() -> None:
    assert packages.dpkg_installed(STATUS) == {"libc6:amd64": "2.36-9+deb12u9",
                                               "tzdata:all": "2024a-0+deb12u1"}
    assert packages.dpkg_installed(b"") == {}
    assert packages.dpkg_installed(b"\xff\xfe garbage\n\n") == {}


def test_an_inventory_digest_depends_on_content_not_order() -> None:
    one = Inventory("dpkg", {"a:all": "1", "b:all": "2"})
    other = Inventory("dpkg", {"b:all": "2", "a:all": "1"})
    assert one.digest == other.digest
    assert one.digest != Inventory("dpkg", {"a:all": "1", "b:all": "3"}).digest
    assert one.record() == {"database": "dpkg", "count": 2, "sha256": one.digest}


@pytest.mark.parametrize(("line", "name", "installed", "candidate", "releases"), [
    ("Inst libfoo [1.0-1] (1.0-3 Debian-Security:12/stable-security [all])",
     "libfoo", "1.0-1", "1.0-3", "Debian-Security:12/stable-security"),
    ("Inst libssl3 [3.0.11-1~deb12u1] (3.0.15-1~deb12u1 Debian:12.8/stable, "
     "Debian-Security:12/stable-security [amd64]) []",
     "libssl3", "3.0.11-1~deb12u1", "3.0.15-1~deb12u1",
     "Debian:12.8/stable, Debian-Security:12/stable-security"),
])
def test_apts_simulated_install_lines(line: str, name: str, installed: str, candidate: str,
                                      releases: str) -> None:
    match = INST.match(line)
    assert match is not None
    assert (match["name"], match["installed"], match["candidate"], match["releases"]) == (
        name, installed, candidate, releases)
    assert INST.match("Conf libfoo (1.0-3 Debian-Security:12/stable-security [all])") is None
    assert INST.match("Inst newpkg (1.0 Debian:12/stable [all])") is None  # a new install


def test_security_releases() -> None:
    assert packages.is_security_release(SECURITY)
    assert packages.is_security_release("Ubuntu:22.04/jammy-security")
    assert packages.is_security_release("Debian:12.8/stable, Debian-Security:12/stable-security")
    assert not packages.is_security_release("Debian:12.8/stable")
    assert not packages.is_security_release("Ubuntu:22.04/jammy-updates")
    assert not packages.is_security_release("localhost")
    assert packages.is_security_release("12/stable-security")  # a release without a label


def test_a_security_label_alone_makes_a_security_release() -> None:
    assert packages.is_security_release("Debian-Security:12/bookworm")
    assert not packages.is_security_release("Debian:12/bookworm")


def test_apt_argv_points_every_directory_at_the_image(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/arch").write_text("amd64\ni386\n")
    argv = packages.apt_argv(tmp_path, Inventory("dpkg", {"dpkg:arm64": "1.21", "x:all": "1"}))
    assert argv[:2] == ["apt-get", "-s"] and argv[-1] == "dist-upgrade"
    assert f"Dir={tmp_path}" in argv and "Debug::NoLocking=true" in argv
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "APT::Architecture=arm64" in options
    assert [o for o in options if o.startswith("APT::Architectures::=")] == [
        "APT::Architectures::=arm64", "APT::Architectures::=amd64", "APT::Architectures::=i386"]


@pytest.mark.parametrize(("nevra", "package", "version"), [
    ("openssl-libs-1:3.0.8-1.amzn2023.0.9.x86_64", "openssl-libs.x86_64",
     "1:3.0.8-1.amzn2023.0.9"),
    ("curl-8.5.0-1.amzn2023.0.4.aarch64", "curl.aarch64", "8.5.0-1.amzn2023.0.4"),
    ("python3-pip-wheel-21.3.1-2.amzn2023.0.5.noarch", "python3-pip-wheel.noarch",
     "21.3.1-2.amzn2023.0.5"),
    ("kernel-0:6.1.0-1.x86_64", "kernel.x86_64", "6.1.0-1"),
])
def test_split_nevra(nevra: str, package: str, version: str) -> None:
    assert packages.split_nevra(nevra) == (package, version)


def test_an_update_line_is_escaped() -> None:
    update = Update("evil\x1b[31m", "1", "2\n3", "Debian-Security:12/stable-security")
    assert "\x1b" not in str(update) and "\n" not in str(update)


def test_a_root_without_lists_says_to_fetch_them(tmp_path: Path) -> None:
    (tmp_path / "var/lib/apt/lists").mkdir(parents=True)
    with pytest.raises(ToolError, match=r"no package lists in .*: run apt-get update in the "
                       r"bake"):
        packages.apt_security_updates(tmp_path, Inventory("dpkg", {}))


@pytest.mark.integration
def test_inspect_finds_the_security_candidates_only(tmp_path: Path,
                                                    repo: Path) -> None:  # noqa: F811
    root = apt_root(tmp_path, repo, {"libfoo": "1.0-1", "bar": "2.0-1"})
    report = packages.inspect(root)
    assert report.inventory is not None and report.inventory.database == "dpkg"
    assert report.inventory.versions == {"dpkg:amd64": "1.21.22", "libfoo:all": "1.0-1",
                                         "bar:all": "2.0-1"}
    assert report.security == [Update("libfoo", "1.0-1", "1.0-3",
                                      "Debian-Security:12/stable-security")]  # bar: ordinary
    assert report.pending is True
    assert report.problems == ["1 security update(s) pending: libfoo 1.0-1 -> 1.0-3 "
                               "(Debian-Security:12/stable-security): take them in the bake "
                               "(apt-get dist-upgrade, dnf upgrade) before bake-check"]


@pytest.mark.integration
def test_a_tool_that_fails_is_one_line_with_its_error(tmp_path: Path) -> None:
    fake = tmp_path / "tool"
    fake.write_text("#!/bin/sh\necho 'W: a warning' >&2\necho 'E: \x1b[31mbroken' >&2\n"
                    "echo 'last' >&2\nexit 100\n")
    fake.chmod(0o755)
    with pytest.raises(ToolError) as info:
        packages._run([str(fake)], "pending updates")
    assert str(info.value) == f"pending updates: {fake} exited 100: E: \\x1b[31mbroken"
    with pytest.raises(ToolError, match="not found"):
        packages._run([str(tmp_path / "absent")], "installed packages")
