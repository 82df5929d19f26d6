"""``state.json`` on disk, for its readers: where it is, and reading it.

``agent status`` and ``agent wait`` import this module and nothing heavier: not json, re,
enum, typing, threading or tomllib (each of those costs more than the rest of the command).
The document is parsed by the C scanner behind :mod:`json` (``_json``), the configuration's
``state_dir`` found by a scan of its top-level lines; either falls back to the standard
module when the fast way does not apply. The writer is :mod:`agent.state`.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
DEFAULT_STATE_DIR = "/run/agent"
DEFAULT_CONFIG = "/etc/agent/agent.toml"  # the configuration file, unless named
CONFIG_ENV = "AGENT_CONFIG"  # names it, after --config
MAX_STATE_BYTES = 1 << 20  # a state document is a few kB; anything far larger is not ours

# The document's ``state`` (agent.state.State is these, as an enum)
RUNNING, READY, FAILED = "running", "ready", "failed"


def resolve_state_dir(explicit: str | None, config_path: str | None = None) -> str:
    """``--state-dir``, else ``$AGENT_STATE_DIR``, else the config's ``state_dir``, else default.

    The config file is read unvalidated (status must not need pydantic): its top-level
    lines, or tomllib when they are not plain ``key = value`` lines.
    """
    if explicit:
        return explicit
    env = os.environ.get("AGENT_STATE_DIR")
    if env:
        return env
    path = config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        value = top_level_string(data, "state_dir")
        if value is None:  # not plain enough for the scan
            import tomllib  # noqa: PLC0415

            value = tomllib.loads(data.decode()).get("state_dir")
        if isinstance(value, str) and value:
            return value
    except (OSError, ValueError):
        pass
    return DEFAULT_STATE_DIR


_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def top_level_string(data: bytes, key: str) -> str | bool | None:
    """The string ``key = "..."`` before the first table of a TOML document; ``False`` when
    the key is not there; None when the lines are not plain enough to tell without a TOML
    parser (a multi-line string, a quoted or dotted key, an escape, a value of another type).
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            return False
        name, eq, rest = line.partition("=")
        name, rest = name.strip(), rest.strip()
        if not eq or not name or not set(name) <= _BARE_KEY or '"""' in rest or "'''" in rest:
            return None
        if name != key:
            continue
        quote = rest[:1]
        if quote not in ('"', "'"):
            return None
        end = rest.find(quote, 1)
        if end < 0 or (quote == '"' and "\\" in rest[:end]):
            return None
        tail = rest[end + 1:].strip()
        if tail and not tail.startswith("#"):
            return None
        return rest[1:end]
    return False


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
        doc = loads(data)
    except (ValueError, RecursionError):
        raise ValueError(f"{path} is not valid JSON") from None
    return check(doc, path)


class _Decoding:
    """What the C scanner reads off its context: :class:`json.JSONDecoder`'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def loads(data: bytes) -> Any:
    """``json.loads`` for a UTF-8 document, by the C scanner (json itself when it is absent)."""
    text = data.decode()
    try:
        from _json import make_scanner  # noqa: PLC0415
    except ImportError:
        import json  # noqa: PLC0415

        return json.loads(text)
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        doc, end = make_scanner(_Decoding)(text, start)  # type: ignore[arg-type]  # duck-typed
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError("extra data after the JSON document")
    return doc


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state": str, "condition": str, "updated_at": str, "instance": dict, "phases": list,
    "secrets": list, "lifecycle": dict, "errors": list, "warnings": list, "pid": int,
    "boot_id": str, "termination": dict, "rebalance": dict, "image": dict, "resize": dict,
    "tuning": list, "refresh": dict, "skipped": list, "events": list, "health": dict,
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


def boot_id() -> str:
    """The kernel's id of this boot (tells a stale state file from a current one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
