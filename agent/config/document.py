"""The whole configuration: its top-level keys and its sections, in one :class:`Config`.

Each section is a frozen dataclass beside its subject, holding its fields (their rules as
:mod:`agent.schema.fields` types) and its behaviour: :mod:`agent.cloud.config` (``[imds]``,
``[aws]``), :mod:`agent.secrets.config`, :mod:`agent.tuning.config`,
:mod:`agent.readiness.config`, :mod:`agent.image.config`, :mod:`agent.telemetry.config`
and :mod:`agent.lifecycle.config` (``[lifecycle]``, ``[termination]``, ``[signal]``).
pydantic-settings validates them (:mod:`agent.config.validator`); the validated-configuration
cache rebuilds them by their constructors (:mod:`agent.config.cache`). Neither needs the
other.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from agent.cloud.config import AwsConfig, ImdsConfig
from agent.frozen import frozen
from agent.image.config import ImageConfig
from agent.lifecycle.config import LifecycleConfig, SignalConfig, TerminationConfig
from agent.readiness.config import ONESHOT_READINESS, ReadinessConfig, given_readiness
from agent.schema.fields import AbsoluteDir, Wrap
from agent.secrets.config import SecretsConfig
from agent.telemetry.config import TelemetryConfig
from agent.tuning.config import TuningConfig

__all__ = ["ENV_PREFIX", "AwsConfig", "Config", "ImageConfig", "ImdsConfig", "LifecycleConfig",
           "ReadinessConfig", "SecretsConfig", "SignalConfig", "TelemetryConfig",
           "TerminationConfig", "TuningConfig"]

ENV_PREFIX = "AGENT_"


@frozen()
class Config:
    """The whole configuration (docs/reference/configuration.md); ``load`` gives it."""

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
