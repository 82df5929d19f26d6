"""Our systemd drop-ins, for every feature that writes them: plan, write, prune, reload.

A feature owns one drop-in file name (``50-agent-credentials.conf`` for secrets handed to
services, ``60-agent-tuning.conf`` for tuned ``[Service]`` settings) under
``<unit_dir>/<unit>.d/``. :func:`plan` says what each unit's drop-in must hold and which of
ours are stale (a unit no longer configured); :func:`apply` writes and removes them and runs
one ``systemctl daemon-reload`` when anything changed. Every problem that does not stop the
boot comes back as one warning line, in the same words for every feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from agent import files
from agent.files import Change, FilePlan
from agent.service.notify import daemon_reload, dropin_blocked

DROPIN_NAME = "60-agent-tuning.conf"  # [[tuning.dropins]]: <unit_dir>/<unit>.d/<this>

MODE = 0o644


def specifiers_escaped(text: str) -> str:
    """``text`` as a unit file's value that systemd expands specifiers in (``%n``, ``%h``...)
    reads it: each ``%`` doubled."""
    return text.replace("%", "%%")


def path(unit_dir: str, unit: str, name: str) -> str:
    """``<unit_dir>/<unit>.d/<name>``."""
    return str(Path(unit_dir) / f"{unit}.d" / name)


def unit_of(dropin: str) -> str:
    """The unit a drop-in path belongs to."""
    return Path(dropin).parent.name.removesuffix(".d")


def plan(unit_dir: str, name: str, desired: Mapping[str, bytes]) -> list[FilePlan]:
    """Each unit's drop-in (``desired``: unit -> content), then removals of stale ones."""
    wanted = {path(unit_dir, unit, name): content for unit, content in sorted(desired.items())}
    plans = [FilePlan.of(where, content, MODE) for where, content in wanted.items()]
    try:
        found = sorted(str(p) for p in Path(unit_dir).glob(f"*.d/{name}"))
    except OSError:
        found = []
    plans += [FilePlan.of(where, None) for where in found if where not in wanted]
    return plans


def held(plans: Iterable[FilePlan]) -> tuple[list[FilePlan], list[str]]:
    """The plans that may be carried out now, and a warning for each held back.

    A drop-in under /run/systemd/system is not written while systemd is not running there:
    creating that directory would tell every program that systemd runs (``sd_booted()``).
    """
    ready, warnings = [], []
    for item in plans:
        if item.writes and dropin_blocked(item.path):
            warnings.append(f"drop-in {item.path} not written: systemd is not running")
        else:
            ready.append(item)
    return ready, warnings


def finish(plans: Iterable[FilePlan], written: bool) -> tuple[list[FilePlan], list[str]]:
    """After the writes: remove stale drop-ins, reload systemd if anything changed.

    The removed plans, and the warnings (a removal or the reload that failed).
    """
    removed, warnings = files.remove(plans)
    if written or removed:
        problem = daemon_reload()
        if problem:
            warnings.append(f"drop-ins written but {problem}")
    return removed, warnings


def apply(plans: list[FilePlan]) -> list[str]:
    """Carry out ``plans`` now (each file replaced atomically); the warnings.

    Raises OSError when a drop-in cannot be written (nothing of it is then in place).
    """
    ready, warnings = held(plans)
    writer = files.Writer()
    try:
        writer.stage(ready)
        writer.switch()
    except BaseException:
        writer.undo()
        raise
    _, more = finish(ready, written=any(p.change is not Change.UNCHANGED and p.writes
                                        for p in ready))
    return warnings + more
