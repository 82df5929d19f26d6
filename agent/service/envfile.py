"""Environment files exactly as systemd's ``EnvironmentFile=`` reads them.

:func:`render` quotes every value so that systemd (``src/basic/env-file.c``) reads it back
byte for byte; :func:`parse` is a faithful port of that parser, used to compare with files
already written and by the tests. Errors name the variable, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from agent.errors import control_at

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NEEDS_ESCAPE = '"\\`$'  # SHELL_NEED_ESCAPE: unescaped inside double quotes


class EnvFileError(ValueError):
    """A name or value that systemd could not read back exactly."""


def check_name(name: str) -> None:
    """Raise unless ``name`` is a portable environment variable name."""
    if not NAME.match(name):
        raise EnvFileError(f"{name!r} is not a valid environment variable name")


def quote(name: str, value: str) -> str:
    """One ``NAME="value"`` line (no newline), double-quoted with systemd's escapes."""
    check_name(name)
    if control_at(value, allowed="\t\n") >= 0:  # systemd refuses the others in values
        raise EnvFileError(f"{name}: value has control characters systemd would drop")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvFileError(f"{name}: value is not valid UTF-8") from None
    escaped = "".join("\\" + ch if ch in _NEEDS_ESCAPE else ch for ch in value)
    return f'{name}="{escaped}"'


def render(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """The whole file: one line per variable, in the order given."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return "".join(quote(name, value) + "\n" for name, value in items)


def parse(text: str) -> dict[str, str]:  # noqa: PLR0912, PLR0915 - a state machine, as upstream
    """Read an environment file as systemd does (comments, quotes, escapes, continuations)."""
    result: dict[str, str] = {}
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_ws: int | None = None
    value_ws: int | None = None

    def push() -> None:
        name = "".join(key[:key_ws] if key_ws is not None else key)
        result[name] = "".join(value)

    for ch in text:
        if ch == "\0":
            break
        if state == "pre_key":
            if ch in "#;":
                state = "comment"
            elif ch not in " \t\n\r":
                state, key, key_ws = "key", [ch], None
        elif state == "key":
            if ch in "\n\r":
                state, key = "pre_key", []
            elif ch == "=":
                state, value, value_ws = "pre_value", [], None
            else:
                if ch not in " \t":
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(ch)
        elif state == "pre_value":
            if ch in "\n\r":
                push()
                state, key = "pre_key", []
            elif ch == "'":
                state = "single"
            elif ch == '"':
                state = "double"
            elif ch == "\\":
                state = "value_escape"
            elif ch not in " \t":
                state = "value"
                value.append(ch)
        elif state == "value":
            if ch in "\n\r":
                if value_ws is not None:
                    del value[value_ws:]
                push()
                state, key = "pre_key", []
            elif ch == "\\":
                state, value_ws = "value_escape", None
            else:
                if ch not in " \t":
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(ch)
        elif state == "value_escape":
            state = "value"
            if ch not in "\n\r":
                value.append(ch)
        elif state == "single":
            if ch == "'":
                state = "pre_value"
            else:
                value.append(ch)
        elif state == "double":
            if ch == '"':
                state = "pre_value"
            elif ch == "\\":
                state = "double_escape"
            else:
                value.append(ch)
        elif state == "double_escape":
            state = "double"
            if ch in _NEEDS_ESCAPE:
                value.append(ch)
            elif ch != "\n":
                value.extend(("\\", ch))
        elif state == "comment":
            if ch == "\\":
                state = "comment_escape"
            elif ch in "\n\r":
                state = "pre_key"
        elif state == "comment_escape":
            state = "pre_key" if ch in "\n\r" else "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        if state == "value" and value_ws is not None:
            del value[value_ws:]
        push()
    return result
