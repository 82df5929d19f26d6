"""Configuration: a TOML file, overridden per key by ``AGENT_*`` environment variables.

The file is ``--config PATH``, else ``$AGENT_CONFIG``, else ``/etc/agent/agent.toml`` (which
may be absent: defaults apply). Each section is a frozen dataclass holding its fields and its
behaviour, beside its subject (:mod:`agent.config.document` names them); the field types
shared by all are in :mod:`agent.schema.fields`. pydantic-settings validates them
(:mod:`agent.config.validator`, loaded only to validate): unknown keys are errors, and every error
becomes one :class:`~agent.errors.ConfigError` line naming the file (or variable) and the
key. The validated-configuration cache (:mod:`agent.config.cache`) rebuilds the same classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.config.document import ENV_PREFIX, Config
from agent.errors import ConfigError
from agent.readfile import CONFIG_LIMIT, Unreadable, read_regular
from agent.state import reader

__all__ = ["Config", "ConfigError", "load"]


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get(reader.CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return Path(reader.DEFAULT_CONFIG), False


def agent_environment() -> list[tuple[str, str]]:
    """The ``AGENT_*`` variables (they may override any key), sorted."""
    return sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX))


def read_bytes(path: Path, *, must_exist: bool) -> bytes | None:
    """The file's bytes, or None for an absent default file; a FIFO, a device or a file
    larger than :data:`~agent.readfile.CONFIG_LIMIT` is refused without blocking."""
    try:
        return read_regular(path, CONFIG_LIMIT)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config {path}: no such file") from None
        return None
    except Unreadable as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def parse(path: Path, raw: bytes | None) -> dict[str, Any]:
    """The file's table (``{}`` for none)."""
    if raw is None:
        return {}
    import tomllib  # noqa: PLC0415 - only to validate (a cache hit reads no TOML)

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path}: not valid UTF-8 (byte {exc.start}): a TOML file "
                          "is UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config {path}: not valid TOML: nested too deeply") from None


def read_toml(path: Path, *, must_exist: bool) -> dict[str, Any]:
    """The file's table, or ``{}`` for an absent default file."""
    return parse(path, read_bytes(path, must_exist=must_exist))


def validate(path: Path, raw: bytes | None) -> Config:
    """The configuration these bytes (and the environment) give; ConfigError, one line."""
    from agent.config import validator  # noqa: PLC0415 - pydantic only to validate

    return validator.validate(path, parse(path, raw))


def load(explicit: str | None = None) -> Config:
    """Read, merge and validate; raise ConfigError with one line on any problem."""
    path, must_exist = config_path(explicit)
    return validate(path, read_bytes(path, must_exist=must_exist))
