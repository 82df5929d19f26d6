"""``state.json`` on disk, for its readers: where it is, and reading it.

``agent status`` and ``agent wait`` import this module and nothing heavier: not json, re,
enum, typing, threading or tomllib (each of those costs more than the rest of the command).
The document is read by the small strict JSON reader below (:func:`loads`), the
configuration's ``state_dir`` found by a scan of its top-level lines (tomllib only when they
are not plain). A document that cannot be read, or whose fields have other types than the
readers rely on, is a ValueError naming the field. The writer is :mod:`agent.state.recorder`.
"""

from __future__ import annotations

import os

from agent.readfile import CONFIG_LIMIT, Unreadable, read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE_FILE = "state.json"
DEFAULT_STATE_DIR = "/run/agent"
DEFAULT_CONFIG = "/etc/agent/agent.toml"  # the configuration file, unless named
CONFIG_ENV = "AGENT_CONFIG"  # names it, after --config
MAX_STATE_BYTES = 1 << 20  # a state document is a few kB; anything far larger is not ours

# The document's ``state`` (agent.state.recorder.State is these, as an enum)
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
        data = read_regular(path, CONFIG_LIMIT)
        value = top_level_string(data, "state_dir")
        if value is None:  # not plain enough for the scan
            import tomllib  # noqa: PLC0415

            value = tomllib.loads(data.decode()).get("state_dir")
        if isinstance(value, str) and value:
            return value
    except (OSError, ValueError):  # ValueError: Unreadable too (a FIFO, a device, too large)
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
    a sane size, or a document of the wrong shape, is a ValueError naming the problem.
    """
    path = os.path.join(state_dir, STATE_FILE)
    try:
        data = read_regular(path, MAX_STATE_BYTES, follow=False)
    except FileNotFoundError:
        return None
    except Unreadable as exc:  # a symlink, a FIFO, too large, refused
        raise ValueError(f"{path}: {exc}") from None
    try:
        doc = loads(data)
    except ValueError:  # a cut-off or garbled document, or one nested too deep
        raise ValueError(f"{path} is not valid JSON") from None
    return check(doc, path)


# -- JSON, without importing json ---------------------------------------------------------
# The standard module costs `agent status` as much again as the rest of it (json imports re,
# which imports enum and compiles patterns), so the state document is read by this strict
# reader of RFC 8259 text: what json.loads(text) accepts it returns the same, anything else
# (a document cut short, a control character in a string, nesting deeper than MAX_DEPTH)
# is a ValueError. tests/state/test_reader.py holds it to json.loads on every prefix and on
# garbled copies of a real document.

MAX_DEPTH = 64  # a state document nests 4 deep
_SPACE = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL = frozenset(map(chr, range(32)))
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}
_CONSTANTS: dict[str, Any] = {"null": None, "true": True, "false": False, "NaN": float("nan"),
                              "Infinity": float("inf"), "-Infinity": float("-inf")}


def loads(data: bytes) -> Any:
    """The JSON value of a UTF-8 document, as ``json.loads`` reads it; ValueError."""
    text = data.decode()
    value, end = _value(text, _skip(text, 0), 0)
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data at {end}")
    return value


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _value(text: str, i: int, depth: int) -> tuple[Any, int]:
    """The value starting at ``i`` (no space before it) and where it ends."""
    char = text[i:i + 1]
    if char == '"':
        return _string(text, i + 1)
    if char in ("{", "["):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} at {i}")
        return (_object if char == "{" else _array)(text, _skip(text, i + 1), depth + 1)
    if char == "-" or char in _DIGITS:
        number = _number(text, i)
        if number is not None:
            return number
    for name, constant in _CONSTANTS.items():
        if text.startswith(name, i):
            return constant, i + len(name)
    raise ValueError(f"expecting a value at {i}")


def _object(text: str, i: int, depth: int) -> tuple[dict[str, Any], int]:
    found: dict[str, Any] = {}
    if text[i:i + 1] == "}":
        return found, i + 1
    while True:
        if text[i:i + 1] != '"':
            raise ValueError(f"expecting a property name at {i}")
        key, i = _string(text, i + 1)
        i = _skip(text, i)
        if text[i:i + 1] != ":":
            raise ValueError(f"expecting ':' at {i}")
        found[key], i = _value(text, _skip(text, i + 1), depth)
        i = _skip(text, i)
        if text[i:i + 1] == "}":
            return found, i + 1
        if text[i:i + 1] != ",":
            raise ValueError(f"expecting ',' or '}}' at {i}")
        i = _skip(text, i + 1)


def _array(text: str, i: int, depth: int) -> tuple[list[Any], int]:
    found: list[Any] = []
    if text[i:i + 1] == "]":
        return found, i + 1
    while True:
        item, i = _value(text, i, depth)
        found.append(item)
        i = _skip(text, i)
        if text[i:i + 1] == "]":
            return found, i + 1
        if text[i:i + 1] != ",":
            raise ValueError(f"expecting ',' or ']' at {i}")
        i = _skip(text, i + 1)


def _string(text: str, i: int) -> tuple[str, int]:
    """The string whose opening quote is before ``i``, and where it ends."""
    parts = []
    while True:
        end = text.find('"', i)
        escape = text.find("\\", i, end)
        stop = escape if escape >= 0 else end
        if end < 0 or not _CONTROL.isdisjoint(text[i:stop]):
            raise ValueError(f"unterminated string, or a control character in it, at {i}")
        parts.append(text[i:stop])
        if escape < 0:
            return "".join(parts), end + 1
        code = text[escape + 1:escape + 2]
        if code in _ESCAPES:
            parts.append(_ESCAPES[code])
            i = escape + 2
            continue
        unit, i = _unit(text, escape)
        if 0xD800 <= unit <= 0xDBFF and text.startswith("\\u", i):
            low, after = _unit(text, i)
            if 0xDC00 <= low <= 0xDFFF:
                unit, i = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00), after
        parts.append(chr(unit))


def _unit(text: str, escape: int) -> tuple[int, int]:
    """The code unit of the ``\\uXXXX`` at ``escape``, and where it ends."""
    digits = text[escape + 2:escape + 6]
    if text[escape + 1:escape + 2] != "u" or len(digits) != 4 or not _HEX.issuperset(digits):
        raise ValueError(f"invalid escape at {escape}")
    return int(digits, 16), escape + 6


def _number(text: str, i: int) -> tuple[int | float, int] | None:
    """The number at ``i`` (its longest valid prefix, as json reads it); None when none."""
    start = i
    i += text[i] == "-"
    if text[i:i + 1] == "0":
        i += 1
    elif text[i:i + 1] in _DIGITS:
        i = _digits(text, i)
    else:
        return None
    whole = i
    if text[i:i + 1] == "." and text[i + 1:i + 2] in _DIGITS:
        i = _digits(text, i + 1)
    if text[i:i + 1] in ("e", "E"):
        sign = i + 1 + (text[i + 1:i + 2] in ("+", "-"))
        if text[sign:sign + 1] in _DIGITS:
            i = _digits(text, sign)
    if i == whole:
        return int(text[start:i]), i
    return float(text[start:i]), i


def _digits(text: str, i: int) -> int:
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    return i


_FIELDS: dict[str, type] = {
    "state": str, "condition": str, "updated_at": str, "instance": dict, "phases": list,
    "secrets": list, "lifecycle": dict, "errors": list, "warnings": list, "pid": int,
    "boot_id": str, "termination": dict, "rebalance": dict, "image": dict, "resize": dict,
    "tuning": list, "refresh": dict, "skipped": list, "events": list, "health": dict,
}


# Inside the records (an object, or each object of a list): the keys the readers format or
# look into, and their types (absent or null is always allowed).
_INSIDE: dict[str, dict[str, type]] = {
    "instance": {key: str for key in ("instance_id", "instance_type", "region",
                                      "availability_zone", "image_id", "account_id",
                                      "auto_scaling_group", "target_lifecycle_state")},
    "phases": {"name": str, "state": str, "detail": str, "error": str,
               "started_at": str, "finished_at": str, "duration_ms": int},
    "lifecycle": {"group": str, "hook": str, "result": str, "sending": str},
    "termination": {"hook": dict, "steps": list, "reason": str},
}


def _kind_error(where: str, value: object, kind: type) -> str:
    """Why ``value`` is not of ``kind`` ('' when it is, or is absent); a bool is no int."""
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return ""
    article = "an" if kind.__name__[0] in "aeiou" else "a"
    return f"{where} is not {article} {kind.__name__}"


def _records(doc: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    """The field's records with where they are (``phases[2]``); the field has its type."""
    value = doc.get(name)
    if isinstance(value, list):
        return [(f"{name}[{i}]", item) for i, item in enumerate(value)]
    return [(name, value)] if isinstance(value, dict) else []


