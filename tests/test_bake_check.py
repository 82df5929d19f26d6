"""bake-check on fake image roots: pending security updates from real apt state (a local
trusted ``file:`` repository with a security suite and an ordinary one, fetched into the
root's lists by ``apt-get -o Dir=ROOT update``) and from dnf (a stand-in ``dnf`` with
recorded ``updateinfo`` output, a real rpm database); clone hygiene and ``--fix``; the
manifest's fields."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentproc import clean_environment

from agent.image import hygiene, packages

SECURITY = "Debian-Security:12/stable-security"
MAIN_SUITE = [("libfoo", "1.0-1"), ("libfoo", "1.0-2"), ("bar", "2.0-1"), ("bar", "2.1-1"),
              *((f"sec{i}", "1.0-1") for i in range(7)), ("dpkg", "1.21.22")]
SECURITY_SUITE = [("libfoo", "1.0-3"), *((f"sec{i}", "1.0-2") for i in range(7))]


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def build_deb(work: Path, name: str, version: str, pool: Path) -> None:
    tree = work / f"{name}_{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Bake Test <bake@example.invalid>\nDescription: a test package\n")
    run("dpkg-deb", "--build", "-Zgzip", tree, pool)


def suite(repo: Path, name: str, label: str, pool: str) -> None:
    """dists/NAME: the Packages index of pool/POOL and a Release file with Label and Suite."""
    binary = repo / "dists" / name / "main/binary-all"
    binary.mkdir(parents=True)
    index = subprocess.run(["dpkg-scanpackages", "-m", f"pool/{pool}"], cwd=repo,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    (binary / "Packages").write_text(index)
    release = run("apt-ftparchive", *(f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in (
        ("Label", label), ("Origin", "Debian"), ("Suite", name), ("Version", "12"),
        ("Architectures", "amd64 all"), ("Components", "main"))), "release",
        repo / "dists" / name)
    (repo / "dists" / name / "Release").write_text(release)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Debian repository: suite ``stable`` (label Debian) and ``stable-security``."""
    for tool in ("dpkg-deb", "dpkg-scanpackages", "apt-ftparchive", "apt-get"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: scripts/ensure-deps build installs it")
    base = tmp_path_factory.mktemp("repo")
    repo = base / "repo"
    for pool, debs in (("main", MAIN_SUITE), ("security", SECURITY_SUITE)):
        (repo / "pool" / pool).mkdir(parents=True)
        for name, version in debs:
            build_deb(base / "build" / pool, name, version, repo / "pool" / pool)
    suite(repo, "stable", "Debian", "main")
    suite(repo, "stable-security", "Debian-Security", "security")
    return repo


def clean_root(root: Path) -> Path:
    """An image root that passes the checks other than packages: the unit enabled, an
    unset machine-id, an os-release, no credentials."""
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "agent.service").symlink_to("/lib/systemd/system/agent.service")
    (root / "root").mkdir()
    (root / "etc/machine-id").write_text("uninitialized\n")
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
        "VERSION_CODENAME=bookworm\n")
    return root


def apt_root(tmp_path: Path, repo: Path, installed: dict[str, str],
             update: bool = True) -> Path:
    """An image root with the repository's two suites as its sources, ``installed`` in its
    dpkg status, and (``update``) the lists fetched by ``apt-get -o Dir=ROOT update``."""
    root = clean_root(tmp_path / "image")
    for directory in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "etc/apt/apt.conf.d",
                      "var/lib/dpkg", "var/lib/apt/lists/partial",
                      "var/cache/apt/archives/partial"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list").write_text(
        f"deb [trusted=yes] file:{repo} stable main\n"
        f"deb [trusted=yes] file:{repo} stable-security main\n")
    (root / "var/lib/dpkg/status").write_text("".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
        f"Architecture: {'amd64' if name == 'dpkg' else 'all'}\nVersion: {version}\n"
        "Maintainer: Bake Test <bake@example.invalid>\nDescription: a test package\n\n"
        for name, version in {"dpkg": "1.21.22", **installed}.items()))
    if update:
        run("apt-get", "-q", "-o", f"Dir={root}", "-o", "APT::Sandbox::User=root",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "update")
    return root


