"""The memory budget: the reserve, shares and equal parts, what fits, one-line errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from agent.config.loader import Config, load
from agent.config.validator import section
from agent.errors import ConfigError, TuningError
from agent.instance.facts import nominal_facts
from agent.instance.types import table
from agent.tuning.budget import Claim, split
from agent.tuning.config import TuningConfig, TuningFile, TuningProfile
from agent.tuning.profiles import PROFILES
from agent.tuning.tuner import TuningPlan, apply, plan


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load(str(path))


def _memory(result: TuningPlan) -> dict[str, int]:
    assert result.budget is not None
    return {p.claim.label: p.memory_mib for p in result.budget.portions}


def _values(result: TuningPlan, label: str) -> dict[str, str]:
    output = next(o for o in result.outputs if o.label == label)
    return {v.name: v.rendered for v in output.values}


# --- shares ------------------------------------------------------------------------------


def test_split() -> None:
    claims = [Claim("profiles[0]", "profile jvm", 0.6), Claim("profiles[1]", "profile node", None),
              Claim("files[0]", "file /a", None)]
    assert split(claims) == pytest.approx([0.6, 0.2, 0.2])
    assert split([Claim("profiles[0]", "profile jvm", None)]) == [1.0]
    assert split([Claim(f"profiles[{i}]", "p", s) for i, s in enumerate((0.1, 0.2, 0.7))]) == [
        0.1, 0.2, 0.7]  # 1.0000000000000002 is 1


def test_shares_above_one_name_the_key() -> None:
    claims = [Claim("profiles[0]", "profile jvm", 0.6), Claim("profiles[1]", "profile pg", 0.3),
              Claim("files[0]", "file /a", 0.2)]
    with pytest.raises(ValueError) as caught:
        split(claims)
    assert str(caught.value) == ("files[0].share: the shares add up to 1.1 (profiles[0] 0.6, "
                                 "profiles[1] 0.3, files[0] 0.2), more than the whole budget (1)")


def test_nothing_left_for_an_equal_part() -> None:
    with pytest.raises(ValueError) as caught:
        split([Claim("profiles[0]", "profile jvm", 1.0), Claim("profiles[1]", "profile redis",
                                                               None)])
    assert str(caught.value) == ("profiles[1] (profile redis) has no share, and the shares "
                                 "given add up to 1: nothing is left for it")


@pytest.mark.parametrize(("text", "message"), [
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = 0.7\n[[tuning.profiles]]\nuse = "postgres"\n'
     'share = 0.5\n', "tuning: profiles[1].share: the shares add up to 1.2 (profiles[0] 0.7, "
     "profiles[1] 0.5), more than the whole budget (1)"),
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = 0.7\n[[tuning.files]]\npath = "/run/a.env"\n'
     'share = 0.4\n', "tuning: files[0].share: the shares add up to 1.1 (profiles[0] 0.7, "
     "files[0] 0.4), more than the whole budget (1)"),
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = 1\n[[tuning.profiles]]\nuse = "redis"\n',
     "tuning: profiles[1] (profile redis) has no share, and the shares given add up to 1: "
     "nothing is left for it"),
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = 0\n',
     "tuning.profiles[0].share: Input should be greater than 0"),
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = 1.5\n',
     "tuning.profiles[0].share: Input should be less than or equal to 1"),
    ('[[tuning.profiles]]\nuse = "jvm"\nshare = true\n',
     "tuning.profiles[0].share: must be a number above 0 and at most 1, such as 0.5"),
    ('[[tuning.files]]\npath = "/run/a.env"\nshare = "half"\n',
     "tuning.files[0].share: must be a number above 0 and at most 1"),
    ('[[tuning.profiles]]\nuse = "redis"\noptions = { persistance = true }\n',
     "tuning.profiles[0]: profile redis has no option 'persistance' (did you mean "
     "'persistence'? options: persistence)"),
    ('[[tuning.profiles]]\nuse = "redis"\noptions = { persistence = "yes" }\n',
     "tuning.profiles[0].options.persistence: Input should be a valid boolean"),
    ('[[tuning.profiles]]\nuse = "nginx"\noptions = { persistence = true }\n',
     "tuning.profiles[0]: profile nginx has no option 'persistence' (it takes none)"),
    ('[tuning.budget]\nreserve_mib = "\'lots\'"\n',
     "tuning.budget.reserve_mib: reserve_mib = \"'lots'\": needs a number, not a string"),
    ('[tuning.budget]\nreserve_mib = "-1"\n',
     "tuning.budget.reserve_mib: reserve_mib = '-1': must be at least 0 (MiB), got -1"),
    ('[tuning.budget]\nreserve_mib = "memory_mb / 10"\n',
     "tuning.budget.reserve_mib: reserve_mib = 'memory_mb / 10': unknown name 'memory_mb' "
     "(did you mean 'memory_mib'?)"),
    ('[tuning.budget]\nreserve = "1"\n', "tuning.budget.reserve: unknown key (did you mean "
     "'reserve_mib'?)"),
    ('[[tuning.profiles]]\nuse = "postgres"\noptions = { reserve_huge_pages = true }\n'
     '[tuning.sysctl]\n"vm.nr_hugepages" = "100"\n', "tuning: profiles[0]: reserve_huge_pages "
     "sets vm.nr_hugepages, which [tuning.sysctl] sets too"),
    ('[[tuning.profiles]]\nuse = "postgres"\noptions = { reserve_huge_pages = true }\n'
     'share = 0.5\n[[tuning.profiles]]\nuse = "postgres"\npath = "/run/b.env"\n'
     'options = { reserve_huge_pages = true }\n', "tuning: profiles[1]: profiles[0] already "
     "sets vm.nr_hugepages (reserve_huge_pages): one profile may"),
])
def test_bad_budget_at_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(f"config {tmp_path / 'agent.toml'}: {message}"), (
        str(caught.value))
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 78


# --- portions ----------------------------------------------------------------------------


def test_default_reserve_applies_without_a_budget_section() -> None:
    cfg = TuningConfig(profiles=[TuningProfile(use="node")])
    result = plan(cfg, nominal_facts("m5.xlarge"))
    assert result.budget is not None
    assert (result.budget.memory_mib, result.budget.reserve_mib) == (16384, 1639)  # 1638.4 up
    assert _memory(result) == {"profile node": 14745}
    assert _values(result, "profile node")["NODE_MAX_OLD_SPACE_MB"] == "11058"  # 75%
    # the reserve's bounds: at least 256 (a t3.nano keeps half), at most 4096
    assert _memory(plan(cfg, nominal_facts("t3.nano"))) == {"profile node": 256}
    assert _memory(plan(cfg, nominal_facts("r6g.16xlarge"))) == {"profile node": 520192}


def test_reserve_is_an_expression_over_the_machine() -> None:
    cfg = section(TuningConfig, **{"budget": {"reserve_mib": "1024 if vcpus < 8 else 2048"},
                                       "profiles": [{"use": "redis"}]})
    assert _memory(plan(cfg, nominal_facts("m5.xlarge"))) == {"profile redis": 15360}
    assert _memory(plan(cfg, nominal_facts("m5.2xlarge"))) == {"profile redis": 30720}
    none = section(TuningConfig, **{"budget": {"reserve_mib": "0"},
                                        "profiles": [{"use": "redis"}]})
    assert _memory(plan(none, nominal_facts("m5.xlarge"))) == {"profile redis": 16384}


def test_shares_and_equal_parts() -> None:
    cfg = TuningConfig(
        profiles=[TuningProfile(use="jvm", share=0.5), TuningProfile(use="postgres"),
                  TuningProfile(use="nginx"), TuningProfile(use="redis", path="/run/r.env")],
        files=[TuningFile(path="/run/app.env", share=0.1, values={"POOL_MB": "memory_mib // 2"}),
               TuningFile(path="/run/tier.env", values={"BIG": "machine_memory_mib > 8192"})])
    result = plan(cfg, nominal_facts("m5.xlarge"))
    assert result.budget is not None
    # 14745 MiB: jvm 0.5, app.env 0.1; postgres and redis split the 0.4 left: 0.2 each
    assert _memory(result) == {"profile jvm": 7372, "profile postgres": 2949,
                               "profile redis -> /run/r.env": 2949, "file /run/app.env": 1474}
    assert result.budget.outside == ["profile nginx"]  # none of its values reads memory_mib
    assert _values(result, "/run/app.env") == {"POOL_MB": "737"}
    assert _values(result, "/run/tier.env") == {"BIG": "1"}  # not a member: reads the machine
    assert _values(result, "profile redis -> /run/r.env")["REDIS_MAXMEMORY_MB"] == "2211"  # 75%
    jvm = result.budget.portions[0]
    assert [(t.name, t.mib) for t in jvm.terms] == [("heap", 5528), ("non-heap", 597),
                                                    ("headroom", 738)]
    # every profile fits its portion, and together they fit the budget
    assert all(p.total_mib <= p.memory_mib for p in result.budget.portions)
    assert sum(p.memory_mib for p in result.budget.portions) <= result.budget.available_mib


def test_machine_memory_inside_a_profile_is_the_whole_machine() -> None:
    cfg = TuningConfig(profiles=[TuningProfile(use="jvm", share=0.25, overrides={
        "JVM_HEAP_MB": "min(machine_memory_mib // 8, memory_mib // 2)"})])
    result = plan(cfg, nominal_facts("m5.xlarge"))
    assert _memory(result) == {"profile jvm": 3686}
    assert _values(result, "profile jvm")["JVM_HEAP_MB"] == "1843"  # min(2048, 1843)


def test_files_without_memory_take_no_share() -> None:
    cfg = TuningConfig(files=[TuningFile(path="/run/a.env", values={"W": "vcpus * 2"})])
    assert plan(cfg, nominal_facts("m5.xlarge")).budget is None


@pytest.mark.parametrize("profiles", [[], [TuningProfile(use="node")],
                                      [TuningProfile(use="jvm", share=0.5)]])
@pytest.mark.parametrize("budget", [{}, {"reserve_mib": "2048"}])
def test_memory_mib_outside_a_member_is_the_machine(profiles: list[TuningProfile],
                                                     budget: dict[str, str]) -> None:
    cfg = section(TuningConfig, **{
        "budget": budget,
        "profiles": [{f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.init}
                     for p in profiles],
        "files": [{"path": "/run/app.env", "values": {"HEAP_MB": "int(memory_mib * 0.75)"}}]})
    result = plan(cfg, nominal_facts("m5.xlarge"))
    assert _values(result, "/run/app.env") == {"HEAP_MB": "12288"}  # 16384 * 0.75
    heap = next(o for o in result.outputs if o.label == "/run/app.env").values[0]
    assert heap.explanation.substituted == "int(16384 * 0.75)"  # what plan shows
    members = [p.claim.label for p in result.budget.portions] if result.budget else []
    assert "file /run/app.env" not in members


# --- a type too small: one line naming the type and the program ---------------------------


ALL = [TuningProfile(use="jvm", share=0.3), TuningProfile(use="postgres", share=0.25),
       TuningProfile(use="redis", share=0.15, options={"persistence": True}),
       TuningProfile(use="gunicorn", share=0.15), TuningProfile(use="node"),
       TuningProfile(use="nginx")]


def test_too_small_for_the_programs() -> None:
    with pytest.raises(TuningError) as caught:
        plan(TuningConfig(profiles=ALL), nominal_facts("t3.nano"))
    # 0.3 of 256 MiB is 76: the JVM's smallest non-heap (97 + 32 + 10 + 32) is 171 alone
    assert str(caught.value) == (
        "tuning: t3.nano is too small for profile jvm: its values add up to 219 MiB at the "
        "program's limits (heap 16 + non-heap 171 + headroom 32), above its 76 MiB (0.3 of "
        "256 MiB, 512 MiB less the 256 MiB reserve)")
    result = plan(TuningConfig(profiles=ALL), nominal_facts("t3.small"))
    assert result.budget is not None
    assert all(p.total_mib <= p.memory_mib for p in result.budget.portions)


def test_a_reserve_that_leaves_nothing() -> None:
    cfg = section(TuningConfig, **{"budget": {"reserve_mib": "600"},
                                       "profiles": [{"use": "redis"}]})
    with pytest.raises(TuningError) as caught:
        plan(cfg, nominal_facts("t3.nano"))
    assert str(caught.value) == ("tuning: t3.nano (512 MiB) is too small for profile redis: "
                                 "the 600 MiB reserve leaves 0 MiB")


def test_an_override_that_does_not_fit() -> None:
    cfg = TuningConfig(profiles=[TuningProfile(use="redis", overrides={
        "REDIS_MAXMEMORY_MB": "memory_mib"}, options={"persistence": True})])
    with pytest.raises(TuningError, match=r"^tuning: m5\.xlarge is too small for profile redis: "
                                          r"its values add up to 29490 MiB at the program's "
                                          r"limits \(maxmemory 14745 \+ fork copy-on-write "
                                          r"14745\), above its 14745 MiB"):
        plan(cfg, nominal_facts("m5.xlarge"))


def _distinct_sizes() -> list[str]:
    """One type for each (memory, vCPUs) of the bundled table: what the formulas read."""
    seen: dict[tuple[int, int], str] = {}
    for name, item in sorted(table().items()):
        seen.setdefault((item.memory_mib, item.vcpus), name)
    return list(seen.values())


@pytest.mark.parametrize("use", sorted(PROFILES))
def test_each_program_alone_fits_every_type(use: str) -> None:
    """From the smallest type in the table to the largest, with every option on and off."""
    options = [o.name for o in PROFILES[use].options]
    configs = [TuningConfig(profiles=[TuningProfile(use=use, options=dict.fromkeys(options, on))])
               for on in (False, True)]
    for instance_type in _distinct_sizes():
        for cfg in configs:
            result = plan(cfg, nominal_facts(instance_type))
            if result.budget is None:
                assert use == "nginx"
                continue
            (portion,) = result.budget.portions
            assert portion.memory_mib == result.budget.available_mib
            assert 0 < portion.total_mib <= portion.memory_mib, (instance_type, portion)


def test_all_programs_together_fit_from_a_small() -> None:
    """The six together (one config, four shares) fit every type of 2 GiB and more."""
    smallest = math.inf
    for instance_type in _distinct_sizes():
        facts = nominal_facts(instance_type)
        try:
            result = plan(TuningConfig(profiles=ALL), facts)
        except TuningError as exc:
            assert str(exc).startswith(f"tuning: {instance_type} is too small for profile ")
            assert facts.memory_mib < 2048, str(exc)
            continue
        smallest = min(smallest, facts.memory_mib)
        assert result.budget is not None
        assert all(p.total_mib <= p.memory_mib for p in result.budget.portions)
    assert smallest <= 2048


# --- huge pages --------------------------------------------------------------------------


def test_huge_pages_reservation_is_opt_in(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    (root / "vm").mkdir(parents=True)
    (root / "vm/nr_hugepages").write_text("0\n")
    cfg = TuningConfig(profiles=[TuningProfile(use="postgres", options={
        "reserve_huge_pages": True})])
    result = plan(cfg, nominal_facts("r6g.16xlarge"), sysctl_root=str(root))
    values = _values(result, "profile postgres")
    assert values["PG_HUGE_PAGES"] == "try"
    # the shared memory, in 2 MiB pages
    assert int(values["PG_NR_HUGEPAGES"]) == math.ceil(int(values["PG_SHARED_MEMORY_KB"]) / 2048)
    (sysctl,) = result.sysctls
    assert (sysctl.key, sysctl.value.rendered, sysctl.current) == (
        "vm.nr_hugepages", values["PG_NR_HUGEPAGES"], "0")
    records = apply(result).records
    assert (root / "vm/nr_hugepages").read_text() == values["PG_NR_HUGEPAGES"]
    assert records[-1]["key"] == "vm.nr_hugepages" and records[-1]["previous"] == "0"
    # huge_pages off (below a 32 GiB share): nothing to reserve, the setting is left alone
    assert plan(cfg, nominal_facts("m5.xlarge"), sysctl_root=str(root)).sysctls == []
    # without the option the value is offered, not set
    offered = TuningConfig(profiles=[TuningProfile(use="postgres")])
    assert plan(offered, nominal_facts("r6g.16xlarge"), sysctl_root=str(root)).sysctls == []


def test_reserve_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_TUNING__BUDGET__RESERVE_MIB", "1024")
    cfg = _load(tmp_path, '[[tuning.profiles]]\nuse = "redis"\n')
    assert _memory(plan(cfg.tuning, nominal_facts("m5.xlarge"))) == {"profile redis": 15360}
