"""Tuning: plan and apply of every output kind, sysctls, templates, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from unitcheck import assert_systemd_accepts

from agent.config.loader import Config, load
from agent.errors import ConfigError, TuningError
from agent.instance.facts import nominal_facts
from agent.service import dropins, envfile, notify
from agent.tuning.config import TuningConfig, TuningDropin, TuningFile, TuningTemplate
from agent.tuning.tuner import apply, plan, summary, sysctl_path

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3


# --- plan and apply ----------------------------------------------------------------


def _config(tmp_path: Path, **extra: str) -> TuningConfig:
    return TuningConfig(files=[
        TuningFile(path=str(tmp_path / "out/app.env"), values={
            "HEAP_MB": "int(clamp(memory_mib * 0.75, 256, 31744))",
            "WORKERS": "vcpus * 2 + 1",
            "RATIO": "memory_mib / 3",
            "FAMILY": "family",
            **extra,
        }),
        TuningFile(path=str(tmp_path / "out/app.json"), format="json", mode=0o600, values={
            "workers": "vcpus * 2 + 1", "heap": "memory_mib * 0.75", "arch": "arch",
            "ratio": "0.5 if arch == \"arm64\" else 0.25",
        }),
    ])


# Neither file has a share: memory_mib in their values is the machine's (16384 MiB on an
# m5.xlarge), whatever the memory budget.


def test_plan_computes_and_writes_nothing(tmp_path: Path) -> None:
    result = plan(_config(tmp_path), nominal_facts("m5.xlarge"))
    assert not (tmp_path / "out").exists()
    env, js = result.outputs
    assert env.content == (b'HEAP_MB="12288"\nWORKERS="9"\nRATIO="5461.333333333333"\n'
                           b'FAMILY="m5"\n')
    assert env.mode == 0o644 and js.mode == 0o600
    assert [v.name for v in env.values] == ["HEAP_MB", "WORKERS", "RATIO", "FAMILY"]
    heap = env.values[0]
    assert heap.expression == "int(clamp(memory_mib * 0.75, 256, 31744))"
    assert heap.explanation.substituted == "int(clamp(16384 * 0.75, 256, 31744))"
    assert [str(c) for c in heap.explanation.clamps] == [
        "clamp(12288.0, 256, 31744) = 12288.0 (within bounds)"]
    assert js.content == (b'{\n  "arch": "x86_64",\n  "heap": 12288,\n  "ratio": 0.25,\n'
                          b'  "workers": 9\n}\n')
    assert result.facts.instance_type == "m5.xlarge"


def test_env_output_reads_back_exactly(tmp_path: Path) -> None:
    cfg = _config(tmp_path, QUOTED='"a $b `c` \\\\ d"')
    records = apply(plan(cfg, nominal_facts("r6g.16xlarge"))).records
    written = envfile.parse((tmp_path / "out/app.env").read_text())
    assert written == records[0]["values"]
    # the machine's 524288 MiB (neither file has a share)
    assert written == {"HEAP_MB": "31744", "WORKERS": "129", "RATIO": "174762.66666666666",
                       "FAMILY": "r6g", "QUOTED": 'a $b `c` \\ d'}
    assert json.loads((tmp_path / "out/app.json").read_text()) == {
        "arch": "arm64", "heap": 393216, "ratio": 0.5, "workers": 129}


def test_apply_writes_modes_and_reports_changes(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        records = apply(plan(_config(tmp_path), nominal_facts("m5.xlarge"))).records
    finally:
        os.umask(old_umask)
    env_path, json_path = tmp_path / "out/app.env", tmp_path / "out/app.json"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o600
    assert records == [
        {"kind": "file", "path": str(env_path), "format": "env", "changed": True,
         "values": {"HEAP_MB": "12288", "WORKERS": "9", "RATIO": "5461.333333333333",
                    "FAMILY": "m5"}},
        {"kind": "file", "path": str(json_path), "format": "json", "changed": True,
         "values": {"workers": "9", "heap": "12288", "arch": "x86_64", "ratio": "0.25"}},
    ]
    json.dumps(records)  # JSON-able, for state.json
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["app.env", "app.json"]

    inode = env_path.stat().st_ino
    again = apply(plan(_config(tmp_path), nominal_facts("m5.xlarge"))).records
    assert [r["changed"] for r in again] == [False, False]
    assert env_path.stat().st_ino == inode  # unchanged content: left alone

    json_path.chmod(0o666)
    again = apply(plan(_config(tmp_path), nominal_facts("m5.xlarge"))).records
    assert [r["changed"] for r in again] == [False, False]
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o600  # drifted mode restored


def test_apply_replaces_atomically(tmp_path: Path) -> None:
    apply(plan(_config(tmp_path), nominal_facts("m5.xlarge")))
    env_path = tmp_path / "out/app.env"
    with env_path.open("rb") as reader:  # a reader of the old file keeps the old content
        records = apply(plan(_config(tmp_path), nominal_facts("t3.nano"))).records
        assert reader.read() == (b'HEAP_MB="12288"\nWORKERS="9"\nRATIO="5461.333333333333"\n'
                                 b'FAMILY="m5"\n')
    assert [r["changed"] for r in records] == [True, True]
    assert envfile.parse(env_path.read_text())["HEAP_MB"] == "384"  # 512 * 0.75
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["app.env", "app.json"]


def test_failing_value_writes_nothing(tmp_path: Path) -> None:
    cfg = TuningConfig(files=[
        TuningFile(path=str(tmp_path / "first.env"), values={"OK": "vcpus"}),
        TuningFile(path=str(tmp_path / "second.env"),
                   values={"FINE": "1", "PER_CPU": "memory_mib // (vcpus - 4)"}),
    ])
    with pytest.raises(TuningError) as caught:
        apply(plan(cfg, nominal_facts("m5.xlarge")))
    assert str(caught.value) == (f"tuning {tmp_path / 'second.env'}: PER_CPU: division by zero "
                                 "in memory_mib // (vcpus - 4)")
    assert list(tmp_path.iterdir()) == []
    # the machine's 32768 MiB, // 4
    assert plan(cfg, nominal_facts("m5.2xlarge")).outputs[1].values[1].explanation.result == 8192


def test_value_the_env_file_cannot_hold(tmp_path: Path) -> None:
    cfg = TuningConfig(files=[TuningFile(path=str(tmp_path / "a.env"),
                                         values={"BAD": '"x\\x01"'})])
    with pytest.raises(TuningError, match=r"a\.env: BAD: value has control characters"):
        plan(cfg, nominal_facts("m5.xlarge"))


def test_two_outputs_on_one_path_rejected_at_load(tmp_path: Path) -> None:
    entry = TuningFile(path=str(tmp_path / "a.env"), values={"A": "1"})
    with pytest.raises(ValueError, match=r"files\[1\] and files\[0\] both write"):
        TuningConfig(files=[entry, entry])


def test_new_directories_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    cfg = TuningConfig(files=[TuningFile(path=str(tmp_path / "a/b/c.env"), values={"A": "1"})])
    old_umask = os.umask(0o077)  # as under the unit's UMask=0077
    try:
        apply(plan(cfg, nominal_facts("m5.xlarge")))
    finally:
        os.umask(old_umask)
    assert [stat.S_IMODE((tmp_path / d).stat().st_mode) for d in ("a", "a/b")] == [0o755] * 2


def test_write_failure_is_a_tuning_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")
    cfg = TuningConfig(files=[TuningFile(path=str(tmp_path / "blocker/a.env"),
                                         values={"A": "1"})])
    with pytest.raises(TuningError, match=r"blocker/a\.env: cannot write"):
        apply(plan(cfg, nominal_facts("m5.xlarge")))


def test_no_outputs() -> None:
    assert plan(TuningConfig(), nominal_facts("m5.xlarge")).outputs == []
    assert apply(plan(TuningConfig(), nominal_facts("m5.xlarge"))).records == []


@pytest.mark.integration
def test_tuning_imports_nothing_heavy() -> None:
    code = ("import sys, agent.tuning.tuner; from agent.instance.facts import nominal_facts; "
            "nominal_facts('m5.xlarge'); "
            "print(','.join(m for m in ('boto3', 'botocore', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


@pytest.mark.integration
def test_profiles_and_the_budget_are_loaded_only_for_entries_that_use_them(
        tmp_path: Path) -> None:
    """A boot's configuration comes from the cache, without the schema (which loads both)."""
    code = f"""
import sys, agent
from agent.instance.facts import nominal_facts
from agent.tuning.tuner import plan
from agent.tuning.config import TuningConfig, TuningFile
files = TuningConfig(files=[TuningFile(path={str(tmp_path / "a.env")!r}, values={{"A": "vcpus"}})])
sysctl = TuningConfig(sysctl={{"vm.swappiness": "10"}})
for name in ("profiles", "budget"):
    sys.modules.pop("agent." + name, None), agent.__dict__.pop(name, None)
loaded = lambda: sorted(m for m in ("agent.tuning.profiles", "agent.tuning.budget")
                        if m in sys.modules)
plan(files, nominal_facts("m5.xlarge"))
print(loaded())
plan(sysctl, nominal_facts("m5.xlarge"), sysctl_root={str(tmp_path)!r})
print(loaded())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines() == ["[]", "['agent.tuning.profiles']"]


# --- every output kind, from a config file -----------------------------------------------


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load(str(path))


def _tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    """A fake /proc/sys with two settings."""
    root = tmp_path / "sys"
    (root / "net/core").mkdir(parents=True)
    (root / "net/core/somaxconn").write_text("4096\n")
    (root / "vm").mkdir()
    (root / "vm/max_map_count").write_text("65530\n")
    return root


@pytest.fixture
def reloads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count daemon-reloads instead of running systemctl."""
    calls: list[int] = []
    monkeypatch.setattr(dropins, "daemon_reload", lambda: calls.append(1) or "")
    return calls


