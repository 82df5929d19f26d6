"""Configuration: a TOML file, overridden per key by ``AGENT_*`` environment variables.

The file is ``--config PATH``, else ``$AGENT_CONFIG``, else ``/etc/agent/agent.toml`` (which
may be absent: defaults apply). Each section is a frozen dataclass holding its fields and its
behaviour: the small ones here, the large ones in modules of their own
(:mod:`agent.secrets_config`, :mod:`agent.tuning_config`, :mod:`agent.readiness_config`);
the field types shared by all are in :mod:`agent.fields`. pydantic-settings validates them
(:mod:`agent.settings`, loaded only to validate): unknown keys are errors, and every error
becomes one :class:`~agent.errors.ConfigError` line naming the file (or variable) and the
key. The validated-configuration cache (:mod:`agent.configcache`) rebuilds the same classes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from agent import statefile
from agent.errors import ConfigError
from agent.fields import (
    SECTION,
    AbsoluteDir,
    AbsoluteFile,
    Bounds,
    Check,
    Command,
    Commands,
    OptionalFile,
    Text,
    UnitName,
    Wrap,
    span,
    zero_or_at_least,
)
from agent.readfile import CONFIG_LIMIT, Unreadable, read_regular
from agent.readiness_config import ONESHOT_READINESS, ReadinessConfig, given_readiness
from agent.secrets_config import SecretsConfig
from agent.tuning_config import TuningConfig

ENV_PREFIX = "AGENT_"

section = dataclasses.dataclass(frozen=True)
"""A configuration section: a frozen dataclass (with ``__pydantic_config__ = SECTION``)."""


def _http_only(value: str) -> str:
    if not value.startswith("http://") or len(value) <= len("http://"):
        raise ValueError("must be an http:// URL (IMDS speaks plain HTTP)")
    return value.rstrip("/")


@section
class ImdsConfig:
    """``[imds]``: where and how patiently to read instance metadata."""

    __pydantic_config__ = SECTION

    endpoint: Annotated[Text, Check(_http_only)] = "http://169.254.169.254"
    token_ttl_seconds: Annotated[int, Bounds(ge=1, le=21600)] = 21600
    timeout_seconds: Annotated[float, span(0.1, 60)] = 2.0
    max_wait_seconds: Annotated[float, span(1, 3600)] = 120.0


@section
class AwsConfig:
    """``[aws]``: region, endpoint and the retry budget of each call."""

    __pydantic_config__ = SECTION

    region: Text = ""
    endpoint_url: Text = ""
    max_wait_seconds: Annotated[float, span(1, 3600)] = 300.0


@section
class LifecycleConfig:
    """``[lifecycle]``: the Auto Scaling launch hook."""

    __pydantic_config__ = SECTION

    enabled: bool = True
    hook_name: Text = ""
    on_failure: Literal["abandon", "continue", "none"] = "abandon"
    heartbeat_seconds: Annotated[float, span(0, 7200), zero_or_at_least(1)] = 0.0
    warm_pool_secrets: bool = False  # publish secrets in a warm-pool boot too


@section
class TerminationConfig:
    """``[termination]``: watching for the instance's end, and draining before it."""

    __pydantic_config__ = SECTION

    enabled: bool = True
    poll_seconds: Annotated[float, span(1, 300)] = 5.0  # IMDS notices, daemon mode
    hook_name: Text = ""  # default: the group's only EC2_INSTANCE_TERMINATING hook
    deadline_seconds: Annotated[float, span(1, 7200)] = 90.0  # the whole drain
    commands: Commands = dataclasses.field(default_factory=list)  # in order (argv, no shell)
    stop_units: list[UnitName] = dataclasses.field(default_factory=list)  # systemctl stop
    wipe_secrets: bool = True  # remove the published secrets once drained
    rebalance_command: Command = dataclasses.field(default_factory=list)  # on a rebalance
    scheduled_events: bool = True  # a retirement or stop event: SetInstanceHealth Unhealthy


