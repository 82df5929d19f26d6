"""Auto Scaling lifecycle hooks: find the action, heartbeat it, CONTINUE or ABANDON it once.

The group comes from the instance tag ``aws:autoscaling:groupName`` when instance tags are
in the metadata, else from ``DescribeAutoScalingInstances`` (which also tells the instance's
lifecycle state: an instance already ``InService``, after a reboot or a second run, is not
completed again). The hook is the configured one or the group's only hook of the transition.
While the boot (or a drain) runs, heartbeats keep the action alive; completion is retried on
throttling for as long as the hook's timeout allows.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.aws import Aws, describe, error_code, is_throttling
from agent.errors import AgentError, LifecycleError

log = logging.getLogger(__name__)

GROUP_TAG = "aws:autoscaling:groupName"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
NOT_PENDING = "No active Lifecycle Action found"


@dataclass
class Target:
    """Where a result goes. ``hook`` is empty when there is nothing to signal."""

    group: str
    hook: str
    instance_state: str  # e.g. Pending:Wait, InService, Warmed:Pending:Wait
    heartbeat_timeout: int = 0
    reason: str = ""  # why there is nothing to signal
    transition: str = LAUNCHING
    alive_until: float = field(default=0.0, compare=False)  # monotonic: the action's timeout

    @property
    def pending(self) -> bool:
        """Whether the instance waits on this hook right now."""
        wait = "Pending:Wait" if self.transition == LAUNCHING else "Terminating:Wait"
        return bool(self.hook) and self.instance_state.endswith(wait)

    def remaining(self) -> float:
        """Seconds until the action times out (from discovery or the last heartbeat)."""
        return max(0.0, self.alive_until - time.monotonic())


def discover(aws: Aws, instance_id: str, tags: dict[str, str] | None, *, hook_name: str = "",
             transition: str = LAUNCHING, setting: str = "lifecycle.hook_name"
             ) -> Target | None:
    """The group and hook to signal, or None when the instance is in no group."""
    state, group = instance_state(aws, instance_id)
    if tags is not None and tags.get(GROUP_TAG):
        group = group or tags[GROUP_TAG]
    if not group:
        return None
    hooks = _call(aws, "describe_lifecycle_hooks", AutoScalingGroupName=group)
    of_kind = [h for h in hooks.get("LifecycleHooks", [])
               if h["LifecycleTransition"] == transition]
    kind = "launch" if transition == LAUNCHING else "termination"
    if hook_name:
        chosen = [h for h in of_kind if h["LifecycleHookName"] == hook_name]
        if not chosen:
            names = ", ".join(h["LifecycleHookName"] for h in of_kind) or "none"
            raise LifecycleError(f"{setting} {hook_name!r} is not a {kind} hook of group "
                                 f"{group} (its {kind} hooks: {names})")
    elif len(of_kind) > 1:
        names = ", ".join(sorted(h["LifecycleHookName"] for h in of_kind))
        raise LifecycleError(f"group {group} has several {kind} hooks ({names}): set {setting}")
    else:
        chosen = of_kind
    if not chosen:
        return Target(group, "", state, reason=f"group {group} has no {kind} lifecycle hook",
                      transition=transition)
    timeout = int(chosen[0].get("HeartbeatTimeout", 3600))
    return Target(group, chosen[0]["LifecycleHookName"], state, timeout,
                  transition=transition, alive_until=time.monotonic() + timeout)


def instance_state(aws: Aws, instance_id: str) -> tuple[str, str]:
    """The instance's lifecycle state and group ('' and '' when in no group)."""
    reply = _call(aws, "describe_auto_scaling_instances", InstanceIds=[instance_id])
    for item in reply.get("AutoScalingInstances", []):
        if item.get("InstanceId") == instance_id:
            return str(item.get("LifecycleState", "")), str(item.get("AutoScalingGroupName", ""))
    return "", ""


def heartbeat(aws: Aws, target: Target, instance_id: str) -> bool:
    """``RecordLifecycleActionHeartbeat``; False when the action is no longer pending."""
    try:
        _call(aws, "record_lifecycle_action_heartbeat", budget=min(30.0, target.remaining()),
              AutoScalingGroupName=target.group, LifecycleHookName=target.hook,
              InstanceId=instance_id)
    except _NotPending:
        return False
    target.alive_until = time.monotonic() + target.heartbeat_timeout
    return True


def complete(aws: Aws, target: Target, instance_id: str, result: str) -> str:
    """Send ``result``: ``"sent"``, or ``"not-pending"`` when no action was pending.

    Retried on throttling and transient errors while the action lives. "No active Lifecycle
    Action found" after one of our own attempts may have been processed (a timeout, a 5xx)
    means that attempt completed it: ``"sent"``.
    """
    maybe_processed: list[BaseException] = []
    try:
        _call(aws, "complete_lifecycle_action", budget=max(5.0, target.remaining()),
              on_retry=lambda exc: None if is_throttling(exc) else maybe_processed.append(exc),
              AutoScalingGroupName=target.group, LifecycleHookName=target.hook,
              InstanceId=instance_id, LifecycleActionResult=result)
    except _NotPending:
        if maybe_processed:
            log.info("lifecycle: an earlier attempt completed %s/%s", target.group, target.hook)
            return "sent"
        return "not-pending"
    return "sent"


class Heartbeater:
    """Heartbeats for a pending action every ``interval`` seconds, in a thread, until stopped.

    ``interval`` 0 means a third of the hook's HeartbeatTimeout.
    """

    def __init__(self, aws: Aws, target: Target, instance_id: str, interval: float) -> None:
        self.aws = aws
        self.target = target
        self.instance_id = instance_id
        self.interval = interval or max(1.0, target.heartbeat_timeout / 3)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeater:
        """Begin (the first heartbeat is one interval from now)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once; waits for a heartbeat in flight."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not heartbeat(self.aws, self.target, self.instance_id):
                    log.warning("lifecycle: %s is no longer pending; heartbeats stop",
                                self.target.hook)
                    return
            except AgentError as exc:
                log.warning("lifecycle heartbeat failed: %s", exc)
                continue
            self.count += 1
            log.debug("lifecycle heartbeat %d for %s", self.count, self.target.hook)


class _NotPending(Exception):
    """``ValidationError: No active Lifecycle Action found``."""


def _call(aws: Aws, operation: str, **params: Any) -> dict[str, Any]:
    try:
        return aws.call("autoscaling", operation, **params)
    except AgentError as exc:
        raise LifecycleError(str(exc)) from None
    except Exception as exc:
        if error_code(exc) == "ValidationError" and NOT_PENDING in describe(exc):
            raise _NotPending from None
        if error_code(exc) in ("AccessDenied", "AccessDeniedException"):
            raise LifecycleError(f"autoscaling {operation}: access denied: the instance role "
                                 f"needs autoscaling:{_api_name(operation)}") from None
        raise LifecycleError(f"autoscaling {operation}: {describe(exc)}") from None


def _api_name(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))
