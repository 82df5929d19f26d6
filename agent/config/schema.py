"""The configuration's schema: the small sections and the whole :class:`Config`.

Each section is a frozen dataclass holding its fields (their rules as :mod:`agent.schema.fields`
types) and its behaviour; the large sections have modules of their own
(:mod:`agent.secrets.config`, :mod:`agent.tuning.config`, :mod:`agent.readiness.config`).
pydantic-settings validates them (:mod:`agent.config.validator`); the validated-configuration cache
rebuilds them by their constructors (:mod:`agent.config.cache`). Neither needs the other.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Literal

from agent.readiness.config import ONESHOT_READINESS, ReadinessConfig, given_readiness
from agent.schema.fields import (
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
    declare,
    span,
    zero_or_at_least,
)
from agent.secrets.config import SecretsConfig
from agent.tuning.config import TuningConfig

ENV_PREFIX = "AGENT_"

def _http_only(value: str) -> str:
    if not value.startswith("http://") or len(value) <= len("http://"):
        raise ValueError("must be an http:// URL (IMDS speaks plain HTTP)")
    return value.rstrip("/")


@declare()
class ImdsConfig:
    """``[imds]``: where and how patiently to read instance metadata."""

    __pydantic_config__ = SECTION

    endpoint: Annotated[Text, Check(_http_only)] = "http://169.254.169.254"
    token_ttl_seconds: Annotated[int, Bounds(ge=1, le=21600)] = 21600
    timeout_seconds: Annotated[float, span(0.1, 60)] = 2.0
    max_wait_seconds: Annotated[float, span(1, 3600)] = 120.0


@declare()
class AwsConfig:
    """``[aws]``: region, endpoint and the retry budget of each call."""

    __pydantic_config__ = SECTION

    region: Text = ""
    endpoint_url: Text = ""
    max_wait_seconds: Annotated[float, span(1, 3600)] = 300.0


@declare()
class LifecycleConfig:
    """``[lifecycle]``: the Auto Scaling launch hook."""

    __pydantic_config__ = SECTION

    enabled: bool = True
    hook_name: Text = ""
    on_failure: Literal["abandon", "continue", "none"] = "abandon"
    heartbeat_seconds: Annotated[float, span(0, 7200), zero_or_at_least(1)] = 0.0
    warm_pool_secrets: bool = False  # publish secrets in a warm-pool boot too


@declare()
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


@declare()
class ImageConfig:
    """``[image]``: the baked image's manifest, its age, user-data hygiene."""

    __pydantic_config__ = SECTION

    manifest: AbsoluteFile = "/etc/agent/image.json"  # written by `agent bake-check`
    max_age_days: Annotated[float, span(0, 3650)] = 0.0  # 0: never flag the image's age
    check_user_data: bool = True  # flag user-data that looks like it holds a credential


CLOUDWATCH_NAMESPACE = r"[0-9A-Za-z.\-_/#:]{1,255}"


def _prom(value: str) -> str:
    if value and not value.endswith(".prom"):
        raise ValueError(f"{value!r} must end in .prom (the only files node_exporter's "
                         "textfile collector reads)")
    return value


def _namespace(value: str) -> str:
    if value and not re.fullmatch(CLOUDWATCH_NAMESPACE, value):
        raise ValueError(f"{value!r} is not a CloudWatch namespace (1 to 255 of "
                         "A-Z a-z 0-9 . - _ / # :)")
    if value.startswith("AWS/"):
        raise ValueError(f"{value!r}: namespaces starting AWS/ are AWS's own")
    return value


@declare()
class TelemetryConfig:
    """``[telemetry]``: the boot's metrics, for Prometheus and CloudWatch (off by default)."""

    __pydantic_config__ = SECTION

    textfile: Annotated[OptionalFile, Check(_prom)] = ""  # node_exporter textfile collector
    cloudwatch_namespace: Annotated[Text, Check(_namespace)] = ""  # PutMetricData per boot


@declare()
class SignalConfig:
    """``[signal]``: readiness signals besides systemd and the lifecycle hook."""

    __pydantic_config__ = SECTION

    cloudformation_stack: Text = ""  # SignalResource, as cfn-signal does
    cloudformation_resource: Text = ""
    marker_file: OptionalFile = ""  # written when ready, removed when the boot fails

    def __post_init__(self) -> None:
        if bool(self.cloudformation_stack) != bool(self.cloudformation_resource):
            raise ValueError("set both cloudformation_stack and cloudformation_resource")


@declare()
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
