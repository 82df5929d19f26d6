"""``agent plan``: what ``run`` would publish and set, each tuned value explained.

Pure: it reads the configuration, the facts (this machine, or ``--instance-type`` offline
from the bundled table), the templates, and what is currently written (files, drop-ins,
/proc/sys), and writes nothing. Without ``--instance-type`` it reads the instance type from
IMDS (GET only); it never fetches a secret and never calls a mutating API.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from agent import config, dropins, envfile, handoff
from agent.config import Config
from agent.expr import render_value
from agent.facts import Facts, nominal_facts, read_facts
from agent.files import Change
from agent.profiles import ENVIRONMENT
from agent.service import dropin_blocked
from agent.tuning import SYSCTL_ROOT, PlannedOutput, PlannedSysctl, PlannedValue, plan


def main(config_path: str | None, *, instance_type: str | None, as_json: bool) -> int:
    """The ``plan`` command."""
    cfg = config.load(config_path)
    if instance_type:
        facts = nominal_facts(instance_type)
        source = f"{instance_type} (nominal, offline)"
    else:
        facts, source = _this_machine(cfg)
    doc = build(cfg, facts, source)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if as_json else render(doc))
    return 0


def _this_machine(cfg: Config) -> tuple[Facts, str]:
    from agent.imds import ImdsClient  # noqa: PLC0415

    ident = ImdsClient.from_config(cfg.imds).identity()
    return read_facts(ident.instance_type), f"{ident.instance_type} (this machine)"


def build(cfg: Config, facts: Facts, source: str, *,
          sysctl_root: str = SYSCTL_ROOT) -> dict[str, Any]:
    """The plan as a JSON-able document."""
    tuning = plan(cfg.tuning, facts, sysctl_root=sysctl_root)
    return {
        "instance_type": source,
        "facts": facts.as_dict(),
        "secrets": {
            "dir": cfg.secrets.dir,
            "require_tmpfs": cfg.secrets.require_tmpfs,
            "files": [
                {"path": str(Path(cfg.secrets.dir) / f.path), "secret_id": f.secret_id,
                 "key": f.key, "format": f.format, "mode": f"{f.mode:04o}",
                 "owner": f.owner, "group": f.group}
                for f in cfg.secrets.files
            ],
        },
        "credentials": _credentials(cfg),
        "tuning": [*(_output(out) for out in tuning.outputs),
                   *(_sysctl(item) for item in tuning.sysctls),
                   *({"kind": "dropin", "label": f"drop-in {item.path}", "path": item.path,
                      "change": item.change.value, "values": []} for item in tuning.stale
                     if item.change is Change.REMOVE)],
        "lifecycle": {
            "enabled": cfg.lifecycle.enabled,
            "hook": cfg.lifecycle.hook_name or "(the group's launch hook)",
            "on_failure": cfg.lifecycle.on_failure,
        },
    }


def _credentials(cfg: Config) -> list[dict[str, Any]]:
    """The credential drop-ins (``secrets.files[].units``) run would write or remove."""
    if not cfg.secrets.files:
        return []  # run publishes nothing then: no drop-in is written or removed either
    plans = dropins.plan(cfg.secrets.unit_dir, handoff.DROPIN,
                         handoff.credential_dropins(cfg.secrets))
    return [{"unit": dropins.unit_of(item.path), "path": item.path, "change": item.change.value,
             "lines": _load_credentials(item.desired),
             "current": _load_credentials(item.existing.content),
             **({"note": "not written: systemd is not running"}
                if item.writes and dropin_blocked(item.path) else {})}
            for item in plans]


def _load_credentials(content: bytes | None) -> list[str]:
    """The ``LoadCredential=`` lines of a drop-in."""
    text = (content or b"").decode(errors="replace")
    return [line for line in text.splitlines() if line.startswith("LoadCredential=")]


def _output(out: PlannedOutput) -> dict[str, Any]:
    current = out.file.existing.content
    old = _values(out.format, current) if current is not None else {}
    return {
        "kind": out.kind, "label": out.label, **out.about, "path": out.path,
        "format": out.format, "mode": f"{out.mode:04o}", "change": out.file.change.value,
        "values": [_value(v, old.get(v.name)) for v in out.values],
    }


def _sysctl(item: PlannedSysctl) -> dict[str, Any]:
    change = "missing" if item.current is None else "changed" if item.changed else "unchanged"
    return {"kind": "sysctl", "label": f"sysctl {item.key}", "key": item.key,
            "path": item.path, "change": change, "values": [_value(item.value, item.current)]}


def _value(value: PlannedValue, current: str | None) -> dict[str, Any]:
    return {"name": value.name, "expression": value.expression, **value.explanation.as_dict(),
            "rendered": value.rendered, "current": current,
            **({"origin": value.origin} if value.origin else {}),
            **({"note": value.note} if value.note else {})}


def _values(fmt: str, content: bytes) -> dict[str, str]:
    """The values in a file written earlier, as rendered text."""
    try:
        text = content.decode()
        if fmt == "env":
            return envfile.parse(text)
        if fmt == "dropin":
            return _dropin_values(text)
        if fmt != "json":
            return {}
        data = json.loads(text)
    except ValueError:
        return {}
    return {k: render_value(v) if isinstance(v, int | float | str) else json.dumps(v)
            for k, v in data.items()} if isinstance(data, dict) else {}


def _dropin_values(text: str) -> dict[str, str]:
    """``Key=value`` lines of a drop-in we wrote; ``Environment.NAME`` for its variables."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if not eq or line.startswith(("#", ";", "[")):
            continue
        if key != ENVIRONMENT:
            found[key] = value
            continue
        for word in shlex.split(value):
            name, _, val = word.partition("=")
            found[f"{ENVIRONMENT}.{name}"] = val.replace("%%", "%")
    return found


