"""The lifecycle's sections: ``[lifecycle]`` (the launch hook), ``[termination]`` (notices and
the drain) and ``[signal]`` (readiness signals besides systemd and the hook)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from agent.frozen import frozen
from agent.schema.fields import (
    SECTION,
    Command,
    Commands,
    OptionalFile,
    Text,
    UnitName,
    span,
    zero_or_at_least,
)


@frozen()
class LifecycleConfig:
    """``[lifecycle]``: the Auto Scaling launch hook."""

    __pydantic_config__ = SECTION

    enabled: bool = True
    hook_name: Text = ""
    on_failure: Literal["abandon", "continue", "none"] = "abandon"
    heartbeat_seconds: Annotated[float, span(0, 7200), zero_or_at_least(1)] = 0.0
    warm_pool_secrets: bool = False  # publish secrets in a warm-pool boot too


@frozen()
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


@frozen()
class SignalConfig:
    """``[signal]``: readiness signals besides systemd and the lifecycle hook."""

    __pydantic_config__ = SECTION

    cloudformation_stack: Text = ""  # SignalResource, as cfn-signal does
    cloudformation_resource: Text = ""
    marker_file: OptionalFile = ""  # written when ready, removed when the boot fails

    def __post_init__(self) -> None:
        if bool(self.cloudformation_stack) != bool(self.cloudformation_resource):
            raise ValueError("set both cloudformation_stack and cloudformation_resource")
