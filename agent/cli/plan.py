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

from agent.config import loader
from agent.config.loader import Config
from agent.errors import escape
from agent.files import Change
from agent.instance.context import LaunchContext
from agent.instance.facts import Facts, nominal_facts, read_facts
from agent.readiness import gate
from agent.schema.expr import render_value, template_file_names
from agent.secrets import handoff
from agent.secrets.publish import Selection, select
from agent.service import dropins, envfile
from agent.service.notify import dropin_blocked
from agent.tuning.budget import Budget, mib_text
from agent.tuning.profiles import ENVIRONMENT
from agent.tuning.tuner import (
    SYSCTL_ROOT,
    PlannedOutput,
    PlannedSysctl,
    PlannedValue,
    plan,
    tag_uses,
)


def main(config_path: str | None, *, instance_type: str | None, as_json: bool,
         tags: dict[str, str] | None = None, region: str | None = None,
         account: str | None = None, group: str | None = None,
         zone: str | None = None) -> int:
    """The ``plan`` command: offline with ``--instance-type`` (the launch given by the other
    options), else for this instance (its metadata)."""
    cfg = loader.load(config_path)
    if instance_type:
        facts = nominal_facts(instance_type)
        source = f"{instance_type} (nominal, offline)"
        context = LaunchContext.offline(instance_type, tags=tags, region=region,
                                        account=account, group=group, zone=zone)
    else:
        facts, source, context = _this_machine(cfg)
    doc = build(cfg, facts, source, context=context)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if as_json else render(doc))
    return 0


def _this_machine(cfg: Config) -> tuple[Facts, str, LaunchContext]:
    from agent.cloud.aws import Aws  # noqa: PLC0415
    from agent.cloud.imds import ImdsClient, Metadata  # noqa: PLC0415

    imds = ImdsClient.from_config(cfg.imds)
    meta = Metadata.read(imds)
    ident = meta.identity
    aws = Aws.from_config(cfg.aws, ident.region, imds=imds)
    return (read_facts(ident.instance_type), f"{ident.instance_type} (this machine)",
            LaunchContext.at_boot(meta, lambda: aws))


def build(cfg: Config, facts: Facts, source: str, *, context: LaunchContext | None = None,
          sysctl_root: str = SYSCTL_ROOT) -> dict[str, Any]:
    """The plan as a JSON-able document (``context``: the launch; default: only the type)."""
    launch = context or LaunchContext.offline(facts.instance_type)
    launch.require_tags([*cfg.secrets.tag_uses(), *tag_uses(cfg.tuning)])
    tuning = plan(cfg.tuning, facts, sysctl_root=sysctl_root, context=launch)
    chosen = select(cfg.secrets, launch, facts.as_dict)
    return {
        "instance_type": source,
        "facts": facts.as_dict(),
        "secrets": _secrets(cfg, chosen),
        "skipped": chosen.skipped + tuning.skipped,  # every entry whose condition is false
        "credentials": _credentials(cfg, chosen),
        "tuning": [*(_output(out) for out in tuning.outputs),
                   *(_sysctl(item) for item in tuning.sysctls),
                   *({"kind": "dropin", "label": f"drop-in {item.path}", "path": item.path,
                      "change": item.change.value, "values": []} for item in tuning.stale
                     if item.change is Change.REMOVE)],
        "budget": _budget(tuning.budget),
        "readiness": {
            "enabled": cfg.readiness.enabled,
            "waits_for": gate.describe(cfg.readiness),
            "timeout_seconds": cfg.readiness.timeout_seconds,
            "settle_seconds": cfg.readiness.settle_seconds,
            "interval_seconds": cfg.readiness.interval_seconds,
        },
        "lifecycle": {
            "enabled": cfg.lifecycle.enabled,
            "hook": cfg.lifecycle.hook_name or "(the group's launch hook)",
            "on_failure": cfg.lifecycle.on_failure,
        },
    }


def _secrets(cfg: Config, chosen: Selection) -> dict[str, Any]:
    """Each kept secret with its id resolved, each template."""
    root = Path(cfg.secrets.dir)
    return {
        "dir": cfg.secrets.dir,
        "require_tmpfs": cfg.secrets.require_tmpfs,
        "files": [
            {"entry": k.where, "configured": k.entry.secret_id or k.entry.parameter,
             "secret_id": k.ref.name, "source": k.ref.source, "region": k.ref.region,
             "role": k.ref.role.arn if k.ref.role else "", "key": k.entry.key,
             "format": k.entry.format, "name": k.entry.name,
             "path": str(root / k.entry.path) if k.entry.publish else "",
             "mode": f"{k.entry.mode:04o}", "owner": k.entry.owner, "group": k.entry.group}
            for k in chosen.files],
        "templates": [
            {"entry": where, "source": t.source, "path": str(root / t.path),
             "mode": f"{t.mode:04o}", "owner": t.owner, "group": t.group,
             "uses": template_file_names(t.source)}  # names, no value
            for where, t in chosen.templates],
    }


def _budget(shared: Budget | None) -> dict[str, Any] | None:
    """The memory budget: the machine, the reserve, each program's portion and its sum."""
    if shared is None:
        return None
    return {
        "memory_mib": shared.memory_mib, "reserve_mib": shared.reserve_mib,
        "reserve": {"expression": shared.reserve_expression, **shared.reserve.as_dict()},
        "available_mib": shared.available_mib,
        "members": [{"label": p.claim.label, "key": p.claim.key, "share": p.fraction,
                     "equal_part": p.claim.share is None, "memory_mib": p.memory_mib,
                     "terms": [{"name": t.name, "mib": t.mib, "detail": t.detail}
                               for t in p.terms],
                     "total_mib": p.total_mib if p.checked else None}
                    for p in shared.portions],
        "total_mib": sum(p.total_mib for p in shared.portions if p.checked),
        "outside": shared.outside,
    }


