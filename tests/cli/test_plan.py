"""`agent plan`: every output kind explained, what would change, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agentproc import clean_environment

from agent.cli import plan as plan_module
from agent.cli.plan import build, render
from agent.config import loader
from agent.instance.context import ContextError, LaunchContext
from agent.instance.facts import nominal_facts
from agent.secrets import handoff
from agent.secrets.publish import select
from agent.service import dropins
from agent.tuning.tuner import apply, plan

CONFIG = """
state_dir = "{tmp}/state"

[tuning]
unit_dir = "{tmp}/out/units"
history_file = "{tmp}/lib/instance.json"

[tuning.sysctl]
"net.core.somaxconn" = "clamp(vcpus * 2048, 4096, 65535)"

[[tuning.files]]
path = "{tmp}/out/app.env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"

[[tuning.profiles]]
use = "node"
path = "{tmp}/out/node.json"
format = "json"

[[tuning.dropins]]
unit = "app.service"
[tuning.dropins.service]
MemoryMax = "memory_mib * 0.9"
[tuning.dropins.service.Environment]
WORKERS = "vcpus * 2 + 1"

[[tuning.templates]]
source = "{tmp}/app.conf.in"
path = "{tmp}/out/app.conf"
"""


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    (tmp_path / "app.conf.in").write_text("heap ${HEAP_MB}m, ${NODE_OPTIONS}\n")
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    (root / "net/core").mkdir(parents=True)
    (root / "net/core/somaxconn").write_text("4096\n")
    return root


def _by_label(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {out["label"]: out for out in doc["tuning"]}


def test_plan_explains_every_output_kind(tmp_path: Path, cfg_path: Path, sysroot: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropins, "daemon_reload", lambda: "")
    cfg = loader.load(str(cfg_path))
    facts = nominal_facts("m5.xlarge")
    doc = build(cfg, facts, "m5.xlarge (nominal, offline)", sysctl_root=str(sysroot))
    out = tmp_path / "out"
    outputs = _by_label(doc)
    assert list(outputs) == [
        str(out / "app.env"), f"profile node -> {out / 'node.json'}", "drop-in app.service",
        f"template {tmp_path / 'app.conf.in'} -> {out / 'app.conf'}", "sysctl net.core.somaxconn"]
    assert {label: o["change"] for label, o in outputs.items()} == {
        str(out / "app.env"): "new", f"profile node -> {out / 'node.json'}": "new",
        "drop-in app.service": "new",
        f"template {tmp_path / 'app.conf.in'} -> {out / 'app.conf'}": "new",
        "sysctl net.core.somaxconn": "changed"}
    # the file has no share: its memory_mib is the machine's (16384), as in its explanation;
    # the node profile, the budget's one member, has 16384 - 1639 (the reserve)
    heap = outputs[str(out / "app.env")]["values"][0]
    assert heap == {
        "name": "HEAP_MB", "expression": "int(clamp(memory_mib * 0.75, 256, 31744))",
        "result": 12288, "rendered": "12288",
        "substituted": "int(clamp(16384 * 0.75, 256, 31744))",
        "clamps": ["clamp(12288.0, 256, 31744) = 12288.0 (within bounds)"], "current": None}
    node = outputs[f"profile node -> {out / 'node.json'}"]
    assert node["profile"] == "node"
    options = "--max-old-space-size=11058 --max-semi-space-size=16"
    assert [(v["name"], v["rendered"]) for v in node["values"]] == [
        ("NODE_MAX_OLD_SPACE_MB", "11058"), ("NODE_MAX_SEMI_SPACE_MB", "16"),
        ("NODE_OPTIONS", options)]
    assert node["values"][0]["note"].endswith("(accepted: >= 16)")
    dropin = outputs["drop-in app.service"]
    assert dropin["path"] == str(out / "units/app.service.d/60-agent-tuning.conf")
    assert [(v["name"], v["rendered"], v["substituted"]) for v in dropin["values"]] == [
        ("MemoryMax", "14745M", "16384 * 0.9"), ("Environment.WORKERS", "9", "4 * 2 + 1")]
    template = outputs[f"template {tmp_path / 'app.conf.in'} -> {out / 'app.conf'}"]
    assert [(v["name"], v["rendered"], v["origin"]) for v in template["values"]] == [
        ("HEAP_MB", "12288", str(out / "app.env")),
        ("NODE_OPTIONS", options, f"profile node -> {out / 'node.json'}")]
    sysctl = outputs["sysctl net.core.somaxconn"]
    assert (sysctl["values"][0]["rendered"], sysctl["values"][0]["current"]) == ("8192", "4096")
    budget = doc["budget"]
    assert (budget["memory_mib"], budget["reserve_mib"], budget["available_mib"]) == (
        16384, 1639, 14745)
    assert budget["reserve"]["substituted"] == "clamp(16384 * 0.1, 256, 4096)"
    assert [(m["label"], m["share"], m["equal_part"], m["memory_mib"], m["total_mib"])
            for m in budget["members"]] == [
        (f"profile node -> {out / 'node.json'}", 1.0, True, 14745, 11106)]  # 11058 + 3 x 16
    assert budget["members"][0]["terms"] == [
        {"name": "old space", "mib": 11058, "detail": ""},
        {"name": "young generation", "mib": 48, "detail": "3 x 16 semi-space"}]
    assert (budget["total_mib"], budget["outside"]) == (11106, [])
    json.dumps(doc)

    text = render(doc)
    for line in (f"  file {out / 'app.env'} (env, 0644): new",
                 f"  profile node -> {out / 'node.json'} (json, 0644): new",
                 f"  drop-in app.service -> {out}/units/app.service.d/60-agent-tuning.conf: new",
                 f"  template {tmp_path}/app.conf.in -> {out}/app.conf (0644): new",
                 f"  sysctl net.core.somaxconn ({sysroot}/net/core/somaxconn): changed",
                 "    net.core.somaxconn = 8192   (now 4096)",
                 "    ${HEAP_MB} = 12288   (from " + str(out / "app.env") + ")",
                 "      int(clamp(memory_mib * 0.75, 256, 31744))",
                 "      = int(clamp(16384 * 0.75, 256, 31744))",
                 "    MemoryMax = 14745M", "      memory_mib * 0.9", "      = 16384 * 0.9",
                 "budget: 16384 MiB, less a 1639 MiB reserve: 14745 MiB for the programs",
                 "  reserve_mib = 1639", "      clamp(memory_mib * 0.1, 256, 4096)",
                 f"  profile node -> {out / 'node.json'}: share 1 (an equal part) = 14745 MiB; "
                 "at its limits 11106 MiB",
                 "    old space 11058 + young generation 48",
                 "    young generation: 3 x 16 semi-space",
                 "  the profiles at their limits: 11106 of 14745 MiB"):
        assert line in text.splitlines(), line

    apply(plan(cfg.tuning, facts, sysctl_root=str(sysroot)))
    doc = build(cfg, facts, "m5.xlarge", sysctl_root=str(sysroot))
    assert {o["change"] for o in doc["tuning"]} == {"unchanged"}
    doc = build(cfg, nominal_facts("m5.2xlarge"), "m5.2xlarge", sysctl_root=str(sysroot))
    outputs = _by_label(doc)
    assert {o["change"] for o in doc["tuning"]} == {"changed"}
    heap = outputs[str(out / "app.env")]["values"][0]
    assert (heap["rendered"], heap["current"]) == ("24576", "12288")  # 32768 * 0.75
    assert [(v["rendered"], v["current"]) for v in outputs["drop-in app.service"]["values"]] == [
        ("29491M", "14745M"), ("17", "9")]  # drop-ins read the whole machine
    assert "    HEAP_MB = 24576   (now 12288)" in render(doc).splitlines()

    (out / "units/other.service.d").mkdir()
    (out / "units/other.service.d/60-agent-tuning.conf").write_text("[Service]\n")
    stale = build(cfg, facts, "m5.xlarge", sysctl_root=str(sysroot))["tuning"][-1]
    assert (stale["kind"], stale["change"]) == ("dropin", "remove")


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def _agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_environment()
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60, check=False)


@pytest.mark.integration
def test_plan_writes_nothing(tmp_path: Path, cfg_path: Path) -> None:
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text()
    before = _snapshot(tmp_path)
    proc = _agent("plan", "--config", str(cfg_path), "--instance-type", "r6g.16xlarge",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "JVM" not in proc.stdout
    assert "NODE_OPTIONS = --max-old-space-size=390144 --max-semi-space-size=16" in proc.stdout
    as_json = _agent("plan", "--config", str(cfg_path), "--instance-type", "t3.nano", "--json",
                     cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["facts"]["memory_mib"] == 512
    assert [o["kind"] for o in doc["tuning"]] == ["file", "profile", "dropin", "template",
                                                  "sysctl"]
    assert _snapshot(tmp_path) == before  # no file, no directory, not even the history
    assert Path("/proc/sys/net/core/somaxconn").read_text() == somaxconn


@pytest.mark.parametrize(("command", "extra", "code", "message"), [
    ("plan", '[[tuning.profiles]]\nuse = "tomcat"\n', 78,
     "tuning.profiles[0].use: unknown profile 'tomcat' (profiles: jvm, node, gunicorn, nginx, "
     "postgres, redis)"),
    ("run", '[[tuning.dropins]]\nunit = "x.service"\n[tuning.dropins.service]\nMemMax = "1"\n',
     78, "tuning.dropins[0].service: unknown [Service] key 'MemMax' (did you mean "
     "'MemoryMax'?)"),
    ("plan", '[[tuning.files]]\npath = "/run/x.env"\n[tuning.files.values]\n'
     'PER_CPU = "memory_mib // (vcpus - 4)"\n', 1,
     "tuning /run/x.env: PER_CPU: division by zero in memory_mib // (vcpus - 4)"),
    ("plan", '[[tuning.profiles]]\nuse = "jvm"\nshare = 0.8\n[[tuning.profiles]]\n'
     'use = "redis"\nshare = 0.4\n', 78, "tuning: profiles[1].share: the shares add up to 1.2 "
     "(profiles[0] 0.8, profiles[1] 0.4), more than the whole budget (1)"),
    ("run", '[[tuning.profiles]]\nuse = "redis"\noptions = { persistence = 1 }\n', 78,
     "tuning.profiles[0].options.persistence: Input should be a valid boolean"),
    ("plan", '[tuning.budget]\nreserve_mib = "memory_mib - 256"\n[[tuning.profiles]]\n'
     'use = "jvm"\n[[tuning.profiles]]\nuse = "postgres"\n', 1,
     "tuning: m5.xlarge is too small for profile jvm: its values add up to 219 MiB at the "
     "program's limits (heap 16 + non-heap 171 + headroom 32), above its 128 MiB (0.5 of 256 "
     "MiB, 16384 MiB less the 16128 MiB reserve)"),
])
@pytest.mark.integration
def test_bad_input_through_the_command(tmp_path: Path, command: str, extra: str, code: int,
                                       message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n{extra}')
    args = ["--instance-type", "m5.xlarge"] if command == "plan" else ["--oneshot"]
    proc = _agent(command, "--config", str(path), *args, cwd=tmp_path)
    assert proc.returncode == code
    prefix = "" if code == 1 else f"config {path}: "
    assert proc.stderr == f"agent: {prefix}{message}\n"
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]


CREDENTIALS = """
state_dir = "{tmp}/state"
[secrets]
unit_dir = "{tmp}/units"
[[secrets.files]]
secret_id = "prod/db"
path = "db.json"
units = ["app.service", "worker.service"]
[[secrets.files]]
secret_id = "prod/api"
path = "api/token"
units = ["app.service"]
credential = "api-token"
"""


def test_plan_shows_the_credential_dropins_run_writes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropins, "daemon_reload", lambda: "")
    path = tmp_path / "agent.toml"
    path.write_text(CREDENTIALS.format(tmp=tmp_path))
    cfg = loader.load(str(path))
    units = tmp_path / "units"
    for unit, line in (("old.service", "x:/run/agent/secrets/x"),
                       ("worker.service", "db.json:/run/agent/secrets/old.json")):
        (units / f"{unit}.d").mkdir(parents=True)
        (units / f"{unit}.d" / handoff.DROPIN).write_text(f"[Service]\nLoadCredential={line}\n")
    doc = build(cfg, nominal_facts("m5.large"), "m5.large")
    found = {item["unit"]: item for item in doc["credentials"]}
    assert {unit: item["change"] for unit, item in found.items()} == {
        "app.service": "new", "worker.service": "changed", "old.service": "remove"}
    app = found["app.service"]
    assert app["path"] == str(units / "app.service.d" / handoff.DROPIN)
    assert app["lines"] == ["LoadCredential=db.json:/run/agent/secrets/db.json",
                            "LoadCredential=api-token:/run/agent/secrets/api/token"]
    assert found["worker.service"]["current"] == [
        "LoadCredential=db.json:/run/agent/secrets/old.json"]
    assert found["old.service"]["lines"] == [] and "note" not in app
    json.dumps(doc)
    text = render(doc).splitlines()
    for line in (
            "credentials (secrets.files[].units)",
            f"  drop-in app.service -> {units}/app.service.d/{handoff.DROPIN}: new",
            "    LoadCredential=api-token:/run/agent/secrets/api/token",
            f"  drop-in worker.service -> {units}/worker.service.d/{handoff.DROPIN}: changed",
            "    + LoadCredential=db.json:/run/agent/secrets/db.json",
            "    - LoadCredential=db.json:/run/agent/secrets/old.json",
            f"  drop-in old.service -> {units}/old.service.d/{handoff.DROPIN}: remove "
            "(no longer configured)"):
        assert line in text, line

    kept = select(cfg.secrets, LaunchContext.offline("m5.large"), dict).outputs()
    assert handoff.write_credentials(cfg.secrets, kept) == []  # what run writes, plan showed
    for unit, item in found.items():
        written = Path(item["path"])
        if item["change"] == "remove":
            assert not written.exists(), unit
        else:
            assert [line for line in written.read_text().splitlines()
                    if line.startswith("LoadCredential=")] == item["lines"], unit
    again = build(cfg, nominal_facts("m5.large"), "m5.large")["credentials"]
    assert {item["unit"]: item["change"] for item in again} == {
        "app.service": "unchanged", "worker.service": "unchanged"}


def test_plan_credentials_none_or_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n')
    doc = build(loader.load(str(path)), nominal_facts("m5.large"), "m5.large")
    assert doc["credentials"] == []
    lines = render(doc).splitlines()
    assert lines[lines.index("credentials (secrets.files[].units)") + 1] == "  (none configured)"

    path.write_text(CREDENTIALS.format(tmp=tmp_path))
    monkeypatch.setattr(plan_module, "dropin_blocked", lambda where: True)  # no systemd
    doc = build(loader.load(str(path)), nominal_facts("m5.large"), "m5.large")
    assert {item["note"] for item in doc["credentials"]} == {
        "not written: systemd is not running"}
    assert "new (not written: systemd is not running)" in render(doc)


NEEDS_TAGS = """
[[secrets.files]]
secret_id = "{{tag:Environment}}/orders/db"
path = "db.json"
role_arn = "arn:aws:iam::111122223333:role/{{tag:Team|core}}-orders"

[[secrets.files]]
secret_id = "shared/cache"
path = "cache"
when = "tag('Role') == 'web'"

[[tuning.files]]
path = "{tmp}/out/launch.env"
[tuning.files.values]
ROLE = "tag('Role')"
"""


def test_offline_plan_without_tags_names_each_tag_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(NEEDS_TAGS.format(tmp=tmp_path))
    cfg = loader.load(str(path))
    context = LaunchContext.offline("m5.large", region="eu-west-1")
    with pytest.raises(ContextError) as info:
        build(cfg, nominal_facts("m5.large"), "m5.large", context=context)
    assert str(info.value) == (
        "the instance's tags are needed, give --tag KEY=VALUE for each: 'Environment' "
        "(secrets.files[0].secret_id), 'Team' (secrets.files[0].role_arn), 'Role' "
        "(secrets.files[1].when, tuning.files[0].values.ROLE)")
    context = LaunchContext.offline("m5.large", region="eu-west-1",
                                    tags={"Environment": "prod", "Role": "web"})
    doc = build(cfg, nominal_facts("m5.large"), "m5.large", context=context)
    assert [f["secret_id"] for f in doc["secrets"]["files"]] == ["prod/orders/db",
                                                                "shared/cache"]
