"""The ``[tuning]`` section: its compiled forms, made once, and its rules."""

from __future__ import annotations

import ast
from pathlib import Path
from unittest import mock

import pytest

from agent.config import cache, loader
from agent.config.validator import section
from agent.errors import ConfigError
from agent.instance.facts import nominal_facts
from agent.schema.expr import Expression
from agent.tuning import tuner
from agent.tuning.config import TuningConfig, TuningDropin, TuningFile, variable_problem

TEXT = """
[[tuning.files]]
path = "{tmp}/app.env"
when = "vcpus >= 1 + 0 * 7311"
values = {{ HEAP_MB = "int(memory_mib * 0.5) + 0 * 7312", WORKERS = "vcpus + 7313 * 0" }}

[[tuning.profiles]]
use = "redis"
path = "{tmp}/redis.env"
overrides = {{ REDIS_MAXMEMORY_MB = "int(memory_mib * 0.25) + 0 * 7314" }}

[[tuning.dropins]]
unit = "app.service"
service = {{ LimitNOFILE = "65536 + 0 * 7315", Environment = {{ GOMAXPROCS = "vcpus+0*7316" }} }}

[tuning]
unit_dir = "{tmp}/units"
history_file = ""

[tuning.sysctl]
"net.core.somaxconn" = "1024 + 0 * 7317"

[tuning.budget]
reserve_mib = "512 + 0 * 7318"
"""
MARKS = [f"73{n}" for n in range(11, 19)]  # one per expression: its text is unique here


def test_an_expression_is_compiled_once_across_load_and_plan(tmp_path: Path) -> None:
    """Validation (its field rules and the compiled forms), the tag check of ``agent plan``
    and the plan itself parse each expression of the file once."""
    path = tmp_path / "agent.toml"
    path.write_text(TEXT.format(tmp=tmp_path))
    with mock.patch("ast.parse", wraps=ast.parse) as parse:
        cfg = loader.load(str(path))
        tuner.tag_uses(cfg.tuning)
        tuner.plan(cfg.tuning, nominal_facts("m5.xlarge"), sysctl_root=str(tmp_path))
        tuner.plan(cfg.tuning, nominal_facts("c5.large"), sysctl_root=str(tmp_path))
    parsed = [str(call.args[0]) for call in parse.call_args_list]
    assert {mark: sum(mark in text for text in parsed) for mark in MARKS} == dict.fromkeys(
        MARKS, 1)


def test_the_compiled_forms_are_held_by_their_entries(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT.format(tmp=tmp_path))
    cfg = loader.load(str(path)).tuning
    entry = cfg.files[0]
    assert isinstance(entry.condition, Expression) and entry.condition.text == entry.when
    assert {n: e.text for n, e in entry.expressions.items()} == entry.values
    assert cfg.budget.reserve.text == cfg.budget.reserve_mib
    assert cfg.sysctl_expressions["net.core.somaxconn"].text == "1024 + 0 * 7317"
    dropin = cfg.dropins[0].expressions
    assert isinstance(dropin["Environment"], dict)
    assert dropin["Environment"]["GOMAXPROCS"].names == {"vcpus"}
    assert [s.name for s in cfg.profiles[0].settings if s.overridden] == ["REDIS_MAXMEMORY_MB"]
    keys = [key for key, _ in cfg.expressions()]
    assert keys == ["tuning.files[0].when", "tuning.files[0].values.HEAP_MB",
                    "tuning.files[0].values.WORKERS",
                    "tuning.profiles[0].overrides.REDIS_MAXMEMORY_MB",
                    "tuning.dropins[0].service.LimitNOFILE",
                    "tuning.dropins[0].service.Environment", "tuning.sysctl.net.core.somaxconn",
                    "tuning.budget.reserve_mib"]


def test_a_cached_rebuild_is_the_validated_section(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(TEXT.format(tmp=tmp_path))
    validated = cache.load(str(path)).tuning
    rebuilt = cache.view(cache.dump(cache.load(str(path)))).tuning
    assert type(rebuilt) is TuningConfig and rebuilt == validated
    assert rebuilt.expressions() == validated.expressions()  # one compile, shared
    assert rebuilt.claims() == validated.claims()
    assert rebuilt.dropin_path("app.service") == str(
        tmp_path / "units/app.service.d/60-agent-tuning.conf")
    facts = nominal_facts("m5.xlarge")
    assert (tuner.plan(rebuilt, facts, sysctl_root=str(tmp_path)).outputs
            == tuner.plan(validated, facts, sysctl_root=str(tmp_path)).outputs)


def test_a_constructed_entry_compiles_its_values() -> None:
    """Built in code (as the cache does), an entry compiles its forms all the same."""
    entry = TuningFile(path="/run/a.env", values={"A": "vcpus * 2"})
    assert entry.expressions["A"].names == {"vcpus"} and entry.condition is None
    assert TuningDropin(unit="a.service", service={"Nice": "5"}).expressions["Nice"].kind == \
        "number"


@pytest.mark.parametrize(("name", "problem"), [
    ("HEAP_MB", ""),
    ("HEAP_M", "unknown variable ${HEAP_M} (did you mean 'HEAP_MB'?)"),
    ("WORKERS", "${WORKERS} is ambiguous: 2 outputs define it differently"),
])
def test_a_template_variable_is_known_and_defined_once(name: str, problem: str) -> None:
    known = {"HEAP_MB": {"expression 1"}, "WORKERS": {"expression 1", "expression 2"}}
    assert variable_problem(name, known) == problem


def test_one_profile_reserves_huge_pages() -> None:
    with pytest.raises(ValueError, match=r"profiles\[1\]: profiles\[0\] already sets "
                       "vm.nr_hugepages"):
        section(TuningConfig, profiles=[
            {"use": "postgres", "options": {"reserve_huge_pages": True}, "share": 0.5},
            {"use": "postgres", "path": "/run/b.env", "options": {"reserve_huge_pages": True}}])


def test_options_are_strict_booleans(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[[tuning.profiles]]\nuse = "postgres"\n'
                    'options = { reserve_huge_pages = "yes" }\n')
    with pytest.raises(ConfigError, match=r"tuning.profiles\[0\].options.reserve_huge_pages: "
                       "Input should be a valid boolean"):
        loader.load(str(path))