def _credentials(cfg: Config, chosen: Selection) -> list[dict[str, Any]]:
    """The credential drop-ins (``secrets.files[].units``) run would write or remove."""
    if not cfg.secrets.files and not cfg.secrets.templates:
        return []  # run publishes nothing then: no drop-in is written or removed either
    plans = dropins.plan(cfg.secrets.unit_dir, handoff.DROPIN,
                         handoff.credential_dropins(cfg.secrets, chosen.outputs()))
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
    skipped = doc.get("skipped") or []
    lines += _secret_lines(doc["secrets"], skipped)
    lines += _credential_lines(doc["credentials"])
    lines += ["", "tuning"]
    if not doc["tuning"]:
        lines.append("  (none configured)")
    lines += [f"  skipped {s['entry']}: {s['reason']}" for s in skipped
              if s["entry"].startswith("tuning.")]
    for out in doc["tuning"]:
        lines.append(f"  {_title(out)}: {out['change']}")
        for v in out["values"]:
            lines += _value_lines(out, v)
    if doc.get("budget"):
        lines += _budget_lines(doc["budget"])
    ready = doc["readiness"]
    lines += ["", "readiness"]
    if not ready["enabled"]:
        lines.append("  (none configured: CONTINUE once the agent's own phases are done)")
    else:
        lines.append(f"  after READY=1, all at once for {ready['settle_seconds']:g} s, within "
                     f"{ready['timeout_seconds']:g} s (a round every "
                     f"{ready['interval_seconds']:g} s):")
        lines += [f"  {item}" for item in ready["waits_for"]]
    lc = doc["lifecycle"]
    lines += ["", "lifecycle"]
    lines.append(f"  hook {lc['hook']}, on failure {lc['on_failure']}" if lc["enabled"]
                 else "  disabled")
    return "\n".join(escape(line) for line in lines) + "\n"  # tags and files: outside text


def _secret_lines(sec: dict[str, Any], skipped: list[dict[str, str]]) -> list[str]:
    """The secrets part of the readable form: resolved ids, templates, what is skipped."""
    lines = ["", f"secrets -> {sec['dir']}"
             + ("" if sec["require_tmpfs"] else "  (require_tmpfs = false)")]
    for f in sec["files"]:
        where = f"  {f['path'] or '(not published: feeds templates)':<40} <- {f['secret_id']}"
        where += f" [{f['key']}]" if f["key"] else ""
        where += f"  {f['format']} {f['mode']} {f['owner']}:{f['group']}" if f["path"] else ""
        lines.append(where)
        extras = [f"from {f['configured']}" if f["configured"] != f["secret_id"] else "",
                  f"region {f['region']}" if f["region"] else "",
                  f"role {f['role']}" if f["role"] else "",
                  f"as ${{{f['name']}}}" if f["name"] else ""]
        if any(extras):
            lines.append("    " + ", ".join(e for e in extras if e))
    for t in sec["templates"]:
        lines.append(f"  {t['path']:<40} <- template {t['source']}  {t['mode']} "
                     f"{t['owner']}:{t['group']}")
        if t["uses"]:
            lines.append(f"    uses {', '.join('$' + '{' + n + '}' for n in t['uses'])}")
    lines += [f"  skipped {s['entry']}: {s['reason']}" for s in skipped
              if s["entry"].startswith("secrets.")]
    if len(lines) == 1:
        lines.append("  (none configured)")
    return lines


def _budget_lines(shared: dict[str, Any]) -> list[str]:
    reserve = shared["reserve"]
    lines = ["", f"budget: {shared['memory_mib']} MiB, less a {shared['reserve_mib']} MiB "
             f"reserve: {shared['available_mib']} MiB for the programs",
             f"  reserve_mib = {shared['reserve_mib']}"]
    if reserve["expression"] != reserve["rendered"]:
        lines.append(f"      {reserve['expression']}")
        if reserve["substituted"] not in (reserve["expression"], reserve["rendered"]):
            lines.append(f"      = {reserve['substituted']}")
    lines += [f"      {c}" for c in reserve["clamps"]]
    for member in shared["members"]:
        part = " (an equal part)" if member["equal_part"] else ""
        head = (f"  {member['label']}: share {member['share']:.3g}{part} = "
                f"{member['memory_mib']} MiB")
        if member["total_mib"] is None:
            lines.append(f"{head}; its values are its own")
            continue
        lines.append(f"{head}; at its limits {mib_text(member['total_mib'])} MiB")
        lines.append("    " + " + ".join(f"{t['name']} {mib_text(t['mib'])}"
                                         for t in member["terms"]))
        lines += [f"    {t['name']}: {t['detail']}" for t in member["terms"] if t["detail"]]
    lines += [f"  not in the budget: {label} (no value reads memory_mib, no share)"
              for label in shared["outside"]]
    if any(member["total_mib"] is not None for member in shared["members"]):
        lines.append(f"  the profiles at their limits: {mib_text(shared['total_mib'])} of "
                     f"{shared['available_mib']} MiB")
    return lines


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
