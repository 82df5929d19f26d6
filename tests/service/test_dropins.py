"""Our systemd drop-ins, for secrets and tuning alike: plan, write, prune, reload (no root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from unitcheck import assert_systemd_accepts

from agent.config import loader
from agent.config.validator import section
from agent.errors import ConfigError
from agent.files import Change
from agent.secrets import handoff
from agent.secrets.config import SecretFile, SecretsConfig
from agent.service import dropins, notify

CONTENT = b"[Service]\nNice=5\n"


@pytest.fixture
def reloads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(dropins, "daemon_reload", lambda: calls.append(1) or "")
    return calls


def test_plan_says_what_changes_and_writes_nothing(tmp_path: Path) -> None:
    units = tmp_path / "units"
    plans = dropins.plan(str(units), "60-x.conf", {"app.service": CONTENT})
    assert [(p.path, p.change) for p in plans] == [
        (str(units / "app.service.d/60-x.conf"), Change.NEW)]
    assert not units.exists()


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_apply_writes_prunes_and_reloads_once(tmp_path: Path, reloads: list[int]) -> None:
    units = tmp_path / "units"
    stale = units / "old.service.d/60-x.conf"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(CONTENT)
    admin = units / "old.service.d/10-admin.conf"  # not ours: never touched
    admin.write_bytes(b"[Service]\n")
    other = units / "app.service.d/50-other-feature.conf"  # another feature's name
    other.parent.mkdir()
    other.write_bytes(b"[Service]\n")
    old = os.umask(0o077)
    try:
        warnings = dropins.apply(dropins.plan(str(units), "60-x.conf",
                                              {"app.service": CONTENT, "b.service": CONTENT}))
    finally:
        os.umask(old)
    assert warnings == []
    assert (units / "app.service.d/60-x.conf").read_bytes() == CONTENT
    assert stat.S_IMODE((units / "b.service.d/60-x.conf").stat().st_mode) == 0o644
    assert not stale.exists() and admin.exists() and other.exists()
    assert reloads == [1]
    assert dropins.apply(dropins.plan(str(units), "60-x.conf",
                                      {"app.service": CONTENT, "b.service": CONTENT})) == []
    assert reloads == [1]  # nothing changed: no reload
    assert_systemd_accepts(units)


def test_held_back_without_systemd(monkeypatch: pytest.MonkeyPatch, reloads: list[int]) -> None:
    monkeypatch.setattr(notify, "systemd_running", lambda: False)
    plans = dropins.plan("/run/systemd/system", "60-x.conf", {"app.service": CONTENT})
    assert dropins.apply(plans) == ["drop-in /run/systemd/system/app.service.d/60-x.conf "
                                    "not written: systemd is not running"]
    assert not Path("/run/systemd/system/app.service.d/60-x.conf").exists()
    assert reloads == []


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_a_failed_reload_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropins, "daemon_reload", lambda: "systemctl daemon-reload exited 1")
    warnings = dropins.apply(dropins.plan(str(tmp_path), "60-x.conf", {"a.service": CONTENT}))
    assert warnings == ["drop-ins written but systemctl daemon-reload exited 1"]
    assert_systemd_accepts(tmp_path)


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_credentials_and_tuning_share_the_rules(tmp_path: Path, reloads: list[int]) -> None:
    units = tmp_path / "units"
    tuned = units / "app.service.d/60-agent-tuning.conf"
    tuned.parent.mkdir(parents=True)
    tuned.write_bytes(CONTENT)
    cfg = SecretsConfig(dir="/run/agent/secrets", unit_dir=str(units), files=[
        SecretFile(secret_id="s", path="db.json", units=["app.service"])])
    assert handoff.write_credentials(cfg, cfg.files) == []
    dropin = units / "app.service.d/50-agent-credentials.conf"
    assert dropin.read_text().splitlines()[1:] == [
        "[Service]", "LoadCredential=db.json:/run/agent/secrets/db.json"]
    assert_systemd_accepts(units)
    assert handoff.write_credentials(cfg, []) == []
    assert not dropin.exists() and tuned.exists()  # pruned: only its own name
    assert reloads == [1, 1]


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_percent_signs_reach_systemd_as_written(tmp_path: Path, reloads: list[int]) -> None:
    """systemd expands specifiers (%n, %h, %Z...) in LoadCredential=: each % is doubled."""
    units = tmp_path / "units"
    cfg = SecretsConfig(dir="/run/agent/se%Zcrets", unit_dir=str(units), files=[
        SecretFile(secret_id="s", path="app%n/db%Z.json", credential="db",
                   units=["app.service"]),
        SecretFile(secret_id="s", path="100%", credential="all", units=["app.service"])])
    assert handoff.write_credentials(cfg, cfg.files) == []
    dropin = units / "app.service.d/50-agent-credentials.conf"
    assert dropin.read_text().splitlines()[2:] == [
        "LoadCredential=db:/run/agent/se%%Zcrets/app%%n/db%%Z.json",
        "LoadCredential=all:/run/agent/se%%Zcrets/100%%"]
    assert_systemd_accepts(units)


@pytest.mark.parametrize(("entry", "problem"), [
    ("credential = '..'", "credential name '..' is not valid"),
    ("credential = '.'", "credential name '.' is not valid"),
    ("credential = 'a:b'", "credential name 'a:b' is not valid"),
    (f"credential = '{'c' * 256}'", "is not valid (1 to 255 letters"),
    ("path = 'x '", "path 'x ' ends with ' ', which systemd would drop"),
    ("path = 'x\\\\'", "ends with '\\\\', which systemd would drop"),
])
def test_credentials_systemd_refuses_are_78_at_load(tmp_path: Path, entry: str,
                                                     problem: str) -> None:
    path = tmp_path / "agent.toml"
    lines = ["[[secrets.files]]", "secret_id = 's'", "units = ['app.service']", entry]
    if not entry.startswith("path"):
        lines.append("path = 'db.json'")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        loader.load(str(path))
    assert info.value.exit_code == 78
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_a_leading_double_slash_is_one(tmp_path: Path) -> None:
    """systemd refuses a credential source that is not normalized ('//run/...')."""
    units = tmp_path / "units"
    cfg = section(SecretsConfig, dir="//run/agent/secrets", unit_dir=str(units), files=[
        SecretFile(secret_id="s", path="db.json", units=["app.service"])])
    assert cfg.dir == "/run/agent/secrets"