ALL_KINDS = """
[tuning]
unit_dir = "{out}/units"
history_file = ""

[tuning.sysctl]
"net.core.somaxconn" = "clamp(vcpus * 2048, 4096, 65535)"
"vm.max_map_count" = "262144"

[[tuning.profiles]]
use = "jvm"
path = "{out}/jvm.env"
[tuning.profiles.overrides]
JVM_THREADS = "100"

[[tuning.profiles]]
use = "postgres"

[[tuning.dropins]]
unit = "app.service"
[tuning.dropins.service]
MemoryMax = "memory_mib * 0.9"
MemoryHigh = "memory_mib * 0.8"
CPUQuota = "vcpus * 100"
TasksMax = '"infinity"'
LimitNOFILE = "65536"
Nice = "-5"
[tuning.dropins.service.Environment]
HEAP_MB = "int(memory_mib * 0.5)"
ODD = '"50% \\"quoted\\" back\\\\slash $HOME"'

[[tuning.templates]]
source = "{tmp}/app.conf.in"
path = "{out}/app.conf"
mode = "0640"
"""
TEMPLATE = "heap=${JVM_HEAP_MB}m shared=${PG_SHARED_BUFFERS_KB}kB on $instance_type $$HOME\n"


def _all_kinds(tmp_path: Path) -> Config:
    (tmp_path / "app.conf.in").write_text(TEMPLATE)
    return _load(tmp_path, ALL_KINDS.format(out=tmp_path / "out", tmp=tmp_path))


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_every_output_kind(tmp_path: Path, sysroot: Path, reloads: list[int]) -> None:
    cfg = _all_kinds(tmp_path)
    facts = nominal_facts("m5.xlarge")
    applied = apply(plan(cfg.tuning, facts, sysctl_root=str(sysroot)))
    out = tmp_path / "out"
    dropin = out / "units/app.service.d/60-agent-tuning.conf"
    assert dropin.read_text() == (
        "# Written by the instance boot agent ([[tuning.dropins]]); do not edit.\n"
        "[Service]\nMemoryMax=14745M\nMemoryHigh=13107M\nCPUQuota=400%\nTasksMax=infinity\n"
        "LimitNOFILE=65536\nNice=-5\n"
        'Environment="HEAP_MB=8192" "ODD=50%% \\"quoted\\" back\\\\slash $HOME"\n')
    # jvm and postgres share the budget: 7372 MiB each; heap min(7372 - 447 - 738, 5529) -> 5528
    assert (out / "app.conf").read_text() == (
        "heap=5528m shared=1887232kB on m5.xlarge $HOME\n")
    assert stat.S_IMODE((out / "app.conf").stat().st_mode) == 0o640
    jvm = envfile.parse((out / "jvm.env").read_text())
    assert (jvm["JVM_THREADS"], jvm["JVM_NONHEAP_MB"], jvm["JVM_HEAP_MB"]) == ("100", "447",
                                                                             "5528")
    assert (sysroot / "net/core/somaxconn").read_text() == "8192"
    assert (sysroot / "vm/max_map_count").read_text() == "262144"
    records = {r["key"] if r["kind"] == "sysctl" else r["path"]: r for r in applied.records}
    assert records["net.core.somaxconn"] == {"kind": "sysctl", "key": "net.core.somaxconn",
                                             "previous": "4096", "value": "8192",
                                             "changed": True}
    assert records[str(dropin)]["values"]["Environment.HEAP_MB"] == "8192"
    assert records[str(dropin)]["values"]["MemoryMax"] == "14745M"
    assert records[str(out / "app.conf")]["values"] == {
        "JVM_HEAP_MB": "5528", "PG_SHARED_BUFFERS_KB": "1887232", "instance_type": "m5.xlarge"}
    assert records[""]["profile"] == "postgres" and records[""]["changed"] is False
    assert [r["kind"] for r in applied.records] == [
        "profile", "profile", "dropin", "template", "sysctl", "sysctl"]
    assert applied.warnings == [] and reloads == [1]
    assert summary(applied.records) == (
        "35 values in 2 profiles, 1 drop-in, 1 template, 2 sysctls")  # 10 + 15 + 8 + 2
    json.dumps(applied.records)

    again = apply(plan(cfg.tuning, facts, sysctl_root=str(sysroot)),
                  previous=applied.records)
    assert [r["changed"] for r in again.records] == [False] * 6
    assert reloads == [1]  # nothing changed: no daemon-reload
    assert {r["key"]: r["previous"] for r in again.records if r["kind"] == "sysctl"} == {
        "net.core.somaxconn": "4096", "vm.max_map_count": "65530"}  # from before the agent
    assert_systemd_accepts(out / "units")