def render(doc: dict[str, Any]) -> str:
    """The readable form."""
    facts = doc["facts"]
    lines = [f"plan for {doc['instance_type']}", "", "facts"]
    lines += [f"  {name:<20} {value}" for name, value in facts.items()]
    sec = doc["secrets"]
    lines += ["", f"secrets -> {sec['dir']}"
              + ("" if sec["require_tmpfs"] else "  (require_tmpfs = false)")]
    lines += [f"  {f['path']:<40} <- {f['secret_id']}"
              + (f" [{f['key']}]" if f["key"] else "")
              + f"  {f['format']} {f['mode']} {f['owner']}:{f['group']}"
              for f in sec["files"]] or ["  (none configured)"]
    lines += _credential_lines(doc["credentials"])
    lines += ["", "tuning"]
    if not doc["tuning"]:
        lines.append("  (none configured)")
    for out in doc["tuning"]:
        lines.append(f"  {_title(out)}: {out['change']}")
        for v in out["values"]:
            lines += _value_lines(out, v)
    lc = doc["lifecycle"]
    lines += ["", "lifecycle"]
    lines.append(f"  hook {lc['hook']}, on failure {lc['on_failure']}" if lc["enabled"]
                 else "  disabled")
    return "\n".join(lines) + "\n"


def _credential_lines(credentials: list[dict[str, Any]]) -> list[str]:
    """Each unit's credential drop-in; for a changed one, + and - mark the lines."""
    lines = ["", "credentials (secrets.files[].units)"]
    for item in credentials:
        gone = " (no longer configured)" if item["change"] == "remove" else ""
        note = f" ({item['note']})" if "note" in item else ""
        lines.append(f"  drop-in {item['unit']} -> {item['path']}: {item['change']}{gone}{note}")
        mark = item["change"] == "changed"
        lines += [f"    {'+ ' if mark and line not in item['current'] else ''}{line}"
                  for line in item["lines"]]
        if mark:
            lines += [f"    - {line}" for line in item["current"] if line not in item["lines"]]
    return lines if credentials else [*lines, "  (none configured)"]


def _title(out: dict[str, Any]) -> str:
    kind = out["kind"]
    if kind == "sysctl":
        return f"{out['label']} ({out['path']})"
    if out["change"] == "remove":
        return f"{out['label']} (no longer configured)"
    if kind == "dropin":
        return f"{out['label']} -> {out['path']}"
    if kind == "file":
        return f"file {out['path']} ({out['format']}, {out['mode']})"
    where = "" if kind == "template" else f"{out['format']}, "
    return f"{out['label']} ({where}{out['mode']})" if out["path"] else out["label"]


def _value_lines(out: dict[str, Any], v: dict[str, Any]) -> list[str]:
    was = v["current"]
    delta = "" if was is None or was == v["rendered"] else f"   (now {was})"
    if "origin" in v:
        return [f"    ${{{v['name']}}} = {v['rendered']}   (from {v['origin']})"]
    name = v["name"] if out["kind"] != "sysctl" else out["key"]
    lines = [f"    {name} = {v['rendered']}{delta}"]
    if "note" in v:
        lines.append(f"      # {v['note']}")
    if v["expression"] != v["rendered"]:
        lines.append(f"      {v['expression']}")
        if v["substituted"] not in (v["expression"], v["rendered"]):
            lines.append(f"      = {v['substituted']}")
    lines += [f"      {c}" for c in v["clamps"]]
    return lines
