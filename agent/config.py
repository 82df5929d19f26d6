"""Configuration: a TOML file, overridden per key by ``AGENT_*`` environment variables.

The file is ``--config PATH``, else ``$AGENT_CONFIG``, else ``/etc/agent/agent.toml`` (which
may be absent: defaults apply). Unknown keys are errors; every error becomes one
:class:`~agent.errors.ConfigError` line naming the file (or variable) and the key, with the
closest known key when one is near. The field types shared by the sections (modes, paths,
unit names, commands, bounds) are in :mod:`agent.fields`; the two large sections have
modules of their own (:mod:`agent.secrets_config`, :mod:`agent.tuning_config`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.errors import ConfigError, closest
from agent.fields import (
    AbsoluteDir,
    AbsoluteFile,
    Command,
    Commands,
    OptionalFile,
    Section,
    Text,
    UnitName,
    span,
    zero_or_at_least,
)
from agent.readfile import CONFIG_LIMIT, Unreadable, read_regular
from agent.readiness_config import ReadinessConfig
from agent.secrets_config import SecretsConfig
from agent.sections import ENV_PREFIX, ONESHOT_READINESS, config_path
from agent.tuning_config import TuningConfig


class ImdsConfig(Section):
    """``[imds]``: where and how patiently to read instance metadata."""

    endpoint: Text = "http://169.254.169.254"
    token_ttl_seconds: Annotated[int, Field(ge=1, le=21600)] = 21600
    timeout_seconds: Annotated[float, span(0.1, 60)] = 2.0
    max_wait_seconds: Annotated[float, span(1, 3600)] = 120.0

    @field_validator("endpoint")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not value.startswith("http://") or len(value) <= len("http://"):
            raise ValueError("must be an http:// URL (IMDS speaks plain HTTP)")
        return value.rstrip("/")


class AwsConfig(Section):
    """``[aws]``: region, endpoint and the retry budget of each call."""

    region: Text = ""
    endpoint_url: Text = ""
    max_wait_seconds: Annotated[float, span(1, 3600)] = 300.0


class LifecycleConfig(Section):
    """``[lifecycle]``: the Auto Scaling launch hook."""

    enabled: bool = True
    hook_name: Text = ""
    on_failure: Literal["abandon", "continue", "none"] = "abandon"
    heartbeat_seconds: Annotated[float, span(0, 7200), zero_or_at_least(1)] = 0.0
    warm_pool_secrets: bool = False  # publish secrets in a warm-pool boot too


class TerminationConfig(Section):
    """``[termination]``: watching for the instance's end, and draining before it."""

    enabled: bool = True
    poll_seconds: Annotated[float, span(1, 300)] = 5.0  # IMDS notices, daemon mode
    hook_name: Text = ""  # default: the group's only EC2_INSTANCE_TERMINATING hook
    deadline_seconds: Annotated[float, span(1, 7200)] = 90.0  # the whole drain
    commands: Commands = []  # run in order (argv, no shell)
    stop_units: list[UnitName] = []  # systemctl stop, in order
    wipe_secrets: bool = True  # remove the published secrets once drained
    rebalance_command: Command = []  # on a rebalance recommendation (nothing else)
    scheduled_events: bool = True  # a retirement or stop event: SetInstanceHealth Unhealthy


class ImageConfig(Section):
    """``[image]``: the baked image's manifest, its age, user-data hygiene."""

    manifest: AbsoluteFile = "/etc/agent/image.json"  # written by `agent bake-check`
    max_age_days: Annotated[float, span(0, 3650)] = 0.0  # 0: never flag the image's age
    check_user_data: bool = True  # flag user-data that looks like it holds a credential


CLOUDWATCH_NAMESPACE = re.compile(r"[0-9A-Za-z.\-_/#:]{1,255}")


class TelemetryConfig(Section):
    """``[telemetry]``: the boot's metrics, for Prometheus and CloudWatch (off by default)."""

    textfile: OptionalFile = ""  # node_exporter textfile collector, e.g. .../agent.prom
    cloudwatch_namespace: Text = ""  # PutMetricData once per boot, e.g. "InstanceBoot"

    @field_validator("textfile")
    @classmethod
    def _prom(cls, value: str) -> str:
        if value and not value.endswith(".prom"):
            raise ValueError(f"{value!r} must end in .prom (the only files node_exporter's "
                             "textfile collector reads)")
        return value

    @field_validator("cloudwatch_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value and not CLOUDWATCH_NAMESPACE.fullmatch(value):
            raise ValueError(f"{value!r} is not a CloudWatch namespace (1 to 255 of "
                             "A-Z a-z 0-9 . - _ / # :)")
        if value.startswith("AWS/"):
            raise ValueError(f"{value!r}: namespaces starting AWS/ are AWS's own")
        return value


class SignalConfig(Section):
    """``[signal]``: readiness signals besides systemd and the lifecycle hook."""

    cloudformation_stack: Text = ""  # SignalResource, as cfn-signal does
    cloudformation_resource: Text = ""
    marker_file: OptionalFile = ""  # written when ready, removed when the boot fails

    @model_validator(mode="after")
    def _pair(self) -> SignalConfig:
        if bool(self.cloudformation_stack) != bool(self.cloudformation_resource):
            raise ValueError("set both cloudformation_stack and cloudformation_resource")
        return self


class Config(BaseSettings):
    """The whole configuration (DESIGN.md, "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    state_dir: AbsoluteDir = "/run/agent"
    mode: Literal["daemon", "oneshot"] = "daemon"
    imds: ImdsConfig = ImdsConfig()
    aws: AwsConfig = AwsConfig()
    secrets: SecretsConfig = SecretsConfig()
    tuning: TuningConfig = TuningConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    termination: TerminationConfig = TerminationConfig()
    signal: SignalConfig = SignalConfig()
    image: ImageConfig = ImageConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    readiness: ReadinessConfig = ReadinessConfig()

    @model_validator(mode="after")
    def _readiness_needs_daemon(self) -> Config:
        if self.mode == "oneshot" and self.readiness.enabled:
            raise ValueError(f"mode \"oneshot\": {ONESHOT_READINESS}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed in as init arguments).
        return (_KnownEnvSource(settings_cls), init_settings)


class _KnownEnvSource(EnvSettingsSource):
    """``AGENT_*`` variables, keeping only those that name a key (others are ignored)."""

    def __call__(self) -> dict[str, Any]:
        return _prune(super().__call__(), self.settings_cls)

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


def _prune(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            kept[name] = _prune(value, sub)
        else:
            kept[name] = value
    return kept


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
    data = parse(path, raw)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None


def load(explicit: str | None = None) -> Config:
    """Read, merge and validate; raise ConfigError with one line on any problem."""
    path, must_exist = config_path(explicit)
    return validate(path, read_bytes(path, must_exist=must_exist))


def _one_line(path: Path, exc: ValidationError) -> str:
    """Name the source (file or environment variable), the key and the problem."""
    errors = exc.errors(include_url=False, include_input=False)
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")  # a typo explains the rest
    first = errors[0]
    key = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
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
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(
            model, BaseModel) else None
        if field is None:
            return ""
        model = _model_of(field.annotation)
        if model is None:
            return ""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    known = list(model.model_fields)
    close = closest(str(loc[-1]), known)
    return f" (did you mean {close[0]!r}?)" if close else f" (known here: {', '.join(known)})"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Section`` or ``list[Section]`` (None for plain values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        return _model_of(item)
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
