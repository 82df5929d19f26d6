"""``agent plan``: what ``run`` would publish and set, each tuned value explained.

Pure: it reads the configuration, the facts (this machine, or ``--instance-type`` offline
from the bundled table) and the files currently written, and writes nothing. Without
``--instance-type`` it reads the instance type from IMDS (GET only); it never fetches a
secret and never calls a mutating API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agent import config, envfile
from agent.config import Config
from agent.expr import render_value
from agent.tuning import Facts, PlannedOutput, nominal_facts, plan, read_facts


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

    imds = ImdsClient(cfg.imds.endpoint, token_ttl=cfg.imds.token_ttl_seconds,
                      timeout=cfg.imds.timeout_seconds, max_wait=cfg.imds.max_wait_seconds)
    ident = imds.identity()
    return read_facts(ident.instance_type), f"{ident.instance_type} (this machine)"


def build(cfg: Config, facts: Facts, source: str) -> dict[str, Any]:
    """The plan as a JSON-able document."""
    tuning = plan(cfg.tuning, facts)
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
        "tuning": [_output(out) for out in tuning.outputs],
        "lifecycle": {
            "enabled": cfg.lifecycle.enabled,
            "hook": cfg.lifecycle.hook_name or "(the group's launch hook)",
            "on_failure": cfg.lifecycle.on_failure,
        },
    }


def _output(out: PlannedOutput) -> dict[str, Any]:
    current = out.current()
    old = _values(out.format, current) if current is not None else {}
    change = "new" if current is None else ("unchanged" if current == out.content else "changed")
    return {
        "path": out.path, "format": out.format, "mode": f"{out.mode:04o}", "change": change,
        "values": [
            {"name": v.name, "expression": v.expression, **v.explanation.as_dict(),
             "current": old.get(v.name)}
            for v in out.values
        ],
    }


def _values(fmt: str, content: bytes) -> dict[str, str]:
    """The values in a file written earlier, as rendered text."""
    try:
        text = content.decode()
        if fmt == "env":
            return envfile.parse(text)
        data = json.loads(text)
    except ValueError:
        return {}
    return {k: render_value(v) if isinstance(v, int | float | str) else json.dumps(v)
            for k, v in data.items()} if isinstance(data, dict) else {}


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
    lines += ["", "tuning"]
    if not doc["tuning"]:
        lines.append("  (none configured)")
    for out in doc["tuning"]:
        lines.append(f"  {out['path']} ({out['format']}, {out['mode']}): {out['change']}")
        for v in out["values"]:
            was = v["current"]
            delta = "" if was is None or was == v["rendered"] else f"   (now {was})"
            lines.append(f"    {v['name']} = {v['rendered']}{delta}")
            lines.append(f"      {v['expression']}")
            if v["substituted"] != v["expression"]:
                lines.append(f"      = {v['substituted']}")
            lines += [f"      {c}" for c in v["clamps"]]
    lc = doc["lifecycle"]
    lines += ["", "lifecycle"]
    lines.append(f"  hook {lc['hook']}, on failure {lc['on_failure']}" if lc["enabled"]
                 else "  disabled")
    return "\n".join(lines) + "\n"
