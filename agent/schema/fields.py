"""The configuration's field types: each rule once, as an ``Annotated`` type.

Every section (each beside its subject; :mod:`agent.config.document` composes them) is a
frozen stdlib dataclass whose fields use these types. A rule is a small marker in the
``Annotated`` metadata that tells pydantic (the one validator, imported only when it
validates) how to check the field; the markers are inert otherwise, so a section rebuilt
from the validated-configuration cache never loads pydantic. A rule raises ``ValueError``;
its text becomes the one-line configuration error that names the key. Text that ends up in
a file name, a drop-in or a command line may hold no control character (a newline in a
path would inject a line into a generated drop-in).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

from agent.errors import control_at

SECTION = {"extra": "forbid", "frozen": True, "arbitrary_types_allowed": True}
"""Each section's ``__pydantic_config__``: unknown keys are errors; read-only once loaded
(the forms compiled from the fields, never keys, are of the agent's own types)."""

_KEYS: dict[type, dict[str, Any]] = {}


def keys(kind: type) -> dict[str, Any]:
    """A section's keys (its constructor's fields) with their types, ``Annotated`` rules
    kept: what the validator checks and what the cache rebuilds (looked up once per class)."""
    if kind not in _KEYS:
        hints: dict[str, Any] = {}
        for base in reversed(kind.__mro__):  # a field's type, from the class declaring it
            if dataclasses.is_dataclass(base):
                hints.update(inspect.get_annotations(base, eval_str=True))
        _KEYS[kind] = {field.name: hints[field.name] for field in dataclasses.fields(kind)
                       if field.init}
    return _KEYS[kind]


def bare(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` (the type itself otherwise)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation

PATH_MAX = 4096  # bytes of a path (Linux PATH_MAX)
NAME_MAX = 255  # bytes of one path component (Linux NAME_MAX)
ID_MAX = 2**32 - 2  # uid_t/gid_t; (uid_t)-1 means "unchanged" to chown(2)


class Check:
    """A field rule: ``func`` runs after the field's type is validated (``before``: on the
    raw value, instead of the type's own conversion rules coming first)."""

    def __init__(self, func: Callable[[Any], Any], *, before: bool = False) -> None:
        self.func = func
        self.before = before

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """pydantic's documented hook for ``Annotated`` metadata."""
        from pydantic_core import core_schema  # noqa: PLC0415 - only when validating

        schema = handler(source)
        if self.before:
            return core_schema.no_info_before_validator_function(self.func, schema)
        return core_schema.no_info_after_validator_function(self.func, schema)


class Wrap:
    """A rule over a whole section: ``func(raw, validate)`` validates ``raw`` (by calling
    ``validate``) and may refuse the result, knowing what was given."""

    def __init__(self, func: Callable[[Any, Callable[[Any], Any]], Any]) -> None:
        self.func = func

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """pydantic's documented hook for ``Annotated`` metadata."""
        from pydantic_core import core_schema  # noqa: PLC0415 - only when validating

        return core_schema.no_info_wrap_validator_function(self.func, handler(source))


class Bounds:
    """Constraints of a number (or a string's pattern), as pydantic's own checks word them;
    the first rule of its field (they constrain the type itself)."""

    def __init__(self, **constraints: Any) -> None:
        self.constraints = constraints

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """pydantic's documented hook for ``Annotated`` metadata."""
        schema = handler(source)
        if "function" in schema["type"]:
            raise TypeError("Bounds must come before the field's Check rules")
        return {**schema, **self.constraints}


def span(low: float, high: float) -> Bounds:
    """Bounds for a finite number in ``[low, high]`` (``Annotated[float, span(1, 60)]``)."""
    return Bounds(ge=low, le=high, allow_inf_nan=False)


def zero_or_at_least(low: float) -> Check:
    """0 (meaning "automatic") or at least ``low``."""

    def check(value: float) -> float:
        if value != 0 and value < low:
            raise ValueError(f"must be 0 (automatic) or at least {low:g}, got {value:g}")
        return value

    return Check(check)


def no_control(value: str, what: str = "value") -> str:
    """Refuse control characters (newline, tab, NUL...), naming the first one."""
    at = control_at(value)
    if at >= 0:
        raise ValueError(f"{what} {value!r} holds a control character "
                         f"({value[at]!r} at {at})")
    return value


def _text(value: str) -> str:
    return no_control(value)


Text = Annotated[str, Check(_text)]
"""A string with no control characters (names, ARNs, ids)."""


def check_path(value: str) -> str:
    """Lengths the kernel accepts (ENAMETOOLONG otherwise), no control characters."""
    no_control(value, "path")
    if len(os.fsencode(value)) > PATH_MAX:
        raise ValueError(f"path is {len(os.fsencode(value))} bytes long (at most {PATH_MAX})")
    for part in value.split("/"):
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(f"path component {part[:20]!r}... is {len(os.fsencode(part))} "
                             f"bytes long (at most {NAME_MAX})")
    return value


def _absolute_dir(value: str) -> str:
    check_path(value)
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path")
    return "/" + os.path.normpath(value).lstrip("/")  # normpath keeps a leading "//"


def _absolute_file(value: str) -> str:
    if value.endswith("/"):
        raise ValueError(f"{value!r} must be an absolute file path")
    path = _absolute_dir(value)
    if path == "/":
        raise ValueError(f"{value!r} must be an absolute file path")
    return path


def _optional_file(value: str) -> str:
    return value and _absolute_file(value)


AbsoluteDir = Annotated[str, Check(_absolute_dir)]
AbsoluteFile = Annotated[str, Check(_absolute_file)]
OptionalFile = Annotated[str, Check(_optional_file)]
"""``""`` (off) or an absolute file path."""


def _mode(value: object) -> int:
    """``"0400"``, ``"400"``, ``"0o400"`` or a TOML integer (``0o400``); never world-writable."""
    if isinstance(value, bool):
        raise ValueError('must be an octal mode such as "0400"')
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"(0o)?[0-7]{1,4}", value):
        mode = int(value.removeprefix("0o"), 8)
    else:
        raise ValueError('must be an octal mode such as "0400"')
    if mode < 0:
        raise ValueError(f"{mode} is negative: a mode is an octal number such as \"0400\"")
    if mode > 0o777:
        raise ValueError(f"{oct(mode)} has bits beyond 0777 (no setuid, setgid or sticky)")
    if mode & 0o002:
        raise ValueError(f"{mode:04o} lets any user write the file")
    return mode


Mode = Annotated[int, Check(_mode, before=True)]


def _account(value: object) -> str | int:
    """A user or group: a name, or a number within uid_t (checked, resolved later)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a name or a number")
    text = str(value)
    if text.isdigit() or isinstance(value, int):
        number = int(value)
        if not 0 <= number <= ID_MAX:
            raise ValueError(f"{text} is not a valid id (0 to {ID_MAX})")
        return text
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", text):
        raise ValueError(f"{text!r} is not a user or group name")
    return text


Account = Annotated[str, Check(_account, before=True)]


UNIT_NAME = r"[A-Za-z0-9:_.\\@-]{1,250}\.(service|socket|target|timer|path|mount)\Z"
# patterns stay text until a rule first uses them (re caches them): no cost to a cache hit


def _unit(value: str) -> str:
    if not re.match(UNIT_NAME, value):
        raise ValueError(f"{value!r} is not a unit name such as \"app.service\"")
    return value


def _service(value: str) -> str:
    if not re.match(UNIT_NAME, value) or not value.endswith(".service"):
        raise ValueError(f"{value!r} is not a service name such as \"app.service\"")
    return value


UnitName = Annotated[str, Check(_unit)]
ServiceName = Annotated[str, Check(_service)]


def _command(value: list[str]) -> list[str]:
    """An argv list (run without a shell) starting with an absolute path; [] allowed."""
    for arg in value:
        no_control(arg, "command argument")
    if value and not value[0].startswith("/"):
        raise ValueError(f"{value!r} is an argv list starting with an absolute path (no shell)")
    return value


def _commands(value: list[list[str]]) -> list[list[str]]:
    for argv in value:
        if not argv:
            raise ValueError("an empty command")
    return value


Command = Annotated[list[str], Check(_command)]
Commands = Annotated[list[Command], Check(_commands)]


def _condition(value: str) -> str:
    if value:
        from agent.schema.placeholders import condition  # noqa: PLC0415

        condition(value)  # ValueError naming the problem
    return value


Condition = Annotated[str, Check(_condition)]
"""A ``when`` expression: the entry is kept only where it is true ('' : always)."""
