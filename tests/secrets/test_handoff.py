"""Handing published secrets to services: the credential drop-ins' content, and after a
change, the reloads and hooks (real processes) told names and paths, never values.
Writing the drop-ins beside tuning's: tests/service/test_dropins.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import SecretsError
from agent.secrets import handoff
from agent.secrets.config import SecretFile, SecretsConfig
from agent.secrets.handoff import About
from agent.service import notify


def entry(path: str, **kw: object) -> SecretFile:
    return SecretFile(secret_id="prod/db", path=path, **kw)  # type: ignore[arg-type]


def test_each_unit_gets_one_dropin_with_its_credentials_in_order() -> None:
    files = [entry("db.json", units=["web.service", "api.service"]),
             entry("tls/key.pem", credential="tls", units=["web.service"]),
             entry("unused.json")]
    cfg = SecretsConfig(dir="/run/agent/secrets", files=files)
    found = handoff.credential_dropins(cfg, cfg.files)
    assert list(found) == ["api.service", "web.service"]
    assert found["web.service"].decode().splitlines() == [
        "# Written by the instance boot agent (secrets units); do not edit.", "[Service]",
        "LoadCredential=db.json:/run/agent/secrets/db.json",
        "LoadCredential=tls:/run/agent/secrets/tls/key.pem"]
    assert found["api.service"].decode().splitlines()[2:] == [
        "LoadCredential=db.json:/run/agent/secrets/db.json"]
    assert handoff.credential_dropins(cfg, []) == {}


def test_an_unwritable_unit_dir_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "units").write_text("a file, not a directory")
    cfg = SecretsConfig(unit_dir=str(tmp_path / "units"), files=[
        SecretFile(secret_id="s", path="db.json", units=["app.service"])])
    with pytest.raises(SecretsError, match=r"^cannot write credential drop-ins in .*units: "
                                           r"Not a directory$"):
        handoff.write_credentials(cfg, cfg.files)


def test_nothing_changed_runs_nothing() -> None:
    cfg = SecretsConfig(files=[entry("db.json", on_change=[["/bin/false"]],
                                     reload_units=["app.service"])])
    assert handoff.after_change(cfg, [], {}) == []  # a unit test: it would fail if it ran


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recording ``systemctl`` first on PATH, and systemd running (as far as we ask)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.argv"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 0\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (tmp_path / "run-systemd").mkdir()
    monkeypatch.setattr(notify, "SYSTEMD_RUNTIME", str(tmp_path / "run-systemd"))
    return log


@pytest.mark.integration
def test_a_change_reloads_each_unit_once_and_runs_the_hooks(
        tmp_path: Path, systemctl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    seen = tmp_path / "seen"
    hook = ["/bin/sh", "-c", f'env | sort > {seen}; echo "printed hunter2"']
    files = [entry("db.json", reload_units=["app.service", "web.service"], on_change=[hook]),
             entry("other.json", reload_units=["app.service"])]
    cfg = SecretsConfig(dir="/run/agent/secrets", files=files)
    about = {"db.json": About("arn:aws:secretsmanager:us-east-1:1:secret:prod/db", "secretsmanager",
                              "v2")}
    assert handoff.after_change(cfg, cfg.files, about) == []
    assert systemctl.read_text() == "try-reload-or-restart app.service web.service\n"
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env == {"PATH": handoff.HOOK_PATH, "LANG": "C.UTF-8", "PWD": env["PWD"],
                   "AGENT_SECRET_ID": "arn:aws:secretsmanager:us-east-1:1:secret:prod/db",
                   "AGENT_SECRET_SOURCE": "secretsmanager",
                   "AGENT_SECRET_PATH": "/run/agent/secrets/db.json",
                   "AGENT_SECRET_VERSION": "v2", **({"SHLVL": env["SHLVL"]}
                                                    if "SHLVL" in env else {})}


@pytest.mark.integration
def test_failing_hooks_and_reloads_are_warnings_not_errors(
        tmp_path: Path, systemctl: Path) -> None:
    systemctl.parent.joinpath("bin/systemctl").write_text("#!/bin/sh\nexit 5\n")
    files = [entry("db.json", reload_units=["app.service"],
                   on_change=[["/bin/sh", "-c", "exit 2"], ["/bin/sleep", "10"],
                              [str(tmp_path / "absent")]])]
    cfg = SecretsConfig(files=files, hook_timeout_seconds=1)
    assert handoff.after_change(cfg, cfg.files, {}) == [
        "reload app.service exited 5",
        "on_change of db.json (/bin/sh) exited 2",
        "on_change of db.json (/bin/sleep) timed out after 1 s",
        f"on_change of db.json ({tmp_path / 'absent'}) could not run: No such file or "
        "directory"]
