"""Handing published secrets to services: systemd credentials, reloads, change hooks.

* ``units = ["app.service"]``: a runtime drop-in ``<unit_dir>/app.service.d/
  50-agent-credentials.conf`` with ``LoadCredential=<name>:<published path>``; systemd reads
  the file when the service starts and puts it in the service's own
  ``$CREDENTIALS_DIRECTORY``, where nothing else on the machine can read it.
* ``reload_units``: ``systemctl try-reload-or-restart`` after that file's content changed
  (never starts a unit that is not running: at boot, applications start after us anyway).
* ``on_change``: commands run without a shell, with a timeout and an explicit environment
  (names and paths, never values), after that file's content changed. Their output is
  discarded: a hook printing its secret must not put it in the journal.

A failing reload or hook is logged and returned as a warning (the boot is then degraded),
never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from agent.errors import SecretsError
from agent.service import dropins
from agent.service.notify import run_command, systemd_running

if TYPE_CHECKING:
    from agent.secrets.config import Published, SecretsConfig

log = logging.getLogger(__name__)

DROPIN = "50-agent-credentials.conf"
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOOK_FAILED = "secrets hook:"  # the prefix of a hook's warning (cleared by the next refresh)


class About(NamedTuple):
    """What a change hook is told of a published file (names, never values)."""

    secret_id: str  # the secret id or parameter fetched (resolved); a template's source
    source: str  # secretsmanager | ssm | template
    version: str


def credential_dropins(cfg: SecretsConfig, outputs: Sequence[Published]) -> dict[str, bytes]:
    """The drop-in of every unit that gets credentials (unit -> content)."""
    by_unit: dict[str, list[Published]] = {}
    for entry in outputs:
        for unit in entry.units:
            by_unit.setdefault(unit, []).append(entry)
    found: dict[str, bytes] = {}
    for unit, entries in sorted(by_unit.items()):
        lines = ["# Written by the instance boot agent (secrets units); do not edit.",
                 "[Service]"]
        lines += [f"LoadCredential={dropins.specifiers_escaped(e.credential_name)}:"
                  f"{dropins.specifiers_escaped(str(Path(cfg.dir) / e.path))}" for e in entries]
        found[unit] = ("\n".join(lines) + "\n").encode()
    return found


def write_credentials(cfg: SecretsConfig, outputs: Sequence[Published]) -> list[str]:
    """Write (and prune) the credential drop-ins, daemon-reload if any changed; warnings."""
    plans = dropins.plan(cfg.unit_dir, DROPIN, credential_dropins(cfg, outputs))
    try:
        return dropins.apply(plans)
    except OSError as exc:
        raise SecretsError(f"cannot write credential drop-ins in {cfg.unit_dir}: "
                           f"{exc.strerror or exc}") from None


def after_change(cfg: SecretsConfig, changed: Sequence[Published],
                 about: Mapping[str, About]) -> list[str]:
    """Reload units and run hooks for files whose content changed; warnings for failures."""
    warnings: list[str] = []
    units = list(dict.fromkeys(unit for entry in changed for unit in entry.reload_units))
    if units and systemd_running():
        problem = run_command(["systemctl", "try-reload-or-restart", *units],
                              timeout=cfg.hook_timeout_seconds,
                              what=f"reload {' '.join(units)}")
        if problem:
            warnings.append(problem)
    for entry in changed:
        known = about.get(entry.path, About("", "", ""))
        env = {"PATH": HOOK_PATH, "LANG": "C.UTF-8",
               "AGENT_SECRET_ID": known.secret_id, "AGENT_SECRET_SOURCE": known.source,
               "AGENT_SECRET_PATH": str(Path(cfg.dir) / entry.path),
               "AGENT_SECRET_VERSION": known.version}
        for argv in entry.on_change:
            problem = run_command(argv, timeout=cfg.hook_timeout_seconds, env=env,
                                  what=f"on_change of {entry.path} ({argv[0]})")
            if problem:
                warnings.append(problem)
    return warnings