@pytest.mark.integration
def test_dropin_passes_systemd_analyze_verify(tmp_path: Path, reloads: list[int]) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    cfg = _all_kinds(tmp_path)
    apply(plan(dataclasses.replace(cfg.tuning, sysctl={}), nominal_facts("r6g.16xlarge")))
    units = tmp_path / "out/units"
    (units / "app.service").write_text("[Unit]\nDescription=app\n[Service]\n"
                                       "ExecStart=/bin/true\n")
    proc = subprocess.run(["systemd-analyze", "verify", "app.service"], capture_output=True,
                          text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
                          cwd=units, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # verify warns (and still exits 0) on bad keys
    # and it would have complained about a key or value systemd does not take:
    (units / "app.service.d/70-test.conf").write_text("[Service]\nMemoryMaxx=1\n")
    proc = subprocess.run(["systemd-analyze", "verify", "app.service"], capture_output=True,
                          text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
                          cwd=units, check=False)
    assert "Unknown key" in proc.stderr


@pytest.mark.integration  # starts systemd-analyze or a systemctl
def test_stale_dropin_is_removed(tmp_path: Path, reloads: list[int]) -> None:
    units = tmp_path / "units"
    stale = units / "old.service.d/60-agent-tuning.conf"
    stale.parent.mkdir(parents=True)
    stale.write_text("[Service]\nMemoryMax=1M\n")
    other = units / "old.service.d/10-admin.conf"
    other.write_text("[Service]\n")
    cfg = TuningConfig(unit_dir=str(units), dropins=[
        TuningDropin(unit="app.service", service={"TasksMax": "vcpus * 512"})])
    tuning_plan = plan(cfg, nominal_facts("m5.xlarge"))
    assert [item.path for item in tuning_plan.stale] == [str(stale)]
    records = apply(tuning_plan).records
    assert not stale.exists() and other.exists()
    assert records[-1] == {"kind": "dropin", "unit": "old.service", "path": str(stale),
                           "format": "dropin", "values": {}, "changed": True, "removed": True}
    assert (units / "app.service.d/60-agent-tuning.conf").read_text().endswith(
        "TasksMax=2048\n")
    assert reloads == [1]
    assert_systemd_accepts(units)


def test_no_dropin_in_run_systemd_without_systemd(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "systemd_running", lambda: False)
    cfg = TuningConfig(dropins=[TuningDropin(unit="app.service", service={"Nice": "5"})],
                       files=[TuningFile(path=str(tmp_path / "a.env"), values={"A": "1"})])
    applied = apply(plan(cfg, nominal_facts("m5.xlarge")))
    assert (tmp_path / "a.env").exists()
    assert not Path("/run/systemd/system/app.service.d/60-agent-tuning.conf").exists()
    assert applied.warnings == ["drop-in /run/systemd/system/app.service.d/"
                                "60-agent-tuning.conf not written: systemd is not running"]
    assert [r["changed"] for r in applied.records] == [True, False]


def test_daemon_reload_problem_is_a_warning(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropins, "daemon_reload", lambda: "systemctl daemon-reload exited 1")
    cfg = TuningConfig(unit_dir=str(tmp_path), dropins=[
        TuningDropin(unit="app.service", service={"CPUWeight": "vcpus * 10"})])
    applied = apply(plan(cfg, nominal_facts("m5.xlarge")))
    assert applied.warnings == ["drop-ins written but systemctl daemon-reload exited 1"]


def test_sysctl_paths() -> None:
    assert sysctl_path("net.core.somaxconn") == "/proc/sys/net/core/somaxconn"
    assert sysctl_path("net.ipv4.conf.eth0/100.rp_filter", "/r") == (
        "/r/net/ipv4/conf/eth0.100/rp_filter")


def test_missing_sysctl_fails_and_writes_nothing(tmp_path: Path, sysroot: Path) -> None:
    cfg = TuningConfig(files=[TuningFile(path=str(tmp_path / "out/a.env"), values={"A": "1"})],
                       sysctl={"net.core.somaxconn": "8192", "net.core.nope": "1"})
    with pytest.raises(TuningError) as caught:
        apply(plan(cfg, nominal_facts("m5.xlarge"), sysctl_root=str(sysroot)))
    assert str(caught.value) == (f"tuning sysctl net.core.nope: no such kernel setting here "
                                 f"({sysroot}/net/core/nope)")
    assert not (tmp_path / "out").exists()
    assert (sysroot / "net/core/somaxconn").read_text() == "4096\n"


def test_failing_sysctl_write_undoes_the_others(tmp_path: Path, sysroot: Path) -> None:
    (sysroot / "vm/max_map_count").unlink()
    (sysroot / "vm/max_map_count").mkdir()  # writing it fails (EISDIR), reading gives None...
    cfg = TuningConfig(files=[TuningFile(path=str(tmp_path / "out/a.env"), values={"A": "1"})],
                       sysctl={"net.core.somaxconn": "8192", "vm.max_map_count": "262144"})
    tuning_plan = plan(cfg, nominal_facts("m5.xlarge"), sysctl_root=str(sysroot))
    broken = dataclasses.replace(tuning_plan.sysctls[1], current="65530")  # ...so pretend
    tuning_plan = dataclasses.replace(tuning_plan, sysctls=[tuning_plan.sysctls[0], broken])
    with pytest.raises(TuningError, match=r"^tuning sysctl vm\.max_map_count: cannot write "
                                          r"262144: Is a directory$"):
        apply(tuning_plan)
    assert (sysroot / "net/core/somaxconn").read_text() == "4096"  # put back
    assert not (tmp_path / "out").exists()  # the staged file is gone, and its directory


NETNS_SNIPPET = """
import json
from agent.instance.facts import nominal_facts
from agent.tuning.tuner import apply, plan
from agent.tuning.config import TuningConfig
def read():
    with open("/proc/sys/net/core/somaxconn") as f:
        return f.read().strip()
before = read()
cfg = TuningConfig(sysctl={"net.core.somaxconn": "vcpus * 1000 + 7"})
applied = apply(plan(cfg, nominal_facts("m5.xlarge")))
print(json.dumps({"before": before, "after": read(), "records": applied.records}))
"""


@pytest.mark.integration
def test_real_sysctl_in_a_private_network_namespace() -> None:
    """net.core.somaxconn is per network namespace: set it in a new one, the host's stays."""
    host = Path("/proc/sys/net/core/somaxconn").read_text()
    try:
        proc = subprocess.run(["unshare", "--net", sys.executable, "-c", NETNS_SNIPPET],
                              capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no network namespaces here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["after"] == "4007"
    assert result["records"] == [{"kind": "sysctl", "key": "net.core.somaxconn",
                                  "previous": result["before"], "value": "4007",
                                  "changed": True}]
    assert Path("/proc/sys/net/core/somaxconn").read_text() == host


# --- templates ---------------------------------------------------------------------------


def _template_config(tmp_path: Path, source: str) -> TuningConfig:
    return TuningConfig(
        files=[TuningFile(path=str(tmp_path / "a.env"), values={"HEAP_MB": "memory_mib // 2"})],
        templates=[TuningTemplate(source=str(tmp_path / "t.in"), path=str(tmp_path / "t.out"))],
    ) if source == "" else TuningConfig(
        files=[TuningFile(path=str(tmp_path / "a.env"), values={"HEAP_MB": "memory_mib // 2"})],
        templates=[TuningTemplate(source=source, path=str(tmp_path / "t.out"))])


def test_template_checked_at_run_when_absent_at_load(tmp_path: Path) -> None:
    cfg = _template_config(tmp_path, "")  # t.in does not exist yet: not checked at load
    source = tmp_path / "t.in"
    label = f"tuning template {source} -> {tmp_path / 't.out'}"
    with pytest.raises(TuningError) as caught:
        plan(cfg, nominal_facts("m5.xlarge"))
    assert str(caught.value) == f"{label}: cannot read: No such file or directory"
    source.write_text("heap ${HEAP_MB} ${HEAP_MBB}\n")
    with pytest.raises(TuningError) as caught:
        apply(plan(cfg, nominal_facts("m5.xlarge")))
    assert str(caught.value) == f"{label}: unknown variable ${{HEAP_MBB}} (did you mean 'HEAP_MB'?)"
    source.write_text("cost $5\n")
    with pytest.raises(TuningError) as caught:
        plan(cfg, nominal_facts("m5.xlarge"))
    assert str(caught.value) == (f"{label}: invalid placeholder '$5' at line 1, column 6 "
                                 "(write $$ for a literal $)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.in"]  # nothing written
    source.write_text("heap ${HEAP_MB}m, $vcpus CPUs, $$5\n")
    apply(plan(cfg, nominal_facts("m5.xlarge")))
    assert (tmp_path / "t.out").read_text() == "heap 8192m, 4 CPUs, $5\n"  # 16384 // 2


def test_template_ambiguous_name(tmp_path: Path) -> None:
    source = tmp_path / "t.in"
    source.write_text("${HEAP_MB}\n")
    two = [TuningFile(path=str(tmp_path / "a.env"), values={"HEAP_MB": "memory_mib // 2"}),
           TuningFile(path=str(tmp_path / "b.env"), values={"HEAP_MB": "memory_mib // 4"})]
    with pytest.raises(ValueError, match=r"templates\[0\] .*t\.in: \$\{HEAP_MB\} is ambiguous: 2 "
                                         "outputs define it differently"):
        TuningConfig(files=two, templates=[TuningTemplate(source=str(source),
                                                          path=str(tmp_path / "t.out"))])
    same = [two[0], dataclasses.replace(two[0], path=str(tmp_path / "b.env"))]
    cfg = TuningConfig(files=same, templates=[TuningTemplate(source=str(source),
                                                            path=str(tmp_path / "t.out"))])
    assert plan(cfg, nominal_facts("m5.xlarge")).outputs[2].content == b"8192\n"  # 16384 // 2


# --- a value failing at run writes nothing -----------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    ('[[tuning.files]]\npath = "{out}/z.env"\n[tuning.files.values]\nX = "1 // (vcpus - 4)"',
     "tuning {out}/z.env: X: division by zero in 1 // (vcpus - 4)"),
    ('[[tuning.profiles]]\nuse = "node"\npath = "{out}/z.env"\n[tuning.profiles.overrides]\n'
     'NODE_MAX_OLD_SPACE_MB = "memory_mib % (vcpus - 4)"',
     "tuning profile node -> {out}/z.env: NODE_MAX_OLD_SPACE_MB: modulo by zero in "
     "memory_mib % (vcpus - 4)"),
    ('[[tuning.dropins]]\nunit = "z.service"\n[tuning.dropins.service]\n'
     'MemoryMax = "memory_mib - 20000"',
     "tuning drop-in z.service: MemoryMax: must be at least 0 (MiB), got -3616"),
    ('[[tuning.dropins]]\nunit = "z.service"\n[tuning.dropins.service]\n'
     'MemoryMax = \'"small" if vcpus == 4 else 1\'',
     "tuning drop-in z.service: MemoryMax: needs a number (MiB) or \"infinity\", got 'small'"),
    ('[tuning.sysctl]\n"kernel.pid_max" = \'"many" if vcpus == 4 else 1\'',
     "tuning sysctl kernel.pid_max: needs a number, got 'many'"),
    ('[tuning.sysctl]\n"kernel.pid_max" = "2 ** (vcpus * 20)"',
     "tuning sysctl kernel.pid_max: exponent 80 is too large"),
])
def test_failing_value_of_any_kind_writes_nothing(tmp_path: Path, sysroot: Path,
                                                  section: str, message: str) -> None:
    out = tmp_path / "out"
    text = ALL_KINDS.format(out=out, tmp=tmp_path)
    if section.startswith("[tuning.sysctl]\n"):  # one more entry in the existing table
        text = text.replace("[tuning.sysctl]\n", section + "\n")
    else:
        text += "\n" + section.format(out=out) + "\n"
    cfg = _load(tmp_path, text)
    before = _tree_files(sysroot)
    (tmp_path / "app.conf.in").write_text(TEMPLATE)
    with pytest.raises(TuningError) as caught:
        apply(plan(cfg.tuning, nominal_facts("m5.xlarge"), sysctl_root=str(sysroot)))
    assert str(caught.value).startswith(message.format(out=out))
    assert "\n" not in str(caught.value)
    assert not out.exists()
    assert _tree_files(sysroot) == before


