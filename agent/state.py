"""``state.json``: written atomically by ``run`` at every change, only read by the CLI.

This module stays light (json, os, enum): ``agent status`` and ``agent wait`` import it and
nothing heavier. Nothing here ever holds a secret value.
"""

from __future__ import annotations

import enum
import json
import os
import stat
import threading
import time
from typing import Any

STATE_FILE = "state.json"
DEFAULT_STATE_DIR = "/run/agent"
VERSION = 1
MAX_STATE_BYTES = 1 << 20  # a state document is a few kB; anything far larger is not ours


class Phase(enum.StrEnum):
    """The phases of a boot, in order."""

    METADATA = "metadata"
    SECRETS = "secrets"
    TUNING = "tuning"
    LIFECYCLE = "lifecycle"


PHASES = tuple(Phase)


class State(enum.StrEnum):
    """The boot as a whole."""

    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


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


def boot_id() -> str:
    """The kernel's id of this boot (tells a stale state file from a current one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def resolve_state_dir(explicit: str | None, config_path: str | None = None) -> str:
    """``--state-dir``, else ``$AGENT_STATE_DIR``, else the config's ``state_dir``, else default.

    The config file is read with tomllib only, unvalidated: status must not need pydantic.
    """
    if explicit:
        return explicit
    env = os.environ.get("AGENT_STATE_DIR")
    if env:
        return env
    path = config_path or os.environ.get("AGENT_CONFIG") or "/etc/agent/agent.toml"
    try:
        import tomllib  # noqa: PLC0415 - only when no faster source named the directory

        with open(path, "rb") as handle:
            value = tomllib.load(handle).get("state_dir")
        if isinstance(value, str) and value:
            return value
    except (OSError, ValueError):
        pass
    return DEFAULT_STATE_DIR


def read(state_dir: str) -> dict[str, Any] | None:
    """The state document, or None when no boot has started (no file).

    Opened without blocking and without following a symlink; anything but a regular file of
    a sane size, or a document of the wrong shape, is a ValueError (OSError for I/O).
    """
    path = os.path.join(state_dir, STATE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            raise ValueError(f"{path} is a symlink, not a file the agent wrote") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if st.st_size > MAX_STATE_BYTES:
            raise ValueError(f"{path} is {st.st_size} bytes, too large for a state file")
        data = os.read(fd, MAX_STATE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError(f"{path} is not valid JSON") from None
    return check(doc, path)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state": str, "condition": str, "updated_at": str, "instance": dict, "phases": list,
    "secrets": list, "lifecycle": dict, "errors": list, "warnings": list, "pid": int,
    "boot_id": str, "termination": dict, "rebalance": dict, "image": dict, "resize": dict,
    "tuning": list, "refresh": dict, "events": list, "health": dict,
}


def check(doc: object, path: str = STATE_FILE) -> dict[str, Any]:
    """The document if its fields have the types the readers rely on, else ValueError."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a JSON object")
    for name, kind in _FIELDS.items():
        value = doc.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{path}: {name} is not a {getattr(kind, '__name__', kind)}")
    for name in ("phases", "secrets"):
        if not all(isinstance(item, dict) for item in doc.get(name) or []):
            raise ValueError(f"{path}: {name} holds something other than objects")
    for name in ("errors", "warnings"):
        if not all(isinstance(item, str) for item in doc.get(name) or []):
            raise ValueError(f"{path}: {name} holds something other than strings")
    pid = doc.get("pid")
    if isinstance(pid, int) and not 0 < pid < 1 << 22:  # PID_MAX_LIMIT
        raise ValueError(f"{path}: pid {pid} is out of range")
    return doc


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Recorder:
    """Builds the state document during a boot and writes it at every change.

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
        self._started: dict[str, float] = {}
        self._written = False
        self._write_failed = False
        self.doc: dict[str, Any] = {
            "version": VERSION,
            "state": State.RUNNING.value,
            "condition": Condition.HEALTHY.value,
            "updated_at": utc_now(),
            "boot_id": boot_id(),
            "pid": os.getpid(),
            "instance": {},
            "phases": [
                {"name": name, "state": PhaseState.PENDING.value, "started_at": None,
                 "finished_at": None, "duration_ms": None, "detail": "", "error": None}
                for name in PHASES
            ],
            "secrets": [],
            "lifecycle": {},
            "errors": [],
            "warnings": [],
        }

    # -- updates (each one writes) -----------------------------------------------------

    def start(self) -> None:
        """Write the initial document (state ``running``)."""
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
                entry["detail"] = detail
            if error is not None:
                entry["error"] = error
                self.doc["errors"].append(f"{name}: {error}")
            self.write()

    def update(self, **fields: Any) -> None:
        """Set top-level fields (``instance``, ``secrets``, ``lifecycle``, ...)."""
        with self._lock:
            self.doc.update(fields)
            self.write()

    def warn(self, message: str) -> None:
        """Record a warning: the boot becomes (or stays) ``degraded``."""
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
            self.doc["state"] = state.value
            if state is State.FAILED:
                self.doc["condition"] = Condition.ERROR.value
                for entry in self.doc["phases"]:
                    if entry["state"] == PhaseState.PENDING.value:
                        entry["state"] = PhaseState.SKIPPED.value
                        entry["detail"] = "not run: the boot failed"
            self.write()

    # -- output ------------------------------------------------------------------------

    def write(self) -> None:
        """Replace state.json atomically (temp file + rename).

        The first write's failure is raised (the caller cannot record anything); later ones
        are logged once and the boot goes on: a full disk must not fail it half-way.
        """
        from agent.fsutil import atomic_write  # noqa: PLC0415 - keep the read path light

        with self._lock:
            self.doc["updated_at"] = utc_now()
            try:
                data = json.dumps(self.doc, indent=2).encode() + b"\n"
                atomic_write(self.path, data, mode=0o644, dir_mode=0o755, sync=False)
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
