"""The Auto Scaling launch lifecycle hook: find it, then CONTINUE or ABANDON it once.

The group comes from the instance tag ``aws:autoscaling:groupName`` when instance tags are
in the metadata, else from ``DescribeAutoScalingInstances``; the hook from
``lifecycle.hook_name`` or the group's only ``EC2_INSTANCE_LAUNCHING`` hook. The instance's
own lifecycle state tells whether anything is pending: an instance already ``InService``
(a reboot, or a second run) is not completed again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent.aws import Aws, describe, error_code
from agent.config import LifecycleConfig
from agent.errors import AgentError, LifecycleError

log = logging.getLogger(__name__)

GROUP_TAG = "aws:autoscaling:groupName"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
NOT_PENDING = "No active Lifecycle Action found"


@dataclass(frozen=True)
class Target:
    """Where the boot's result goes. ``hook`` is empty when there is nothing to signal."""

    group: str
    hook: str
    instance_state: str  # e.g. Pending:Wait, InService, Warmed:Pending:Wait
    heartbeat_timeout: int = 0
    reason: str = ""  # why there is nothing to signal

    @property
    def pending(self) -> bool:
        """Whether the instance waits on a launch hook right now."""
        return bool(self.hook) and self.instance_state.endswith("Pending:Wait")


def discover(aws: Aws, cfg: LifecycleConfig, instance_id: str,
             tags: dict[str, str] | None) -> Target | None:
    """The group and hook to signal, or None when the instance is in no group."""
    state, group = _instance(aws, instance_id)
    if tags is not None and tags.get(GROUP_TAG):
        group = group or tags[GROUP_TAG]
    if not group:
        return None
    hooks = _call(aws, "describe_lifecycle_hooks", AutoScalingGroupName=group)
    launch = [h for h in hooks.get("LifecycleHooks", []) if h["LifecycleTransition"] == LAUNCHING]
    if cfg.hook_name:
        chosen = [h for h in launch if h["LifecycleHookName"] == cfg.hook_name]
        if not chosen:
            names = ", ".join(h["LifecycleHookName"] for h in launch) or "none"
            raise LifecycleError(
                f"lifecycle.hook_name {cfg.hook_name!r} is not a launch hook of group "
                f"{group} (its launch hooks: {names})"
            )
    elif len(launch) > 1:
        names = ", ".join(sorted(h["LifecycleHookName"] for h in launch))
        raise LifecycleError(
            f"group {group} has several launch hooks ({names}): set lifecycle.hook_name"
        )
    else:
        chosen = launch
    if not chosen:
        return Target(group, "", state, reason=f"group {group} has no launch lifecycle hook")
    hook = chosen[0]
    return Target(group, hook["LifecycleHookName"], state, int(hook.get("HeartbeatTimeout", 0)))


def complete(aws: Aws, target: Target, instance_id: str, result: str) -> bool:
    """Send ``result`` (CONTINUE/ABANDON). False when no action was pending any more."""
    try:
        _call(
            aws,
            "complete_lifecycle_action",
            AutoScalingGroupName=target.group,
            LifecycleHookName=target.hook,
            InstanceId=instance_id,
            LifecycleActionResult=result,
        )
    except _NotPending:
        return False
    return True


class _NotPending(Exception):
    """``ValidationError: No active Lifecycle Action found``."""


def _instance(aws: Aws, instance_id: str) -> tuple[str, str]:
    """The instance's lifecycle state and group ('' and '' when in no group)."""
    reply = _call(aws, "describe_auto_scaling_instances", InstanceIds=[instance_id])
    for item in reply.get("AutoScalingInstances", []):
        if item.get("InstanceId") == instance_id:
            return str(item.get("LifecycleState", "")), str(item.get("AutoScalingGroupName", ""))
    return "", ""


def _call(aws: Aws, operation: str, **params: Any) -> dict[str, Any]:
    try:
        return aws.call("autoscaling", operation, **params)
    except AgentError as exc:
        raise LifecycleError(str(exc)) from None
    except Exception as exc:
        if error_code(exc) == "ValidationError" and NOT_PENDING in describe(exc):
            raise _NotPending from None
        raise LifecycleError(f"autoscaling {operation}: {describe(exc)}") from None