def bake_check(root: Path, *args: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    config = root.parent / "agent.toml"
    config.write_text("")
    return subprocess.run([sys.executable, "-m", "agent", "bake-check", "--config",
                           str(config), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120,
                          env=env or clean_environment())


def manifest(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "etc/agent/image.json").read_text())
    return data


@pytest.mark.integration
def test_a_pending_security_update_fails_naming_versions(tmp_path: Path, repo: Path) -> None:
    root = apt_root(tmp_path, repo, {"libfoo": "1.0-1", "bar": "2.0-1"})
    status = (root / "var/lib/dpkg/status").read_bytes()
    proc = bake_check(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert (f"agent: bake-check: 1 security update(s) pending: libfoo 1.0-1 -> 1.0-3 "
            f"({SECURITY}): take them in the bake (apt-get dist-upgrade, dnf upgrade) "
            "before bake-check") in lines
    assert "bar" not in proc.stderr  # 2.1-1 is an ordinary update
    assert lines[-1] == "agent: bake-check failed: 1 problem(s)"
    assert not (root / "etc/agent/image.json").exists()
    assert (root / "var/lib/dpkg/status").read_bytes() == status  # nothing upgraded
    assert not list((root / "var/cache/apt").glob("*.bin"))  # no cache written into the image


@pytest.mark.integration
def test_the_first_few_are_named_and_all_counted(tmp_path: Path, repo: Path) -> None:
    root = apt_root(tmp_path, repo, {f"sec{i}": "1.0-1" for i in range(7)})
    report = packages.inspect(root)
    assert report.pending is True and report.security is not None
    assert sorted(u.name for u in report.security) == [f"sec{i}" for i in range(7)]
    (line,) = report.problems
    assert line.startswith("7 security update(s) pending: sec")
    assert line.count(f"1.0-1 -> 1.0-2 ({SECURITY})") == packages.SHOWN
    assert ", and 2 more: take them" in line


@pytest.mark.integration
def test_an_ordinary_update_passes_and_the_manifest_says_what_is_installed(
        tmp_path: Path, repo: Path) -> None:
    root = apt_root(tmp_path, repo, {"libfoo": "1.0-3", "bar": "2.0-1"})
    proc = bake_check(root)
    assert proc.returncode == 0, proc.stderr
    assert "3 packages, no security update pending" in proc.stdout
    data = manifest(root)
    listed = run("dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                 "-f", "${Package}:${Architecture} ${Version}\n")
    digest = hashlib.sha256("".join(sorted(listed.splitlines(keepends=True))).encode())
    assert data["installed_packages"] == {"database": "dpkg", "count": 3,
                                          "sha256": digest.hexdigest()}
    assert data["security_updates_pending"] is False
    assert data["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert data["os_release"] == {"id": "debian", "version_id": "12",
                                  "version_codename": "bookworm",
                                  "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    assert abs(float(str(data["built_at_epoch"])) - time.time()) < 60
    assert data["agent"] and data["built_at"]

    (root / "var/lib/dpkg/status").write_text(  # another version: another digest
        (root / "var/lib/dpkg/status").read_text().replace("2.0-1", "2.1-1"))
    assert bake_check(root).returncode == 0
    assert manifest(root)["installed_packages"] != data["installed_packages"]


@pytest.mark.integration
def test_lists_never_fetched_fail_the_check(tmp_path: Path, repo: Path) -> None:
    root = apt_root(tmp_path, repo, {"libfoo": "1.0-1"}, update=False)
    proc = bake_check(root)
    assert proc.returncode == 1
    assert (f"agent: bake-check: no package lists in {root}/var/lib/apt/lists: run apt-get "
            "update in the bake, before bake-check, so pending security updates can be seen"
            ) in proc.stderr.splitlines()


@pytest.mark.integration
def test_a_root_without_a_package_database_says_so(tmp_path: Path) -> None:
    root = clean_root(tmp_path / "image")
    proc = bake_check(root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        f"agent: bake-check: no package database in {root} (no /var/lib/dpkg/status, no rpm "
        "database): pending security updates not checked")
    assert proc.stderr == ""
    data = manifest(root)
    assert data["installed_packages"] is None and data["security_updates_pending"] is None


# -- clone hygiene -------------------------------------------------------------------------

MACHINE_ID = "0123456789abcdef0123456789abcdef\n"
PROBLEMS = {
    "machine-id": (lambda r: (r / "etc/machine-id").write_text(MACHINE_ID),
                   "/etc/machine-id holds an id: every instance would share it (empty it, or "
                   "--fix)"),
    "host keys": (lambda r: [(r / "etc/ssh" / n).write_text("key") for n in (
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key")],
        "3 SSH host key file(s) (/etc/ssh/ssh_host_ed25519_key, /etc/ssh/ssh_host_ed25519_key"
        ".pub, /etc/ssh/ssh_host_rsa_key): every instance would share them (remove them, or "
        "--fix)"),
    "authorized_keys": (lambda r: (r / "home/admin/.ssh/authorized_keys").write_text(
        "ssh-ed25519 AAAA builder\n"), "/home/admin/.ssh/authorized_keys: the build's key would "
        "open every instance (remove it, or --fix)"),
    "histories": (lambda r: [(r / p).write_text("sudo apt-get dist-upgrade\n") for p in (
        "root/.bash_history", "home/admin/.bash_history", "home/admin/.python_history")],
        "3 shell or tool history file(s) of the build (/root/.bash_history, "
        "/home/admin/.bash_history, /home/admin/.python_history) (remove them, or --fix)"),
    "journal": (lambda r: (r / "var/log/journal/0123/system.journal").write_bytes(b"LPKSHHRH"),
                "the build's journal: 1 file(s) under /var/log/journal (remove them, or --fix)"),
    "logs": (lambda r: [(r / p).write_text("line\n") for p in (
        "var/log/dpkg.log", "var/log/apt/history.log", "var/log/syslog.1")],
        "the build's logs: 3 non-empty file(s) under /var/log (/var/log/apt/history.log, "
        "/var/log/dpkg.log, /var/log/syslog.1) (empty them, or --fix)"),
}


def hygiene_root(tmp_path: Path) -> Path:
    root = clean_root(tmp_path / "image")
    for directory in ("etc/ssh", "home/admin/.ssh", "var/log/journal/0123", "var/log/apt"):
        (root / directory).mkdir(parents=True)
    (root / "var/log/wtmp").write_bytes(b"")  # empty logs are fine
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    (root / "etc/ssh/ssh_host_rsa_key.pub.example").write_text("not a key file name")
    (root / "home/admin/.ssh/authorized_keys").write_text("")  # empty: nothing to open
    return root


def test_a_clean_root_has_no_hygiene_problem(tmp_path: Path) -> None:
    root = hygiene_root(tmp_path)
    (root / "root/.bash_history").symlink_to("/dev/null")  # the usual way to keep none
    (root / "etc/machine-id").write_text("")
    assert hygiene.problems(root) == []
    assert hygiene.fix(root) == []


@pytest.mark.parametrize("kind", list(PROBLEMS))
def test_each_hygiene_problem_alone(tmp_path: Path, kind: str) -> None:
    root = hygiene_root(tmp_path)
    make, line = PROBLEMS[kind]
    make(root)
    assert hygiene.problems(root) == [line]


@pytest.mark.integration
def test_every_hygiene_problem_at_once_then_fix(tmp_path: Path) -> None:
    root = hygiene_root(tmp_path)
    outside = tmp_path / "host-file"
    outside.write_text("the host's own")
    (root / "root/.zsh_history").symlink_to(outside)  # never followed out of the root
    for make, _ in PROBLEMS.values():
        make(root)
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").write_text(MACHINE_ID)
    proc = bake_check(root, "--fix")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:9] == [*(f"agent: bake-check --fix: {line}" for line in (
        "emptied /etc/machine-id (systemd makes one at each instance's first boot)",
        "removed /var/lib/dbus/machine-id (D-Bus reads /etc/machine-id)",
        "removed 3 SSH host key file(s) from /etc/ssh (each instance makes its own at first "
        "boot)",
        "removed 1 authorized_keys file(s)",
        "removed 3 history file(s)",
        "removed 1 journal file(s) from /var/log/journal",
        "removed 1 rotated log file(s) from /var/log",
        "emptied 2 log file(s) under /var/log")),
        f"agent: bake-check: no package database in {root} (no /var/lib/dpkg/status, no rpm "
        "database): pending security updates not checked"]
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "etc/ssh").glob("ssh_host_*_key*[!e]"))
    assert (root / "etc/ssh/sshd_config").exists()
    assert (root / "etc/ssh/ssh_host_rsa_key.pub.example").exists()
    assert not (root / "home/admin/.ssh/authorized_keys").exists()
    assert not (root / "root/.bash_history").exists()
    assert (root / "root/.zsh_history").is_symlink() and outside.read_text() == "the host's own"
    assert (root / "var/log/dpkg.log").read_text() == ""  # emptied, kept for its owner/mode
    assert not (root / "var/log/syslog.1").exists()
    assert not list((root / "var/log/journal").rglob("*.journal"))
    assert (root / "var/log/journal/0123").is_dir()
    assert hygiene.problems(root) == []
    again = bake_check(root, "--fix")
    assert again.returncode == 0 and "--fix:" not in again.stdout  # nothing left to do


@pytest.mark.integration
def test_without_fix_each_problem_fails_the_bake(tmp_path: Path) -> None:
    root = hygiene_root(tmp_path)
    for make, _ in PROBLEMS.values():
        make(root)
    proc = bake_check(root)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[:-1] == [f"agent: bake-check: {line}" for _, line in PROBLEMS.values()]
    assert lines[-1] == f"agent: bake-check failed: {len(PROBLEMS)} problem(s)"
    assert (root / "root/.bash_history").exists()  # nothing removed without --fix


@pytest.mark.integration
def test_fix_never_touches_packages(tmp_path: Path, repo: Path) -> None:
    root = apt_root(tmp_path, repo, {"libfoo": "1.0-1"})
    (root / "etc/machine-id").write_text(MACHINE_ID)
    databases = [root / "var/lib/dpkg", root / "var/lib/apt", root / "var/cache/apt"]
    before = {p: p.read_bytes() for d in databases for p in d.rglob("*") if p.is_file()}
    proc = bake_check(root, "--fix")
    assert proc.returncode == 1
    assert "agent: bake-check --fix: emptied /etc/machine-id" in proc.stdout
    assert proc.stderr.splitlines()[0].startswith(
        "agent: bake-check: 1 security update(s) pending: libfoo 1.0-1 -> 1.0-3")
    assert {p: p.read_bytes() for d in databases for p in d.rglob("*") if p.is_file()} == before


# -- dnf -----------------------------------------------------------------------------------

UPDATEINFO = """\
Last metadata expiration check: 0:12:01 ago on Sat Dec  5 10:00:00 2026.
ALAS2023-2026-101 Important/Sec. openssl-libs-1:3.0.8-1.amzn2023.0.9.x86_64
ALAS2023-2026-117 Medium/Sec.    curl-8.5.0-1.amzn2023.0.4.x86_64
ALAS2023-2026-117 Medium/Sec.    libcurl-8.5.0-1.amzn2023.0.4.x86_64
"""
RPMS = [("openssl-libs", "1", "3.0.8", "1.amzn2023.0.3"), ("curl", "0", "8.5.0", "1.amzn2023"),
        ("libcurl", "0", "8.5.0", "1.amzn2023"), ("bash", "0", "5.2.15", "1.amzn2023.0.2")]


def build_rpm(work: Path, name: str, epoch: str, version: str, release: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    spec = work / f"{name}.spec"
    spec.write_text(f"Name: {name}\nEpoch: {epoch}\nVersion: {version}\nRelease: {release}\n"
                    "Summary: a test package\nLicense: MIT\nBuildArch: x86_64\n"
                    f"%description\na test package\n%files\n")
    run("rpmbuild", "--quiet", "-bb", "--define", f"_topdir {work / 'top'}",
        "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}", spec)
    (rpm,) = (work / "top/RPMS/x86_64").glob(f"{name}-{version}-*.rpm")
    return rpm


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Empty rpm packages with the versions of RPMS."""
    if not shutil.which("rpmbuild"):
        pytest.fail("rpmbuild missing: scripts/ensure-deps build installs rpm")
    work = tmp_path_factory.mktemp("rpms")
    return [build_rpm(work, *package) for package in RPMS]


@pytest.fixture
def dnf_root(tmp_path: Path, rpms: list[Path]) -> tuple[Path, Path]:
    """An image root with a real rpm database, and a stand-in ``dnf`` (recorded output)."""
    root = clean_root(tmp_path / "image")
    (root / "var/lib/rpm").mkdir(parents=True)
    run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--initdb")
    run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps",
        "--noscripts", "--ignorearch", "--ignoreos", *rpms)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "updateinfo.txt").write_text(UPDATEINFO)
    (bin_dir / "dnf").write_text(
        f"#!/bin/sh\necho \"$@\" >> {tmp_path}/dnf.argv\ncat {tmp_path}/updateinfo.txt\n")
    (bin_dir / "dnf").chmod(0o755)
    return root, bin_dir


@pytest.mark.integration
def test_dnf_security_advisories_fail_the_bake(dnf_root: tuple[Path, Path]) -> None:
    root, bin_dir = dnf_root
    env = {**clean_environment(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = bake_check(root, env=env)
    assert proc.returncode == 1, proc.stderr
    assert ("agent: bake-check: 3 security update(s) pending: openssl-libs 1:3.0.8-1.amzn2023.0.3"
            " -> 1:3.0.8-1.amzn2023.0.9 (ALAS2023-2026-101), curl 8.5.0-1.amzn2023 -> "
            "8.5.0-1.amzn2023.0.4 (ALAS2023-2026-117), libcurl 8.5.0-1.amzn2023 -> "
            "8.5.0-1.amzn2023.0.4 (ALAS2023-2026-117): take them in the bake") in proc.stderr
    argv = (root.parent / "dnf.argv").read_text().split()
    assert argv == [f"--installroot={root}", "-q", "-C", "updateinfo", "list", "--security"]

    (root.parent / "updateinfo.txt").write_text(UPDATEINFO.splitlines()[0] + "\n")
    passed = bake_check(root, env=env)
    assert passed.returncode == 0, passed.stderr
    data = manifest(root)
    assert data["installed_packages"] == {
        "database": "rpm", "count": len(RPMS),
        "sha256": hashlib.sha256("".join(sorted(
            f"{n}.x86_64 {'' if e == '0' else e + ':'}{v}-{r}\n" for n, e, v, r in RPMS
        )).encode()).hexdigest()}
    assert data["security_updates_pending"] is False


@pytest.mark.integration
def test_dnf_without_its_cache_is_one_line(dnf_root: tuple[Path, Path]) -> None:
    root, bin_dir = dnf_root
    (bin_dir / "dnf").write_text("#!/bin/sh\necho \"Error: Cache-only enabled but no cache "
                                 "for 'amazonlinux'\" >&2\nexit 1\n")
    env = {**clean_environment(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = bake_check(root, env=env)
    assert proc.returncode == 1
    assert ("agent: bake-check: pending updates: dnf exited 1: Error: Cache-only enabled but no "
            "cache for 'amazonlinux'") in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_what_fix_cannot_clean_is_said_and_still_fails(tmp_path: Path) -> None:
    root = hygiene_root(tmp_path)
    stuck = root / "root/.bash_history"
    stuck.write_text("history\n")
    (root / "home/admin/.bash_history").write_text("history\n")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("needs chattr +i (root, a file system with attributes)")
    try:
        proc = bake_check(root, "--fix")
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[:2] == [
        "agent: bake-check --fix: could not clean /root/.bash_history: Operation not permitted",
        "agent: bake-check --fix: removed 1 history file(s)"]
    assert proc.stderr.splitlines()[0] == (
        "agent: bake-check: 1 shell or tool history file(s) of the build (/root/.bash_history) "
        "(remove them, or --fix)")
    assert "Traceback" not in proc.stderr
