"""The image's packages: what is installed, and which security updates the bake left pending.

Read from the image's own package database and the package lists the bake fetched, with the
host's tools pointed at the image's root (no chroot, no network, nothing upgraded):

* Debian and Ubuntu: ``/var/lib/dpkg/status`` for what is installed; ``apt-get -s
  dist-upgrade`` (simulated, ``-o Dir=ROOT``) for the upgrade candidates, each shown with the
  releases it comes from (``Debian-Security:12/stable-security``). A candidate from a
  security release (its label or suite says so) is a pending security update; any other
  candidate is an ordinary update and not a problem.
* dnf systems (Amazon Linux 2023, RHEL, Fedora): the rpm database for what is installed;
  ``dnf updateinfo list --security`` from dnf's cache (``-C``) for the security advisories.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from agent.errors import escape
from agent.frozen import frozen

TIMEOUT = 300.0  # seconds for one tool run (apt's solver on a large image takes a few)
SHOWN = 5  # updates named in the line; the count says how many in all
DPKG_STATUS = "var/lib/dpkg/status"
RPM_DATABASES = ("var/lib/rpm", "usr/lib/sysimage/rpm")
APT_LISTS = "var/lib/apt/lists"
INST = re.compile(r"^Inst (?P<name>\S+) \[(?P<installed>[^\]]+)\] "
                  r"\((?P<candidate>\S+) (?P<releases>.*?)(?: \[[^\]]+\])?\)")


class ToolError(Exception):
    """A package tool could not answer (one line)."""


@frozen()
class Update:
    """A newer version of an installed package, and where it comes from."""

    name: str
    installed: str
    candidate: str
    source: str  # the release (apt) or the advisory (dnf)

    def __str__(self) -> str:
        return (f"{escape(self.name)} {escape(self.installed)} -> "
                f"{escape(self.candidate)} ({escape(self.source)})")


@frozen()
class Inventory:
    """The installed packages: ``name:arch`` (dpkg) or ``name.arch`` (rpm) -> version."""

    database: str  # "dpkg" | "rpm"
    versions: dict[str, str]

    @property
    def digest(self) -> str:
        """sha256 of the sorted ``<package> <version>`` lines: equal for equal contents."""
        lines = "".join(sorted(f"{name} {version}\n" for name, version in self.versions.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    def record(self) -> dict[str, object]:
        """What the manifest keeps."""
        return {"database": self.database, "count": len(self.versions), "sha256": self.digest}


@frozen()
class Report:
    """What the bake check learnt about the image's packages."""

    inventory: Inventory | None  # None: the root has no package database
    security: list[Update] | None  # None: could not be determined
    problems: list[str]
    notes: list[str]

    @property
    def pending(self) -> bool | None:
        """Whether security updates are pending (None: unknown)."""
        return None if self.security is None else bool(self.security)


def inspect(root: Path) -> Report:
    """The image's packages and its pending security updates."""
    if (root / DPKG_STATUS).is_file():
        try:
            inventory = Inventory("dpkg", dpkg_installed((root / DPKG_STATUS).read_bytes()))
        except OSError as exc:
            return Report(None, None, [f"{root / DPKG_STATUS}: {exc.strerror or exc}"], [])
        return _verdict(inventory, apt_security_updates, root)
    for database in RPM_DATABASES:
        if (root / database).is_dir() and any((root / database).iterdir()):
            try:
                inventory = Inventory("rpm", rpm_installed(root, "/" + database))
            except ToolError as exc:
                return Report(None, None, [str(exc)], [])
            return _verdict(inventory, dnf_security_updates, root)
    return Report(None, None, [], [
        f"no package database in {root} (no /{DPKG_STATUS}, no rpm database): "
        "pending security updates not checked"])


def _verdict(inventory: Inventory, find: Callable[[Path, Inventory], list[Update]],
             root: Path) -> Report:
    try:
        found = find(root, inventory)
    except ToolError as exc:
        return Report(inventory, None, [str(exc)], [])
    problems = []
    if found:
        shown = ", ".join(str(update) for update in found[:SHOWN])
        more = f", and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        problems.append(f"{len(found)} security update(s) pending: {shown}{more}: take them "
                        "in the bake (apt-get dist-upgrade, dnf upgrade) before bake-check")
    return Report(inventory, found, problems, [])


def _run(argv: list[str], what: str) -> str:
    """A tool's standard output; ToolError (one line) when it cannot answer."""
    environment = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", env=environment, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} not found (the host's own package tools read "
                        "the image's database)") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: {argv[0]} did not answer within {TIMEOUT:g} s") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        said = next((line for line in errors if line.startswith("E:")), errors[-1] if errors
                    else "")
        raise ToolError(f"{what}: {argv[0]} exited {proc.returncode}"
                        + (f": {escape(said.strip())[:200]}" if said else ""))
    return proc.stdout


