"""The local simulated cloud: an IMDSv2 simulator and moto with lifecycle-hook semantics,
and a fault proxy that cuts, garbles or drips its answers.

The re-exports load lazily, so that ``agent.sim.imds`` alone does not import moto.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.sim.autoscaling import LifecycleActionRecord
    from agent.sim.cloud import SimCloud
    from agent.sim.imds import ImdsRequest, ImdsSimulator, SimInstance
    from agent.sim.proxy import Fault, FaultProxy
    from agent.sim.wire import Call, SimAwsError
    from agent.sim.world import World

_HOMES = {
    "Call": "agent.sim.wire",
    "Fault": "agent.sim.proxy",
    "FaultProxy": "agent.sim.proxy",
    "LifecycleActionRecord": "agent.sim.autoscaling",
    "SimAwsError": "agent.sim.wire",
    "SimCloud": "agent.sim.cloud",
    "ImdsRequest": "agent.sim.imds",
    "ImdsSimulator": "agent.sim.imds",
    "SimInstance": "agent.sim.imds",
    "World": "agent.sim.world",
}

__all__ = [
    "Call",
    "Fault",
    "FaultProxy",
    "ImdsRequest",
    "ImdsSimulator",
    "LifecycleActionRecord",
    "SimAwsError",
    "SimCloud",
    "SimInstance",
    "World",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
