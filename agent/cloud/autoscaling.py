"""Auto Scaling as the agent calls it: one call with its failure in one line, and what the
group says of this instance (its lifecycle state and group).

The launch hook, the termination drain and the launch context's ``{group}`` all ask through
here, so an Auto Scaling failure reads the same wherever it happens: an
:class:`~agent.errors.LifecycleError` naming the operation, and for access denied the
permission the instance role needs.
"""

from __future__ import annotations

from typing import Any

from agent.cloud.aws import Aws, describe, error_code, is_access_denied
from agent.errors import AgentError, LifecycleError

NOT_PENDING_MESSAGE = "No active Lifecycle Action found"


class NotPending(Exception):
    """``ValidationError: No active Lifecycle Action found``: no action waits (it timed out,
    or someone else completed it)."""


def call(aws: Aws, operation: str, **params: Any) -> dict[str, Any]:
    """One Auto Scaling operation (``describe_lifecycle_hooks``); LifecycleError in one line,
    :class:`NotPending` when it names a lifecycle action that no longer waits."""
    try:
        return aws.call("autoscaling", operation, **params)
    except AgentError as exc:
        raise LifecycleError(str(exc)) from None
    except Exception as exc:
        if error_code(exc) == "ValidationError" and NOT_PENDING_MESSAGE in describe(exc):
            raise NotPending from None
        if is_access_denied(exc):
            raise LifecycleError(f"autoscaling {operation}: access denied: the instance role "
                                 f"needs autoscaling:{api_name(operation)}") from None
        raise LifecycleError(f"autoscaling {operation}: {describe(exc)}") from None


def api_name(operation: str) -> str:
    """The API's own name: ``describe_lifecycle_hooks`` -> ``DescribeLifecycleHooks``."""
    return "".join(part.title() for part in operation.split("_"))


def instance_state(aws: Aws, instance_id: str) -> tuple[str, str]:
    """The instance's lifecycle state and group ('' and '' when in no group)."""
    reply = call(aws, "describe_auto_scaling_instances", InstanceIds=[instance_id])
    for item in reply.get("AutoScalingInstances", []):
        if item.get("InstanceId") == instance_id:
            return str(item.get("LifecycleState", "")), str(item.get("AutoScalingGroupName", ""))
    return "", ""
