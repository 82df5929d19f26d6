"""The systemd units and the shipped configuration, checked without booting anything.

``systemd-analyze verify`` must print nothing and ``systemd-analyze security --offline``
must rate agent.service at most 2.0 (the e2e tests rate it again under each release's
booted systemd); ``systemctl --root preset`` must enable the units the
way the packages' scripts do. The conffile must document every configuration key with its
default, and the Packer template must validate. Tests that need a tool skip without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.config import loader
from agent.config import validator as settings
from agent.secrets.config import SecretsConfig

REPO = Path(__file__).resolve().parent.parent
UNITS_DIR = REPO / "systemd"
UNITS = ("agent.service", "agent-ready.target", "run-agent-secrets.mount")
CONFFILE = REPO / "packaging" / "agent.toml"
MAX_EXPOSURE = 2.0


PACKAGES = {"systemd-analyze": "systemd", "systemctl": "systemd",
            "packer": "packer, from HashiCorp's repository"}


def need(tool: str) -> str:
    """The tool's path, or skip (naming where it comes from)."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (it comes with {PACKAGES.get(tool, tool)})")
    return path


def unit_settings(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (all sections; repeated keys keep every value)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS_DIR / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root with the host's stock units, ours, the preset and a stand-in /usr/bin/agent."""
    stock = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                  if (p / "multi-user.target").exists()), None)
    if stock is None:
        pytest.skip("no systemd unit directory on this host")
    units = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(stock, units, symlinks=True)
    for name in UNITS:
        shutil.copy(UNITS_DIR / name, units / name)
    presets = tmp_path / "usr/lib/systemd/system-preset"
    presets.mkdir(parents=True)
    shutil.copy(UNITS_DIR / "90-agent.preset", presets)
    agent = tmp_path / "usr/bin/agent"
    agent.parent.mkdir(parents=True)
    agent.write_text("#!/bin/sh\n")
    agent.chmod(0o755)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    return tmp_path


@pytest.mark.integration
def test_verify_prints_nothing(unit_root: Path) -> None:
    """``systemd-analyze verify`` finds nothing to say about the units."""
    analyze = need("systemd-analyze")
    proc = subprocess.run([analyze, "verify", f"--root={unit_root}", *UNITS],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@pytest.mark.integration
def test_security_exposure(tmp_path: Path) -> None:
    """``systemd-analyze security --offline=true``: overall exposure at most 2.0."""
    analyze = need("systemd-analyze")
    unit = tmp_path / "agent.service"
    shutil.copy(UNITS_DIR / "agent.service", unit)
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze is too old for --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for agent\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


@pytest.mark.integration
def test_preset_enables_offline(unit_root: Path) -> None:
    """``systemctl --root preset`` (what postinst does in an image build) enables both."""
    systemctl = need("systemctl")
    subprocess.run([systemctl, f"--root={unit_root}", "preset", "agent.service",
                    "agent-ready.target"], capture_output=True, text=True, timeout=60,
                   check=True)
    wants = unit_root / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["agent-ready.target", "agent.service"]


def test_units_match_the_agent() -> None:
    """The units agree with the agent's defaults and exit codes."""
    service = unit_settings("agent.service")
    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == ["/usr/bin/agent run"]
    assert service["RestartPreventExitStatus"] == ["78"]
    assert service["RuntimeDirectory"] == ["agent"]
    assert service["RuntimeDirectoryPreserve"] == ["yes"]
    assert service["CapabilityBoundingSet"] == ["CAP_CHOWN"]
    defaults = loader.Config()
    assert service["RequiresMountsFor"] == [SecretsConfig().dir]
    minutes = re.fullmatch(r"(\d+)min", service["TimeoutStartSec"][0])
    assert minutes and int(minutes.group(1)) * 60 > defaults.imds.max_wait_seconds + 60
    assert f"/run/{service['RuntimeDirectory'][0]}" == defaults.state_dir
    mount = unit_settings("run-agent-secrets.mount")
    assert mount["Where"] == [SecretsConfig().dir]
    assert mount["Type"] == ["tmpfs"]
    target = unit_settings("agent-ready.target")
    assert target["Requires"] == ["agent.service"] and target["After"] == ["agent.service"]


def _fields(model: type[Any], prefix: str = "") -> set[str]:
    """Every configuration key of a section, dotted (``secrets.files.secret_id``)."""
    keys: set[str] = set()
    for name, annotation in settings.keys(model).items():
        inner = settings.section_of(annotation)
        if inner is not None:
            keys |= _fields(inner, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _keys(table: dict[str, Any], model: type[Any], prefix: str = "") -> set[str]:
    """The dotted keys a TOML document sets, following the sections."""
    keys: set[str] = set()
    known = settings.keys(model)
    for name, raw in table.items():
        inner = settings.section_of(known[name]) if name in known else None
        if inner is not None:
            for item in raw if isinstance(raw, list) else [raw]:
                keys |= _keys(item, inner, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_conffile_documents_every_key() -> None:
    """packaging/agent.toml: loads as is (all defaults); uncommented, every key and valid."""
    text = CONFFILE.read_text()
    shipped = tomllib.loads(text)
    assert settings.validate(CONFFILE, shipped) == loader.Config()
    everything = tomllib.loads(re.sub(r"(?m)^#(?=[\[A-Za-z_])", "", text))
    documented = settings.validate(CONFFILE, everything)
    assert _keys(everything, loader.Config) == _fields(loader.Config)
    for section in ("imds", "aws", "lifecycle"):
        assert getattr(documented, section) == getattr(loader.Config(), section), section
    assert documented.state_dir == loader.Config().state_dir


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
@pytest.mark.integration
def test_maintainer_scripts_parse(script: str) -> None:
    """The .deb maintainer scripts are valid POSIX sh."""
    subprocess.run(["sh", "-n", str(REPO / "packaging/deb" / script)], check=True, timeout=10)


def test_packer_template_validates(tmp_path: Path) -> None:
    """``packer validate`` accepts the example template (where Packer is installed)."""
    packer = need("packer")
    template = REPO / "packaging/packer/agent.pkr.hcl"
    deb = tmp_path / "instance-boot-agent_0.0.0_amd64.deb"
    deb.write_bytes(b"")
    proc = subprocess.run([packer, "validate", "-var", f"deb={deb}", str(template)],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path)
    if proc.returncode != 0 and "amazon-ebs" in proc.stdout + proc.stderr and (
            "unknown" in (proc.stdout + proc.stderr).lower()):
        pytest.skip("this Packer lacks the Amazon plugin (packer plugins install ...)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
