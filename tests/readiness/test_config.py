"""The ``[readiness]`` section: what must serve before the launch hook hears CONTINUE."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import error_of, load

from agent.config import cache
from agent.errors import ConfigError
from agent.readiness.config import ReadinessCheck, ReadinessConfig


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


def test_defaults_and_a_full_section(tmp_path: Path) -> None:
    assert not load(tmp_path, "").readiness.enabled
    cfg = load(tmp_path, """
[readiness]
units = ["app.service"]
timeout_seconds = 300
[[readiness.checks]]
http = "http://127.0.0.1:8080/healthz"
expect_status = [200, 204]
[[readiness.checks]]
tcp = "[::1]:5432"
timeout_seconds = 2
[[readiness.checks]]
command = ["/usr/bin/pg_isready", "-q"]
""").readiness
    assert cfg.enabled and (cfg.settle_seconds, cfg.interval_seconds) == (10, 2)
    assert [c.kind for c in cfg.checks] == ["http", "tcp", "command"]
    assert [c.label for c in cfg.checks] == ["http://127.0.0.1:8080/healthz", "tcp [::1]:5432",
                                             "/usr/bin/pg_isready -q"]


@pytest.mark.parametrize(("text", "line"), [
    ("[readiness]\ntimeout_seconds = 60",
     "readiness: waits for nothing: give units or checks (or remove the section)"),
    ("[readiness]\nunits = [\"app.service\"]\ntimeout_seconds = 7201",
     "readiness.timeout_seconds: Input should be less than or equal to 7200"),
    ("[readiness]\nunits = [\"app.service\"]\ntimeout_seconds = 0",
     "readiness.timeout_seconds: Input should be greater than or equal to 1"),
    ("[readiness]\nunits = [\"app.service\"]\ntimeout_seconds = nan",
     "readiness.timeout_seconds: Input should be a finite number"),
    ("[readiness]\nunits = [\"app\"]", "readiness.units[0]: 'app' is not a unit name"),
    ("[readiness]\nunits = [\"a.service\"]\nsettle_seconds = 600",
     "readiness: settle_seconds (600) must be shorter than timeout_seconds (600)"),
    ("[readiness]\nunit = [\"a.service\"]", "readiness.unit: unknown key (did you mean 'units'?)"),
    ("[[readiness.checks]]\nhttp = \"http://example.com/healthz\"",
     "readiness.checks[0].http: http://example.com/healthz: host 'example.com' must be an IP "
     "address of this instance or localhost (checks reach this instance only)"),
    ("[[readiness.checks]]\nhttp = \"ftp://127.0.0.1/\"",
     "readiness.checks[0].http: 'ftp://127.0.0.1/' is not an http:// or https:// URL"),
    ("[[readiness.checks]]\ntcp = \"127.0.0.1\"",
     "readiness.checks[0].tcp: '127.0.0.1' is not HOST:PORT (an IPv6 host in brackets: "
     "[::1]:5432)"),
    ("[[readiness.checks]]\ntcp = \"db.internal:5432\"",
     "readiness.checks[0].tcp: db.internal:5432: host 'db.internal' must be an IP address"),
    ("[[readiness.checks]]\ncommand = [\"pg_isready\"]",
     "readiness.checks[0].command: ['pg_isready'] is an argv list starting with an absolute"),
    ("[[readiness.checks]]\nhttp = \"http://127.0.0.1/\"\ntcp = \"127.0.0.1:80\"",
     "readiness.checks[0]: a check is exactly one of http, tcp or command (this one has http "
     "and tcp)"),
    ("[[readiness.checks]]\ntcp = \"127.0.0.1:80\"\nexpect_status = [200]",
     "readiness.checks[0]: expect_status is for http checks"),
    ("[[readiness.checks]]\nhttp = \"http://127.0.0.1/\"\nexpect_status = [700]",
     "readiness.checks[0].expect_status[0]: Input should be less than or equal to 599"),
    ("[[readiness.checks]]\ntcp = \"127.0.0.1:80\"\ntimeout_seconds = 61",
     "readiness.checks[0].timeout_seconds: Input should be less than or equal to 60"),
    ("mode = \"oneshot\"\n[[readiness.checks]]\ntcp = \"127.0.0.1:80\"",
     "(top level): mode \"oneshot\": [readiness] needs daemon mode"),
])
def test_invalid_sections_are_one_line_exit_78(tmp_path: Path, text: str, line: str) -> None:
    assert error_of(tmp_path, text).startswith(line)


def test_the_cache_rebuilds_the_section_with_its_rules(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[readiness]\nunits = [\"app.service\"]\n[[readiness.checks]]\n"
                    "tcp = \"127.0.0.1:5432\"\n")
    monkeypatch.setenv("AGENT_CONFIG_CACHE", str(tmp_path / "cache.json"))
    validated = cache.load(str(path))
    cached = cache.load(str(path))
    assert type(cached.readiness).__name__ == "ReadinessConfig"
    assert type(cached.readiness) is type(validated.readiness)  # one class, either way
    assert cached.readiness == validated.readiness
    assert cached.readiness.enabled and cached.readiness.units == ["app.service"]
    assert cached.readiness.checks[0].label == "tcp 127.0.0.1:5432"
    assert cached.readiness.checks[0].kind == "tcp"