# -- Debian, Ubuntu ------------------------------------------------------------------------


def dpkg_installed(status: bytes) -> dict[str, str]:
    """``name:arch`` -> version of every installed package in a dpkg status file."""
    versions = {}
    for paragraph in status.decode(errors="replace").split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").split()[-1:] == ["installed"] and "Package" in fields:
            versions[f"{fields['Package']}:{fields.get('Architecture', '')}"] = (
                fields.get("Version", ""))
    return versions


def is_security_release(releases: str) -> bool:
    """Whether any of apt's ``Label:Version/Suite`` entries is a security release."""
    for release in releases.split(", "):
        label, _, rest = release.partition(":") if ":" in release else ("", "", release)
        suite = rest.rpartition("/")[2]
        if "security" in label.lower() or suite.endswith("-security") or suite == "security":
            return True
    return False


def apt_argv(root: Path, inventory: Inventory) -> list[str]:
    """``apt-get -s dist-upgrade`` on the image: its sources, lists, status and preferences;
    its architectures; no cache file written and no lock taken."""
    argv = ["apt-get", "-s", "-q", "-o", f"Dir={root}", "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=", "-o", "Debug::NoLocking=true"]
    native = next((name.rpartition(":")[2] for name in inventory.versions
                   if name.startswith("dpkg:")), "")  # dpkg's own architecture is the image's
    if native:
        arch_file = root / "var/lib/dpkg/arch"
        foreign = arch_file.read_text().split() if arch_file.is_file() else []
        argv += ["-o", f"APT::Architecture={native}"]
        for arch in dict.fromkeys([native, *foreign]):
            argv += ["-o", f"APT::Architectures::={arch}"]
    return [*argv, "dist-upgrade"]


def apt_security_updates(root: Path, inventory: Inventory) -> list[Update]:
    """Upgrade candidates from security releases; ToolError when apt cannot tell."""
    lists = root / APT_LISTS
    if not (lists.is_dir() and any("_Packages" in p.name for p in lists.iterdir())):
        raise ToolError(f"no package lists in {lists}: run apt-get update in the bake, "
                        "before bake-check, so pending security updates can be seen")
    out = _run(apt_argv(root, inventory), "pending updates")
    found = []
    for line in out.splitlines():
        match = INST.match(line)
        if match and is_security_release(match["releases"]):
            found.append(Update(match["name"], match["installed"], match["candidate"],
                                match["releases"]))
    return found


# -- dnf -----------------------------------------------------------------------------------


def rpm_installed(root: Path, dbpath: str) -> dict[str, str]:
    """``name.arch`` -> ``[epoch:]version-release`` from the image's rpm database."""
    argv = ["rpm", "--dbpath", dbpath, "-qa", "--qf",
            "%{NAME}.%{ARCH} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n"]
    if root != Path("/"):
        argv[1:1] = ["--root", str(root)]
    versions = {}
    for line in _run(argv, "installed packages").splitlines():
        name, _, version = line.partition(" ")
        if version and not name.startswith("gpg-pubkey."):
            versions[name] = version.removeprefix("0:")
    return versions


def split_nevra(nevra: str) -> tuple[str, str]:
    """``name-[epoch:]version-release.arch`` -> (``name.arch``, ``[epoch:]version-release``)."""
    nevr, _, arch = nevra.rpartition(".")
    name, _, rest = nevr.rpartition("-")
    name, _, version = name.rpartition("-")
    return f"{name}.{arch}", f"{version}-{rest}".removeprefix("0:")


def dnf_security_updates(root: Path, inventory: Inventory) -> list[Update]:
    """Security advisories dnf's cache lists for installed packages (one per package)."""
    argv = ["dnf", "-q", "-C", "updateinfo", "list", "--security"]
    if root != Path("/"):
        argv[1:1] = [f"--installroot={root}"]
    out = _run(argv, "pending updates")
    found: dict[str, Update] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].endswith("/Sec."):  # dnf 4
            advisory, nevra = words[0], words[2]
        elif len(words) >= 4 and words[1] == "security":  # dnf 5
            advisory, nevra = words[0], words[3]
        else:
            continue
        package, candidate = split_nevra(nevra)
        name = package.rpartition(".")[0]
        found[package] = Update(name, inventory.versions.get(package, "?"), candidate, advisory)
    return list(found.values())
