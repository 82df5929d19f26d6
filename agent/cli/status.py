"""``agent status`` and ``agent wait``: read state.json, never anything heavier.

This path imports os, time and :mod:`agent.state.reader` only: no AWS SDK, no pydantic, not
even json (only for ``--json``), re, enum or typing, and argparse only when the arguments
need a usage message; so it costs about a bare interpreter.
"""

from __future__ import annotations

import os
import sys
import time

from agent.cli.quickargs import quick_args
from agent.errors import EXIT_FAILED, EXIT_NOT_FINISHED, EXIT_OK, EXIT_TIMEOUT, escape
from agent.state.reader import FAILED, READY, RUNNING, read, resolve_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

POLL_SECONDS = 0.1


def exit_code(doc: dict[str, Any] | None) -> int:
    """0 ready (healthy or degraded), 1 failed, 3 not started or still running."""
    if doc is None:
        return EXIT_NOT_FINISHED
    return {READY: EXIT_OK, FAILED: EXIT_FAILED}.get(doc.get("state", ""), EXIT_NOT_FINISHED)


def stale_note(doc: dict[str, Any]) -> str:
    """Why a 'running' document is not really running, if it is not."""
    if doc.get("state") != RUNNING:
        return ""
    from agent.state.reader import boot_id, pid_alive  # noqa: PLC0415

    pid = doc.get("pid")
    if not isinstance(pid, int) or pid_alive(pid):
        return ""  # (a boot id alone can mislead: a sandboxed agent may see the host's)
    if doc.get("boot_id") and doc["boot_id"] != boot_id():
        return "written during an earlier boot of this machine; the agent has not run since"
    return f"the agent (pid {pid}) is gone without finishing; see its journal"


def render(doc: dict[str, Any] | None, state_dir: str) -> str:
    """The readable table; every line escaped (state.json's text may come from outside, or
    be forged: it must not drive the terminal)."""
    if doc is None:
        return f"agent: not started (no state.json in {escape(state_dir)})\n"
    out = [f"agent: {doc.get('state', '?')} ({doc.get('condition', '?')})"
           f"    updated {doc.get('updated_at', '?')}"]
    note = stale_note(doc)
    if note:
        out.append(f"note: {note}")
    inst = doc.get("instance") or {}
    if inst:
        parts = [inst.get(k, "") for k in ("instance_id", "instance_type",
                                           "availability_zone", "image_id")]
        group = inst.get("auto_scaling_group")
        out.append("instance   " + " ".join(p for p in parts if p)
                   + (f"  group {group}" if group else ""))
    out += [f"resized    {r.get('from')} -> {r.get('to')} since the previous boot"
            for r in [doc.get("resize")] if isinstance(r, dict)]
    image = doc.get("image") or {}
    if image:
        out.append(f"image      built {image.get('built_at', '?')} "
                   f"({image.get('age_days', '?')} days ago), agent {image.get('agent', '?')}")
    out.append("")
    out.append(f"{'phase':<10} {'state':<8} {'time':>8}  detail")
    for phase in doc.get("phases", []):
        ms = phase.get("duration_ms")
        took = f"{ms} ms" if isinstance(ms, int) else "-"
        detail = phase.get("error") or phase.get("detail") or ""
        out.append(f"{phase.get('name', '?'):<10} {phase.get('state', '?'):<8} {took:>8}  {detail}")
    out += _readiness(doc)
    lc = doc.get("lifecycle") or {}
    if lc:
        out.append("")
        sending = f"{lc['sending']} being sent" if lc.get("sending") else "nothing sent"
        out.append(f"lifecycle  {lc.get('result') or sending}"
                   f" -> {lc.get('group', '?')}/{lc.get('hook', '?')}")
    out += _secrets(doc)
    out += _termination(doc)
    for title in ("warnings", "errors"):
        items = doc.get(title) or []
        if items:
            out.append("")
            out.append(f"{title}:")
            out.extend(f"  - {item}" for item in items)
    return "\n".join(escape(line) for line in out) + "\n"


def _readiness(doc: dict[str, Any]) -> list[str]:
    """What the readiness gate last saw of each unit and check (while it waits: what is not
    ready yet), and the gates after rotations."""
    ready = doc.get("readiness") or {}
    seen = [s for s in ready.get("seen") or [] if isinstance(s, dict)]
    if not seen and not ready.get("after_rotation"):
        return []
    since = ready.get("ready_since")
    waiting = sum(not s.get("ready") for s in seen)
    head = (f"{waiting} of {len(seen)} not ready" if waiting else
            f"all ready since {since} (to hold {ready.get('settle_seconds', '?')} s)" if since
            else "all ready")
    out = ["", f"readiness  {head}"]
    width = max([len(str(s.get("name"))) for s in seen] + [10])
    out += [f"  {'ready' if s.get('ready') else 'NOT READY':<9} {s.get('name', '?'):<{width}}"
            f"  {s.get('saw', '')}" for s in seen]
    counts = ready.get("after_rotation") or {}
    if counts:
        out.append(f"  after rotations: {counts.get('passed', 0)} passed, "
                   f"{counts.get('failed', 0)} failed")
    return out


