"""The one validator: pydantic-settings checks a configuration table and the environment.

:func:`validate` gives a :class:`~agent.config.document.Config` (the same frozen dataclasses the
validated-configuration cache rebuilds), or raises one :class:`~agent.errors.ConfigError`
line naming the source (file or ``AGENT_*`` variable), the key and the problem, with the
closest known key when one is near. Only a boot that validates imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.config.document import ENV_PREFIX, Config
from agent.errors import ConfigError, closest
from agent.schema.fields import bare, keys

T = TypeVar("T")
UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")  # a key no section has


class _Sources(BaseSettings):
    """Where the values come from: the environment wins over the file (the init arguments)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_KnownEnvSource(settings_cls), init_settings)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


_FIELDS: dict[str, Any] = {field.name: (keys(Config)[field.name], _default(field))
                           for field in dataclasses.fields(Config)}
Settings = create_model(  # Config's fields, read by pydantic-settings
    "Settings", __base__=_Sources, __doc__="The configuration as pydantic-settings reads it.",
    **_FIELDS)


class _KnownEnvSource(EnvSettingsSource):
    """``AGENT_*`` variables, keeping only those that name a key (others are ignored)."""

    def __call__(self) -> dict[str, Any]:
        return _prune(super().__call__(), Config)

    def next_field(self, field: FieldInfo | Any | None, key: str,
                   case_sensitive: bool | None = None) -> FieldInfo | None:
        """The key of a section (a stdlib dataclass) named by ``AGENT_SECTION__KEY``."""
        annotation = bare(field.annotation if isinstance(field, FieldInfo) else field)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            for name, hint in keys(annotation).items():
                if name.lower() == key.lower():
                    return FieldInfo.from_annotation(hint)
            return None
        return super().next_field(field, key, case_sensitive)

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        """JSON of a list or table; invalid JSON is one line naming the variable."""
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError as exc:
            names = sorted(n for n, v in os.environ.items() if v == value and
                           n.upper().startswith(ENV_PREFIX) and
                           n.upper().endswith(field_name.upper()))
            where = f"environment {names[0]}" if names else f"environment ({field_name})"
            detail = (f"{exc.msg} at line {exc.lineno} column {exc.colno}"
                      if isinstance(exc, json.JSONDecodeError) else str(exc))
            raise ConfigError(f"{where}: not valid JSON: {detail} (a list or table is JSON, "
                              f"as in {ENV_PREFIX}SECRETS__FILES='[{{\"secret_id\": \"x\", "
                              "\"path\": \"x\"}]')") from None


def _prune(data: dict[str, Any], model: type[Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    known = keys(model)
    for name, value in data.items():
        if name not in known:
            continue
        sub = section_of(known[name])
        if isinstance(value, dict) and sub is not None and get_origin(
                bare(known[name])) is not list:
            kept[name] = _prune(value, sub)
        else:
            kept[name] = value
    return kept


def validate(path: Path, data: dict[str, Any]) -> Config:
    """The configuration this table (and the environment) give; ConfigError, one line."""
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None
    try:
        return Config(**{name: getattr(settings, name) for name in keys(Config)})
    except ValueError as exc:  # a rule across sections
        raise ConfigError(f"config {path}: (top level): {exc}") from None


def _one_line(path: Path, exc: ValidationError) -> str:
    """Name the source (file or environment variable), the key and the problem."""
    errors = exc.errors(include_url=False, include_input=False)
    errors.sort(key=lambda e: e["type"] not in UNKNOWN)  # a typo explains the rest
    first = errors[0]
    key = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in UNKNOWN:
        message = "unknown key" + _hint(first["loc"])
    source = f"config {path}"
    env_name = _env_source(first["loc"])
    if env_name:
        source = f"environment {env_name}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {key}: {message}{more}"


def _hint(loc: tuple[int | str, ...]) -> str:
    """`` (did you mean 'secrets'?)`` for a key close to a known one at its place, else the
    keys known there."""
    model: type[Any] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = keys(model).get(part) if model is not None else None
        model = section_of(annotation)
        if model is None:
            return ""
    if model is None:
        return ""
    known = list(keys(model))
    close = closest(str(loc[-1]), known)
    return f" (did you mean {close[0]!r}?)" if close else f" (known here: {', '.join(known)})"


def section_of(annotation: Any) -> type[Any] | None:
    """The section inside a section's or a list of entries' type (None for plain values)."""
    annotation = bare(annotation)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        return section_of(item)
    return None


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _env_source(loc: tuple[int | str, ...]) -> str | None:
    """The AGENT_* variable that supplied the failing key, if one did."""
    names = {name.upper() for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    parts = [str(part) for part in loc if isinstance(part, str)]
    for length in range(len(parts), 0, -1):
        candidate = ENV_PREFIX + "__".join(parts[:length]).upper()
        if candidate in names:
            return candidate
    return None


def section(kind: type[T], **values: Any) -> T:
    """One section or entry validated from its keys (as a configuration file gives them):
    ValidationError naming the key on a problem."""
    return TypeAdapter(kind).validate_python(values)