@section
class ImageConfig:
    """``[image]``: the baked image's manifest, its age, user-data hygiene."""

    __pydantic_config__ = SECTION

    manifest: AbsoluteFile = "/etc/agent/image.json"  # written by `agent bake-check`
    max_age_days: Annotated[float, span(0, 3650)] = 0.0  # 0: never flag the image's age
    check_user_data: bool = True  # flag user-data that looks like it holds a credential


CLOUDWATCH_NAMESPACE = re.compile(r"[0-9A-Za-z.\-_/#:]{1,255}")


def _prom(value: str) -> str:
    if value and not value.endswith(".prom"):
        raise ValueError(f"{value!r} must end in .prom (the only files node_exporter's "
                         "textfile collector reads)")
    return value


def _namespace(value: str) -> str:
    if value and not CLOUDWATCH_NAMESPACE.fullmatch(value):
        raise ValueError(f"{value!r} is not a CloudWatch namespace (1 to 255 of "
                         "A-Z a-z 0-9 . - _ / # :)")
    if value.startswith("AWS/"):
        raise ValueError(f"{value!r}: namespaces starting AWS/ are AWS's own")
    return value


@section
class TelemetryConfig:
    """``[telemetry]``: the boot's metrics, for Prometheus and CloudWatch (off by default)."""

    __pydantic_config__ = SECTION

    textfile: Annotated[OptionalFile, Check(_prom)] = ""  # node_exporter textfile collector
    cloudwatch_namespace: Annotated[Text, Check(_namespace)] = ""  # PutMetricData per boot


@section
class SignalConfig:
    """``[signal]``: readiness signals besides systemd and the lifecycle hook."""

    __pydantic_config__ = SECTION

    cloudformation_stack: Text = ""  # SignalResource, as cfn-signal does
    cloudformation_resource: Text = ""
    marker_file: OptionalFile = ""  # written when ready, removed when the boot fails

    def __post_init__(self) -> None:
        if bool(self.cloudformation_stack) != bool(self.cloudformation_resource):
            raise ValueError("set both cloudformation_stack and cloudformation_resource")


@section
class Config:
    """The whole configuration (DESIGN.md, "Configuration"); :func:`load` gives it."""

    state_dir: AbsoluteDir = "/run/agent"
    mode: Literal["daemon", "oneshot"] = "daemon"
    imds: ImdsConfig = dataclasses.field(default_factory=ImdsConfig)
    aws: AwsConfig = dataclasses.field(default_factory=AwsConfig)
    secrets: SecretsConfig = dataclasses.field(default_factory=SecretsConfig)
    tuning: TuningConfig = dataclasses.field(default_factory=TuningConfig)
    lifecycle: LifecycleConfig = dataclasses.field(default_factory=LifecycleConfig)
    termination: TerminationConfig = dataclasses.field(default_factory=TerminationConfig)
    signal: SignalConfig = dataclasses.field(default_factory=SignalConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
    telemetry: TelemetryConfig = dataclasses.field(default_factory=TelemetryConfig)
    readiness: Annotated[ReadinessConfig, Wrap(given_readiness)] = dataclasses.field(
        default_factory=ReadinessConfig)

    def __post_init__(self) -> None:
        if self.mode == "oneshot" and self.readiness.enabled:
            raise ValueError(f"mode \"oneshot\": {ONESHOT_READINESS}")


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get(statefile.CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return Path(statefile.DEFAULT_CONFIG), False


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
    from agent import settings  # noqa: PLC0415 - pydantic only to validate

    return settings.validate(path, parse(path, raw))


def load(explicit: str | None = None) -> Config:
    """Read, merge and validate; raise ConfigError with one line on any problem."""
    path, must_exist = config_path(explicit)
    return validate(path, read_bytes(path, must_exist=must_exist))