def _secrets(doc: dict[str, Any]) -> list[str]:
    """Each published file with the secret it holds (ids resolved), templates, skipped entries."""
    records = doc.get("secrets") or []
    skipped = doc.get("skipped") or []
    if not records and not skipped:
        return []
    files = [r for r in records if r.get("path")]
    out = ["", f"secrets    {len(files)} files"]
    for r in records:
        if "template" in r:
            out.append(f"  {r.get('path')}  <- template {r.get('template')}")
            continue
        where = r.get("path") or "(feeds templates)"
        out.append(f"  {where}  <- {r.get('secret_id')} (version {r.get('version_id')})")
        more = [f"from {r['configured']}" if r.get("configured", r.get("secret_id"))
                != r.get("secret_id") else "",
                f"region {r['region']}" if r.get("region") else "",
                f"role {r['role']}" if r.get("role") else ""]
        if any(more):
            out.append("      " + ", ".join(m for m in more if m))
    out += [f"  skipped {s.get('entry')}: {s.get('reason')}" for s in skipped
            if isinstance(s, dict)]
    return out


def _termination(doc: dict[str, Any]) -> list[str]:
    """Scheduled events and what was done, the drain after a termination or interruption
    notice, and rebalance notices."""
    out: list[str] = []
    for event in doc.get("events") or []:
        if isinstance(event, dict):
            out += ["", f"scheduled  {event.get('code', '?')} {event.get('event_id', '')} "
                        f"({event.get('state', '?')}), not before {event.get('not_before', '?')}",
                    f"  {event.get('description', '')}", f"  action: {event.get('action', '?')}"]
    term = doc.get("termination") or {}
    if term:
        hook = term.get("hook") or {}
        hook_text = (hook.get("error") or f"{hook.get('result') or 'nothing sent'} -> "
                     f"{hook.get('group', '?')}/{hook.get('hook', '?')}") if hook else "no hook"
        out += ["", f"terminating ({term.get('reason', '?')}): {term.get('notice', '')}",
                f"  drain {term.get('started_at', '?')} .. {term.get('finished_at', 'running')}"]
        out += [f"  {step.get('step')}: {step.get('result')}" for step in term.get("steps", [])]
        out += [f"  terminating hook: {hook_text}",
                f"  secrets wiped: {'yes' if term.get('secrets_wiped') else 'no'}"]
    rebalance = doc.get("rebalance") or {}
    if rebalance:
        out += ["", f"rebalance  {rebalance.get('notice', '')} at {rebalance.get('at', '?')}: "
                    f"command {rebalance.get('command', '?')}"]
    return out


def status_main(argv: list[str]) -> int | None:
    """``agent status``; None when argparse must handle the arguments."""
    args = quick_args(argv, {"--json"}, {"--state-dir"})
    if args is None:
        return None
    state_dir = resolve_state_dir(args.get("--state-dir"))
    try:
        doc = read(state_dir)
    except ValueError as exc:  # it names the file and the problem
        print(escape(f"agent: {exc}"), file=sys.stderr)
        return EXIT_NOT_FINISHED
    except OSError as exc:
        print(escape(f"agent: cannot read {os.path.join(state_dir, 'state.json')}: {exc}"),
              file=sys.stderr)
        return EXIT_NOT_FINISHED
    if "--json" in args:
        import json  # noqa: PLC0415

        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render(doc, state_dir))
    return exit_code(doc)


def wait_main(argv: list[str]) -> int | None:
    """``agent wait``: 0 ready, 1 failed, 124 timed out; None for argparse."""
    args = quick_args(argv, set(), {"--timeout", "--state-dir"})
    if args is None:
        return None
    try:
        timeout = float(args["--timeout"]) if "--timeout" in args else None
    except ValueError:
        return None
    if timeout is not None and not timeout >= 0:  # negative or NaN
        return None
    state_dir = resolve_state_dir(args.get("--state-dir"))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            doc = read(state_dir)
        except (OSError, ValueError):
            doc = None  # being replaced, or not yet valid: look again
        code = exit_code(doc)
        if code != EXIT_NOT_FINISHED:
            assert doc is not None
            print(escape(f"agent: {doc['state']} ({doc.get('condition', '?')})"))
            return code
        if deadline is not None and time.monotonic() >= deadline:
            state = "not started" if doc is None else doc.get("state", "?")
            print(escape(f"agent: timed out after {timeout:g} s waiting for the boot ({state})"),
                  file=sys.stderr)
            return EXIT_TIMEOUT
        pause = POLL_SECONDS if deadline is None else min(POLL_SECONDS,
                                                         max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