# --- bad input found at load: one line, exit 78 ------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ('[[tuning.files]]\npath = "/run/a.env"\n[tuning.files.values]\nX = "vcpus +"',
     "tuning.files[0].values: X = 'vcpus +': syntax error at column 8 (at the end)"),
    ('[[tuning.profiles]]\nuse = "jvmm"', "tuning.profiles[0].use: unknown profile 'jvmm' "
     "(did you mean 'jvm'? profiles: jvm, node, gunicorn, nginx, postgres, redis)"),
    ('[[tuning.profiles]]\nuse = "jvm"\n[tuning.profiles.overrides]\n'
     'JVM_HEAP_MB = "__import__(\'os\').system(\'x\')"',
     "tuning.profiles[0]: JVM_HEAP_MB = \"__import__('os').system('x')\": attribute access "
     "is not allowed"),
    ('[[tuning.profiles]]\nuse = "jvm"\n[tuning.profiles.overrides]\nJVM_HEAP_MB = "1 / 0"',
     "tuning.profiles[0]: JVM_HEAP_MB = '1 / 0': division by zero in 1 / 0"),
    ('[[tuning.dropins]]\nunit = "app.service"\n[tuning.dropins.service]\nMemoryMaxx = "1"',
     "tuning.dropins[0].service: unknown [Service] key 'MemoryMaxx' (did you mean "
     "'MemoryMax'?)"),
    ('[[tuning.dropins]]\nunit = "app.service"\n[tuning.dropins.service]\n'
     'CPUQuota = \'"lots"\'', "tuning.dropins[0].service: CPUQuota = '\"lots\"': needs a "
     "number, not a string"),
    ('[[tuning.dropins]]\nunit = "app.service"\n[tuning.dropins.service]\nNice = "40"',
     "tuning.dropins[0].service: Nice = '40': must be from -20 to 19 (nice level), got 40"),
    ('[[tuning.dropins]]\nunit = "app.service"\n[tuning.dropins.service]\n'
     'MemoryMax = "lambda: 1"', "tuning.dropins[0].service: MemoryMax = 'lambda: 1': lambda "
     "is not allowed"),
    ('[[tuning.dropins]]\nunit = "app.socket"', "tuning.dropins[0].unit: 'app.socket' is not "
     "a service name"),
    ('[[tuning.dropins]]\nunit = "app.service"\n[tuning.dropins.service]\n'
     'Environment = "1"', "tuning.dropins[0].service: Environment is a table of NAME = "
     "expression"),
    ('[tuning.sysctl]\n"net.core.somaxconn" = \'"bbr"\'',
     "tuning.sysctl: net.core.somaxconn = '\"bbr\"': needs a number, not a string"),
    ('[tuning.sysctl]\n"net.core.somaxconn" = "2 ** 100"',
     "tuning.sysctl: net.core.somaxconn = '2 ** 100': exponent 100 is too large"),
    ('[tuning.sysctl]\n"net..x" = "1"', "tuning.sysctl: 'net..x' is not a kernel setting"),
    ('[tuning.sysctl]\n"../etc/passwd" = "1"', "tuning.sysctl: '../etc/passwd' is not a "
     "kernel setting"),
    ('[[tuning.templates]]\nsource = "{tmp}/t.in"\npath = "/run/t.out"',
     "tuning: templates[0] {tmp}/t.in: unknown variable ${{HEAP}} (did you mean 'HEAP_MB'?)"),
    ('[[tuning.templates]]\nsource = "{tmp}/t.in"\npath = "{tmp}/t.in"',
     "tuning: templates[0] reads '{tmp}/t.in', which templates[0] writes"),
])
def test_bad_input_at_load(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.in").write_text("heap ${HEAP}\n")
    body = text.format(tmp=tmp_path)
    if "templates" in body:
        body = ('[[tuning.profiles]]\nuse = "jvm"\n[[tuning.files]]\npath = "/run/a.env"\n'
                '[tuning.files.values]\nHEAP_MB = "1"\n' + body)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, body)
    assert str(caught.value).startswith(f"config {tmp_path / 'agent.toml'}: "
                                        f"{message.format(tmp=tmp_path)}"), str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 78
