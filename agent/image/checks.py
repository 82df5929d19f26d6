"""The image: what it must not carry, its manifest and age, and user-data hygiene.

* At the bake (``agent bake-check``, :mod:`agent.cli.bake`): what the image must not carry
  (AWS credential files or variables, anything left under the secrets or state directory on
  disk, a unit not enabled), and the manifest ``/etc/agent/image.json`` (build time,
  versions, the OS, the packages).
* At boot the manifest gives the image's age (flagged past ``image.max_age_days``: rebuild
  to take the latest updates), and user-data is scanned for what looks like a credential
  (flagged by pattern name and line, never the value).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.frozen import frozen
from agent.fsutil import atomic_write, is_memory_fs
from agent.readfile import read_regular

if TYPE_CHECKING:
    from agent.cloud.imds import ImdsClient
    from agent.image.config import ImageConfig
    from agent.image.packages import Report
    from agent.state.recorder import Recorder

CREDENTIAL_PATTERNS: dict[str, re.Pattern[bytes]] = {
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"),
    "AWS secret access key assignment": re.compile(
        rb"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{30,}"),
    "private key block": re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    "password assignment": re.compile(
        rb"(?i)\b\w*(?:password|passwd|pwd|secret|api[_-]?key|token)\s*[=:]\s*['\"]?"
        rb"[^\s'\"$]{4,}"),
}
CREDENTIAL_FILES = (".aws/credentials", ".aws/config", ".boto", ".s3cfg")
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ENVIRONMENT_FILES = ("etc/environment", "etc/profile", "etc/bash.bashrc")
ENVIRONMENT_LIMIT = 1 << 20  # a shell profile larger than this is not read
MANIFEST_LIMIT = 1 << 20
UNIT = "agent.service"


def scan_user_data(data: bytes) -> list[str]:
    """Pattern names (with the line) that look like credentials; never the matched text."""
    if data[:2] == b"\x1f\x8b":  # cloud-init accepts gzip'd user-data
        import gzip  # noqa: PLC0415 - rare, and not worth a boot's import

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return []
    found = []
    for name, pattern in CREDENTIAL_PATTERNS.items():
        match = pattern.search(data)
        if match:
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{name} (line {line})")
    return found


@frozen()
class Manifest:
    """``/etc/agent/image.json``."""

    built_at: float  # epoch seconds
    data: dict[str, Any]

    @property
    def os(self) -> str:
        """The image's OS as a short label: ``debian-12`` (else its pretty name)."""
        release = self.data.get("os_release")
        if isinstance(release, dict) and release.get("id"):
            return "-".join(str(release[k]) for k in ("id", "version_id") if release.get(k))
        return str(self.data.get("os") or "")

    def age_days(self, now: float | None = None) -> float:
        """Days since the bake."""
        return ((now or time.time()) - self.built_at) / 86400


def check(cfg: ImageConfig, imds: ImdsClient, rec: Recorder) -> None:
    """At boot: the image's age (from its bake manifest) and user-data hygiene, as warnings."""
    manifest = read_manifest(cfg.manifest)
    if manifest is not None:
        age = manifest.age_days()
        rec.update(image={"built_at": str(manifest.data.get("built_at", "")),
                          "built_at_epoch": manifest.built_at, "age_days": round(age, 1),
                          "agent": manifest.data.get("agent"), "os": manifest.os})
        if cfg.max_age_days and age > cfg.max_age_days:
            rec.warn(f"image: built {age:.0f} days ago, past image.max_age_days = "
                     f"{cfg.max_age_days:g}: rebuild it to take the latest updates")
    if cfg.check_user_data:
        for finding in scan_user_data(imds.user_data() or b""):
            rec.warn(f"user-data: looks like it holds a credential: {finding}; anyone who "
                     "can describe the instance can read it: use Secrets Manager")


def read_manifest(path: str) -> Manifest | None:
    """The manifest, or None when the image has none (not baked with bake-check)."""
    try:
        data = json.loads(read_regular(path, MANIFEST_LIMIT))
        if not isinstance(data, dict):
            return None
        built = float(data["built_at_epoch"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return Manifest(built, data) if math.isfinite(built) else None


def bake_problems(root: Path, secrets_dir: str, state_dir: str) -> list[str]:
    """Everything that must not go into the image, one line each (empty: clean)."""
    return [*_credential_files(root), *_credential_variables(root),
            *_leftovers(root, {"secrets": secrets_dir, "state": state_dir}),
            *_unit_not_enabled(root)]


def _credential_files(root: Path) -> list[str]:
    homes = [root / "root"]
    if (root / "home").is_dir():
        homes += sorted((root / "home").iterdir())
    paths = [home / name for home in homes for name in CREDENTIAL_FILES]
    return [f"credential file {path} would be baked into the image"
            for path in [*paths, root / "etc/boto.cfg"] if path.is_file()]


def _credential_variables(root: Path) -> list[str]:
    files = [root / name for name in ENVIRONMENT_FILES]
    if (root / "etc/profile.d").is_dir():
        files += sorted((root / "etc/profile.d").iterdir())
    found = []
    for path in files:
        try:  # the image's files: a FIFO or a device there must not hang the bake
            text = read_regular(path, ENVIRONMENT_LIMIT).decode(errors="replace")
        except (OSError, ValueError):  # ValueError: Unreadable
            continue
        found += [f"{path} sets {variable}" for variable in CREDENTIAL_VARIABLES
                  if re.search(rf"\b{variable}\s*=", text)]
    return found + [f"${variable} is set in the bake's environment (would it be baked in?)"
                    for variable in CREDENTIAL_VARIABLES if os.environ.get(variable)]


def _leftovers(root: Path, directories: dict[str, str]) -> list[str]:
    found = []
    for what, directory in directories.items():
        target = root / directory.lstrip("/")
        if target.exists() and not is_memory_fs(target):
            files = [p for p in target.rglob("*") if p.is_file() or p.is_symlink()]
            if files:
                found.append(f"{len(files)} files left under the {what} directory {target} "
                             f"on disk (e.g. {files[0].name}): remove them")
    return found


def _unit_not_enabled(root: Path) -> list[str]:
    wants = root / "etc/systemd/system/multi-user.target.wants" / UNIT
    if wants.exists() or wants.is_symlink():
        return []
    return [f"{UNIT} is not enabled (no {wants}): systemctl enable {UNIT}"]


def os_release(root: Path) -> dict[str, str]:
    """The image's ``os-release`` fields (``/etc``, else ``/usr/lib``); empty when it has none."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / name).read_text(errors="replace")
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                fields[key.strip()] = value.strip().strip("\"'")
        return fields
    return {}


def write_manifest(path: Path, root: Path, packages: Report) -> dict[str, Any]:
    """Record the bake: time, agent and Python versions, the image's OS and packages."""
    from importlib import metadata  # noqa: PLC0415

    deps = {}
    for name in ("botocore", "pydantic", "pydantic-settings", "systemd-python"):
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    release = os_release(root)
    import platform  # noqa: PLC0415 - the bake's, not the boot's

    now = time.time()
    data = {
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "built_at_epoch": int(now),
        "agent": __version__,
        "python": platform.python_version(),
        "os": release.get("PRETTY_NAME", platform.platform()),
        "os_release": {key.lower(): release[key] for key in (
            "ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME") if key in release},
        "kernel_at_bake": platform.release(),
        "packages": deps,
        "installed_packages": packages.inventory.record() if packages.inventory else None,
        "security_updates_pending": packages.pending,
    }
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)
    return data
