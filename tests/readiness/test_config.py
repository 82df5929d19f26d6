"""The ``[readiness]`` section: what must serve before the launch hook hears CONTINUE."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import cache, loader
from agent.errors import ConfigError
from agent.readiness.config import ReadinessCheck, ReadinessConfig


def load(tmp_path: Path, text: str) -> loader.Config:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return loader.load(str(path))


@pytest.mark.parametrize("text", ["[readiness]\ntimeout_seconds = 30\n", "",
                                  "[readiness]\n"])
def test_a_section_that_is_there_waits_for_something(tmp_path: Path, text: str) -> None:
    """Absent (or an empty table): no gate; given with nothing to wait for: an error."""
    if "timeout" not in text:
        assert not load(tmp_path, text).readiness.enabled
        return
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value).endswith("readiness: waits for nothing: give units or checks "
                                    "(or remove the section)")


def test_waiting_for_nothing_is_said_before_the_timings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": readiness: waits for nothing"):
        load(tmp_path, "[readiness]\nsettle_seconds = 700\n")
    with pytest.raises(ConfigError, match=r": readiness: settle_seconds \(700\) must be shorter "
                       r"than timeout_seconds \(600\)"):
        load(tmp_path, '[readiness]\nunits = ["a.service"]\nsettle_seconds = 700\n')


def test_the_rule_holds_for_the_environment_too(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_READINESS__TIMEOUT_SECONDS", "30")
    with pytest.raises(ConfigError, match=r": readiness: waits for nothing"):
        load(tmp_path, "")


def test_checks_name_themselves(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[readiness]\n[[readiness.checks]]\nhttp = "http://127.0.0.1/ok"\n'
               '[[readiness.checks]]\ntcp = "[::1]:5432"\n'
               '[[readiness.checks]]\ncommand = ["/bin/true", "x"]\n').readiness
    assert [(c.kind, c.label) for c in cfg.checks] == [
        ("http", "http://127.0.0.1/ok"), ("tcp", "tcp [::1]:5432"),
        ("command", "/bin/true x")]
    rebuilt = cache.rebuild(ReadinessConfig, cache.dump(cfg))
    assert rebuilt == cfg and rebuilt.enabled and type(rebuilt.checks[0]) is ReadinessCheck


def test_a_check_is_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match=r"exactly one of http, tcp or command \(this one has "
                       "http and tcp\\)"):
        ReadinessCheck(http="http://127.0.0.1/", tcp="127.0.0.1:1")
