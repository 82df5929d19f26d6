"""``state.json``: its vocabulary, and the Recorder that ``run`` writes it with.

Written atomically at every change, only read by the CLI (through :mod:`agent.state.reader`,
which status and wait import instead of this module). Nothing here ever holds a secret.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from typing import Any

from agent.errors import escape
from agent.state import reader
from agent.state.reader import STATE_FILE, boot_id, read

VERSION = 1


class Phase(enum.StrEnum):
    """The phases of a boot, in order."""

    METADATA = "metadata"
    SECRETS = "secrets"
    TUNING = "tuning"
    READINESS = "readiness"
    LIFECYCLE = "lifecycle"


PHASES = tuple(Phase)


class State(enum.StrEnum):
    """The boot as a whole."""

    RUNNING = reader.RUNNING
    READY = reader.READY
    FAILED = reader.FAILED


class Condition(enum.StrEnum):
    """How well it went: ``degraded`` is ready, with warnings worth a look."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    ERROR = "error"


class PhaseState(enum.StrEnum):
    """One phase of the boot."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


def utc_now() -> str:
    """RFC 3339 UTC timestamp with second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Recorder:
    """Builds the state document during a boot and writes it at every change.

    During the boot (from :meth:`start` to :meth:`finish`) a field update (:meth:`update`,
    :meth:`skipped`) rides on the next write, a phase's change or the finish, which every
    update is followed by: a boot writes state.json 12 times (start, each phase starting and
    ending, the finish), not at every field. Warnings and notes are written at once.

    Thread-safe: phases run concurrently. ``previous`` is the document of an earlier run
    in the same state directory (read before the first write), if any.
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self._lock = threading.RLock()
        try:
            self.previous = read(state_dir)
        except (OSError, ValueError):
            self.previous = None
        this_boot = boot_id()
        self._started: dict[str, float] = {}
        self._booting = False  # between start() and finish(): updates wait for a write
        self._written = False
        self._write_failed = False
        self.doc: dict[str, Any] = {
            "version": VERSION,
            "state": State.RUNNING.value,
            "condition": Condition.HEALTHY.value,
            "updated_at": utc_now(),
            "boot_id": this_boot,
            "pid": os.getpid(),
            "instance": {},
            "phases": [
                {"name": name, "state": PhaseState.PENDING.value, "started_at": None,
                 "finished_at": None, "duration_ms": None, "detail": "", "error": None}
                for name in PHASES
            ],
            "secrets": [],
            # what an earlier run of this boot did to the launch hook stays on record in every
            # rewrite, so that a run killed at any moment cannot make the next one forget it
            "lifecycle": self._carried("lifecycle", this_boot),
            "errors": [],
            "warnings": [],
        }

    @classmethod
    def resume(cls, state_dir: str, previous: dict[str, Any] | None = None) -> Recorder:
        """Go on with the document a boot wrote (the resident daemon, after it re-executed
        itself); ``previous``: the boot's own ``previous``. Writes from here are immediate."""
        rec = cls(state_dir)
        if rec.previous is not None:
            rec.doc = rec.previous
            rec._written = True
        rec.previous = previous
        return rec

    def _carried(self, name: str, this_boot: str) -> dict[str, Any]:
        """The field ``name`` of an earlier run's document of this same boot ({} if none)."""
        earlier = self.previous or {}
        value = earlier.get(name)
        same_boot = bool(this_boot) and earlier.get("boot_id") == this_boot
        return dict(value) if same_boot and isinstance(value, dict) else {}

    # -- updates (each one writes) -----------------------------------------------------

    def start(self) -> None:
        """Write the initial document (state ``running``)."""
        self._booting = True
        self.write()

    def phase(self, name: str, state: PhaseState, detail: str | None = None,
              error: str | None = None) -> None:
        """Move a phase to ``state``; timestamps and duration follow."""
        with self._lock:
            entry = self.phase_entry(name)
            now = time.monotonic()
            if state is PhaseState.RUNNING:
                self._started[name] = now
                entry["started_at"] = utc_now()
            elif state in (PhaseState.DONE, PhaseState.FAILED, PhaseState.SKIPPED):
                entry["finished_at"] = utc_now()
                if name in self._started:
                    entry["duration_ms"] = round((now - self._started[name]) * 1000)
            entry["state"] = state.value
            if detail is not None:
                entry["detail"] = escape(detail)
            if error is not None:
                entry["error"] = escape(error)
                self.doc["errors"].append(f"{name}: {entry['error']}")
            self.write()

    def note(self, name: str, detail: str) -> None:
        """Say what a running phase is going through (its detail), without changing its state."""
        with self._lock:
            entry = self.phase_entry(name)
            if entry["state"] == PhaseState.RUNNING.value:
                entry["detail"] = escape(detail)
                self.write()

    def skipped(self, phase: str, entries: list[dict[str, str]]) -> None:
        """The entries a phase left out (their ``when`` is false), beside the other phases'."""
        with self._lock:
            others = [e for e in self.doc.get("skipped") or [] if e.get("phase") != phase]
            self.doc["skipped"] = others + [{**e, "phase": phase} for e in entries]
            self._changed()

    def update(self, **fields: Any) -> None:
        """Set top-level fields (``instance``, ``secrets``, ``lifecycle``, ...)."""
        with self._lock:
            self.doc.update(fields)
            self._changed()

    def commit(self, **fields: Any) -> None:
        """Set top-level fields and write them now, durably (the file, then its directory,
        synced): for a record that must survive a kill or a power cut, such as the intent
        to complete the launch hook, written before the request goes out."""
        with self._lock:
            self.doc.update(fields)
            self.write(durable=True)

    def _changed(self) -> None:
        if not self._booting:
            self.write()

    def warn(self, message: str) -> None:
        """Record a warning: the boot becomes (or stays) ``degraded``."""
        message = escape(message)
        with self._lock:
            if message not in self.doc["warnings"]:
                self.doc["warnings"].append(message)
            if self.doc["condition"] == Condition.HEALTHY.value:
                self.doc["condition"] = Condition.DEGRADED.value
            self.write()

    def clear_warning(self, prefix: str) -> None:
        """Drop warnings starting with ``prefix``; healthy again when none are left."""
        with self._lock:
            kept = [w for w in self.doc["warnings"] if not w.startswith(prefix)]
            if len(kept) != len(self.doc["warnings"]):
                self.doc["warnings"] = kept
                if not kept and self.doc["condition"] == Condition.DEGRADED.value:
                    self.doc["condition"] = Condition.HEALTHY.value
                self.write()

    def finish(self, state: State) -> None:
        """Mark the boot ``ready`` or ``failed``; pending phases are skipped on failure."""
        with self._lock:
            self._booting = False
            self.doc["state"] = state.value
            if state is State.FAILED:
                self.doc["condition"] = Condition.ERROR.value
                for entry in self.doc["phases"]:
                    if entry["state"] == PhaseState.PENDING.value:
                        entry["state"] = PhaseState.SKIPPED.value
                        entry["detail"] = "not run: the boot failed"
            self.write()

    def apply(self, changes: list[list[Any]]) -> None:
        """What a :class:`Journal` kept (in a job of the resident daemon), applied in order."""
        for change in changes:
            kind, args = change[0], change[1:]
            if kind == "phase":
                name, entry, error = args
                with self._lock:
                    self.phase_entry(name).update(entry)
                    if error is not None:
                        self.doc["errors"].append(f"{name}: {error}")
                    self.write()
            elif kind == "note":
                self.note(*args)
            elif kind == "skipped":
                self.skipped(*args)
            elif kind == "update":
                self.update(**args[0])
            elif kind == "warn":
                self.warn(*args)
            elif kind == "clear_warning":
                self.clear_warning(*args)
            elif kind == "finish":
                self.finish(State(args[0]))

    # -- output ------------------------------------------------------------------------

    def write(self, *, durable: bool = False) -> None:
        """Replace state.json atomically (temp file + rename); ``durable``: synced to disk.

        The first write's failure is raised (the caller cannot record anything); later ones
        are logged once and the boot goes on: a full disk must not fail it half-way.
        """
        from agent.fsutil import atomic_write, fsync_dir  # noqa: PLC0415 - keep the read path light

        with self._lock:
            self.doc["updated_at"] = utc_now()
            try:
                data = json.dumps(self.doc, indent=2).encode() + b"\n"
                atomic_write(self.path, data, mode=0o644, dir_mode=0o755, sync=durable)
                if durable:
                    fsync_dir(self.state_dir)
                self._written = True
            except (OSError, TypeError, ValueError) as exc:
                if not self._written:
                    raise
                if not self._write_failed:
                    import logging  # noqa: PLC0415 - not on the status path

                    logging.getLogger(__name__).error(
                        "cannot update %s: %s", self.path,
                        getattr(exc, "strerror", None) or exc)
                self._write_failed = True

    def phase_entry(self, name: str) -> dict[str, Any]:
        """The phase's entry in the document."""
        phases: list[dict[str, Any]] = self.doc["phases"]
        for entry in phases:
            if entry["name"] == name:
                return entry
        raise KeyError(name)