def check(doc: object, path: str = STATE_FILE) -> dict[str, Any]:
    """The document if its fields have the types the readers rely on, else ValueError."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a JSON object")
    problem = _shape_problem(doc)
    if problem:
        raise ValueError(f"{path}: {problem}")
    pid = doc.get("pid")
    if isinstance(pid, int) and not 0 < pid < 1 << 22:  # PID_MAX_LIMIT
        raise ValueError(f"{path}: pid {pid} is out of range")
    return doc


def _shape_problem(doc: dict[str, Any]) -> str:
    """The first field of another type than the readers rely on ('' when none)."""
    for name, kind in _FIELDS.items():
        problem = _kind_error(name, doc.get(name), kind)
        if problem:
            return problem
    steps = (doc.get("termination") or {}).get("steps")
    lists = {"phases": (dict, doc.get("phases")), "secrets": (dict, doc.get("secrets")),
             "errors": (str, doc.get("errors")), "warnings": (str, doc.get("warnings")),
             "termination.steps": (dict, steps if isinstance(steps, list) else None)}
    for name, (kind, items) in lists.items():
        if not all(isinstance(item, kind) for item in items or []):
            return f"{name} holds something other than {'objects' if kind is dict else 'strings'}"
    for name, keys in _INSIDE.items():
        for where, record in _records(doc, name):
            for key, kind in keys.items():
                problem = _kind_error(f"{where}.{key}", record.get(key), kind)
                if problem:
                    return problem
    return ""


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
