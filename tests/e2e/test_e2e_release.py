"""The release under test is the one booted: its own systemd, its own interpreter.

``make e2e DIST=trixie`` must boot Debian 13's package under Debian 13's systemd 257 (and
bookworm's under 252): the container's os-release, its systemd's version, the interpreter
of the installed agent and the package's Depends are checked against the release, and the
unit's hardening is rated by that systemd (``systemd-analyze security``, exposure at most
2.0) on the booted machine, where the agent has just reached READY.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import Setup

pytestmark = pytest.mark.e2e
MAX_EXPOSURE = 2.0
PREFIX = "/opt/instance-boot-agent"

SEED: dict[str, Any] = {
    "group": "release-asg",
    "instance_type": "t3.small",
    "region": "eu-west-1",
    "hook": "agent-ready",
    "heartbeat_timeout": 300,
    "default_result": "ABANDON",
    "secrets": {"prod/release": "not-a-real-secret"},
}
CONFIG = """\
[aws]
endpoint_url = "@AWS_URL@"

[[secrets.files]]
secret_id = "prod/release"
path = "release.txt"

[lifecycle]
hook_name = "agent-ready"
"""


def prepare(root: Path, aws_url: str) -> None:
    """The agent's configuration: one secret, the launch hook."""
    (root / "etc/agent/agent.toml").write_text(CONFIG.replace("@AWS_URL@", aws_url))


def os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict (values unquoted)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value.strip().strip('"') for key, value in pairs}


def test_boots_the_release(e2e_setup: Setup, tmp_path: Path) -> None:
    """The package of the release, under its systemd and interpreter, READY and hardened."""
    release = harness.RELEASE
    started = time.monotonic()
    with harness.scenario(e2e_setup.rootfs, e2e_setup.deb, tmp_path, SEED,
                          prepare) as machine:
        c = machine.container
        assert machine.booted == "running", c.exec("systemctl", "--failed").stdout
        osr = os_release(c.exec("cat", "/etc/os-release", check=True).stdout)
        assert (osr.get("VERSION_CODENAME"), osr.get("PRETTY_NAME")) == (
            release.name, release.title), osr
        version = c.exec("systemctl", "--version", check=True).stdout.splitlines()[0]
        match = re.match(r"systemd (\d+) \(([^)]*)\)", version)
        assert match and int(match.group(1)) == release.systemd, version
        python = c.exec(f"{PREFIX}/bin/python3", "-I", "-c",
                        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
                        check=True).stdout.strip()
        assert python.rsplit(".", 1)[0] == release.python, python
        depends = c.exec("dpkg-query", "-W", "-f", "${Depends}", "instance-boot-agent",
                         check=True).stdout
        assert f"python{release.python}" in depends.split(", "), depends

        agent = c.wait_for("agent.service", ["active", "failed"])
        assert (agent["ActiveState"], agent["SubState"]) == ("active", "running"), agent
        doc = json.loads(c.exec("agent", "status", "--json", check=True).stdout)
        assert (doc["state"], doc["condition"]) == ("ready", "healthy"), doc
        assert c.exec("stat", "-f", "-c", "%T", "/run/agent/secrets/release.txt",
                      check=True).stdout.strip() == "tmpfs"

        # the hardening as this release's systemd rates the running unit
        security = c.exec("systemd-analyze", "security", "--no-pager", "agent.service",
                          timeout=60)
        rated = re.search(r"Overall exposure level for agent\.service: (\d+\.\d+)",
                          security.stdout)
        assert rated, security.stdout + security.stderr
        exposure = float(rated.group(1))
        assert exposure <= MAX_EXPOSURE, security.stdout
        e2e_setup.note(f"booted {osr['PRETTY_NAME']}: systemd {match.group(2)}, the agent on "
                       f"Python {python}, Depends {depends}; agent.service exposure "
                       f"{exposure} (at most {MAX_EXPOSURE})")
    e2e_setup.note(f"release: scenario {time.monotonic() - started:.0f} s")