def progress_path(result: str) -> str:
    """Where a job writes its changes so far, beside its result file ``result``."""
    return result + ".progress"


class Journal(Recorder):
    """A Recorder that writes nothing and keeps what it was told (:attr:`changes`).

    A job of the resident daemon runs in a child process with one; the resident, the only
    writer of state.json, applies the changes to its own document (:meth:`Recorder.apply`).
    It starts from the document as state.json holds it now. With ``progress`` (a path), the
    changes so far are also written there at each one, for the resident to apply while the
    job still runs (a gate's rounds, seen in ``agent status`` as they come).
    """

    def __init__(self, state_dir: str, progress: str | None = None) -> None:
        super().__init__(state_dir)
        if self.previous is not None:
            self.doc = self.previous
        self.changes: list[list[Any]] = []
        self.progress = progress

    def write(self, *, durable: bool = False) -> None:
        """Nothing: the resident writes (durably, when asked: :meth:`Recorder.apply`)."""

    def _keep(self, change: list[Any]) -> None:
        self.changes.append(change)
        if self.progress is not None:
            from agent.fsutil import atomic_write  # noqa: PLC0415 - as Recorder.write

            try:
                atomic_write(self.progress, json.dumps(self.changes).encode(), mode=0o600,
                             sync=False)
            except (OSError, TypeError, ValueError):
                self.progress = None  # the result still carries every change

    def phase(self, name: str, state: PhaseState, detail: str | None = None,
              error: str | None = None) -> None:
        """As :meth:`Recorder.phase`; kept as the entry it leaves (its times are ours)."""
        super().phase(name, state, detail, error)
        self._keep(["phase", name, dict(self.phase_entry(name)), error])

    def note(self, name: str, detail: str) -> None:
        """As :meth:`Recorder.note`, kept."""
        super().note(name, detail)
        self._keep(["note", name, detail])

    def skipped(self, phase: str, entries: list[dict[str, str]]) -> None:
        """As :meth:`Recorder.skipped`, kept."""
        super().skipped(phase, entries)
        self._keep(["skipped", phase, entries])

    def update(self, **fields: Any) -> None:
        """As :meth:`Recorder.update`, kept."""
        super().update(**fields)
        self._keep(["update", fields])

    def warn(self, message: str) -> None:
        """As :meth:`Recorder.warn`, kept."""
        super().warn(message)
        self._keep(["warn", message])

    def clear_warning(self, prefix: str) -> None:
        """As :meth:`Recorder.clear_warning`, kept."""
        super().clear_warning(prefix)
        self._keep(["clear_warning", prefix])

    def finish(self, state: State) -> None:
        """As :meth:`Recorder.finish`, kept."""
        super().finish(state)
        self._keep(["finish", state.value])
