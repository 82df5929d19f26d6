"""The instance's history across boots: the type it ran at, to notice a resize; and whether
it booted before, which tells the launch hook's lookup what may be pending.

``tuning.history_file`` (on disk: /run is cleared at every boot) records the instance id, its
type, its Auto Scaling target lifecycle state and the boot id of each boot. A later boot of
the same instance at another type is a resize (stop, change the type, start); a history
written by another instance (one baked into the image) is not a previous boot of this one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent.fsutil import atomic_write
from agent.readfile import read_regular
from agent.state.reader import boot_id
from agent.state.recorder import utc_now

if TYPE_CHECKING:
    from agent.cloud.imds import Identity

Record = dict[str, Any]


MAX_BYTES = 1 << 16  # a history is a few hundred bytes
KEPT = ("instance_type", "target_lifecycle_state", "boot_id", "recorded_at")


def track_instance(path: str, instance_id: str, instance_type: str, *,
                   target_state: str | None = None, boot: str | None = None,
                   now: str | None = None) -> tuple[Record | None, str]:
    """Compare this boot's instance type with the previous boot's; record this boot's.

    Returns the resize (``{"from", "to", "previous_boot_at"}``) or None, and a problem ('' when
    none): a history that cannot be written is a warning, never a failure.
    """
    if not path:
        return None, ""
    boot = boot_id() if boot is None else boot
    old = read(path)
    previous = earlier_boot(old, instance_id, boot)
    same_boot = old.get("instance_id") == instance_id and old.get("boot_id") == boot
    doc = {"version": 1, "instance_id": instance_id, "instance_type": instance_type,
           "target_lifecycle_state": target_state, "boot_id": boot,
           "recorded_at": old.get("recorded_at") if same_boot else (now or utc_now()),
           "previous": previous}
    resize = None
    if previous and previous.get("instance_type") not in (None, instance_type):
        resize = {"from": str(previous["instance_type"]), "to": instance_type,
                  "previous_boot_at": str(previous.get("recorded_at") or "")}
    if doc == old:
        return resize, ""
    try:
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except OSError as exc:
        return resize, (f"cannot record the instance type in {path}: {exc.strerror or exc} "
                        "(needed to notice a resize at the next boot)")
    return resize, ""


def earlier_boot(old: Record, instance_id: str, boot: str | None = None) -> Record | None:
    """The record of this instance's boot before this one in history ``old`` (None: none).

    ``old`` as :func:`read` returns it, before this boot's record replaced it.
    """
    boot = boot_id() if boot is None else boot
    if old.get("instance_id") != instance_id:
        return None
    if old.get("boot_id") == boot:  # an earlier run during this boot
        previous = old.get("previous")
        return previous if isinstance(previous, dict) else None
    return {k: old.get(k) for k in KEPT}


def before(path: str, identity: Identity) -> Record | None:
    """This instance's boot before this one, from the history at ``path`` (read before
    this boot's record replaces it: the tuning phase writes it)."""
    return earlier_boot(read(path), identity.instance_id)


def read(path: str) -> Record:
    """The recorded history ({} when absent, unreadable, or turned off with "")."""
    if not path:
        return {}
    try:
        data = json.loads(read_regular(path, MAX_BYTES))
    except (OSError, ValueError, RecursionError):  # ValueError: Unreadable too
        return {}
    return data if isinstance(data, dict) else {}
