"""Auto Scaling semantics moto lacks: lifecycle actions that stay pending until
``CompleteLifecycleAction``, accept heartbeats and time out to the hook's DefaultResult
(:class:`LifecycleActions`); ``SetInstanceHealth`` with the group's reaction
(:class:`InstanceHealth`). Both answer their calls as interceptors of the simulated cloud,
over moto's groups and instance states."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.autoscaling.models import autoscaling_backends
from moto.core.models import DEFAULT_ACCOUNT_ID

from agent.sim.wire import Call, Interceptor, SimAwsError

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
MAX_GLOBAL_TIMEOUT = 48 * 3600


@dataclasses.dataclass
class LifecycleActionRecord:
    """A lifecycle action: pending while ``result`` is None."""

    group: str
    hook: str
    transition: str
    instance_id: str
    token: str
    heartbeat_timeout: int
    default_result: str
    started_at: datetime
    result: str | None = None
    completed_by: str | None = None  # "api" | "timeout" | "abandoned" (another hook's ABANDON)
    completed_at: datetime | None = None
    heartbeats: int = 0
    warm_pool: str | None = None  # Warmed:Stopped/Running/Hibernated: where CONTINUE leads


@dataclasses.dataclass
class _Pending:
    record: LifecycleActionRecord
    region: str
    deadline: float
    global_deadline: float


class LifecycleActions:
    """Pending Auto Scaling lifecycle actions, kept in step with moto's instance states."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._done: list[LifecycleActionRecord] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {
            ("autoscaling", "CompleteLifecycleAction"): self._complete_call,
            ("autoscaling", "RecordLifecycleActionHeartbeat"): self._heartbeat_call,
        }

    def start(self, group: str, instance_id: str, transition: str,
              warm_pool: str | None = None) -> list[LifecycleActionRecord]:
        """Put the instance in the wait state of ``transition`` for each of its hooks.

        ``warm_pool`` (e.g. ``Warmed:Stopped``): a launch into the warm pool, waiting in
        ``Warmed:Pending:Wait`` and going to that state on CONTINUE.
        """
        region, asg = _find_group(group)
        hooks = [h for h in _hooks(region, group) if h.lifecycle_transition == transition]
        now, started_at = time.monotonic(), datetime.now(UTC)
        with self._lock:
            self.expire()
            started = []
            for hook in hooks:
                timeout = int(hook.heartbeat_timeout)
                record = LifecycleActionRecord(
                    group=group,
                    hook=hook.name,
                    transition=transition,
                    instance_id=instance_id,
                    token=str(uuid.uuid4()),
                    heartbeat_timeout=timeout,
                    default_result=hook.default_result,
                    started_at=started_at,
                    warm_pool=warm_pool if transition == LAUNCHING else None,
                )
                global_deadline = now + min(100 * timeout, MAX_GLOBAL_TIMEOUT)
                self._pending.append(_Pending(record, region, now + timeout, global_deadline))
                started.append(dataclasses.replace(record))
            if started:
                state = "Pending:Wait" if transition == LAUNCHING else "Terminating:Wait"
            else:
                state = "InService" if transition == LAUNCHING else "Terminating"
            if warm_pool and transition == LAUNCHING:
                state = "Warmed:Pending:Wait" if started else warm_pool
            _set_state(asg, instance_id, state)
        return started

    def expire(self) -> None:
        """Apply the DefaultResult of every action whose timeout has elapsed."""
        now = time.monotonic()
        with self._lock:
            for item in list(self._pending):
                if item in self._pending and now >= min(item.deadline, item.global_deadline):
                    self._finish(item, item.record.default_result, "timeout")

    def time_out(self) -> None:
        """Apply every pending action's DefaultResult now, as its timeout would."""
        with self._lock:
            for item in list(self._pending):
                if item in self._pending:  # (an ABANDON closes its siblings too)
                    self._finish(item, item.record.default_result, "timeout")

    def records(self, instance_id: str | None = None) -> list[LifecycleActionRecord]:
        """Copies of every action, completed and pending, oldest first."""
        with self._lock:
            self.expire()
            every = self._done + [p.record for p in self._pending]
        every.sort(key=lambda r: r.started_at)
        return [
            dataclasses.replace(r)
            for r in every
            if instance_id is None or r.instance_id == instance_id
        ]

    def _complete_call(self, call: Call) -> None:
        result = call.params.get("LifecycleActionResult", "")
        if result not in ("CONTINUE", "ABANDON"):
            raise SimAwsError(
                "ValidationError", "Valid values for LifecycleActionResult: CONTINUE, ABANDON"
            )
        with self._lock:
            self._finish(self._match(call), result, "api")

    def _heartbeat_call(self, call: Call) -> None:
        with self._lock:
            item = self._match(call)
            item.record.heartbeats += 1
            timeout = item.record.heartbeat_timeout
            item.deadline = min(time.monotonic() + timeout, item.global_deadline)

    def _match(self, call: Call) -> _Pending:
        """The pending action a Complete/Heartbeat call names, or a ValidationError."""
        group = call.params.get("AutoScalingGroupName", "")
        hook = call.params.get("LifecycleHookName", "")
        instance_id = call.params.get("InstanceId")
        token = call.params.get("LifecycleActionToken")
        if hook not in {h.name for h in _hooks(call.region, group)}:
            raise SimAwsError(
                "ValidationError", f"No Lifecycle Hook found with name {hook} for group {group}"
            )
        if not instance_id and not token:
            raise SimAwsError(
                "ValidationError", "Either InstanceId or LifecycleActionToken must be specified"
            )
        self.expire()
        for item in self._pending:
            record = item.record
            if (
                (item.region, record.group, record.hook) == (call.region, group, hook)
                and (not instance_id or record.instance_id == instance_id)
                and (not token or record.token == token)
            ):
                return item
        which = f"token {token}" if token and not instance_id else f"instance ID {instance_id}"
        raise SimAwsError("ValidationError", f"No active Lifecycle Action found with {which}")

    def _finish(self, item: _Pending, result: str, completed_by: str) -> None:
        """Complete an action; move the instance on once none of its transition remains."""
        record = item.record
        key = (record.instance_id, record.transition)
        siblings = [
            p
            for p in self._pending
            if p is not item and (p.record.instance_id, p.record.transition) == key
        ]
        closing = [(item, completed_by)]
        if result == "ABANDON":  # ABANDON stops the instance's remaining actions too
            closing += [(p, "abandoned") for p in siblings]
            siblings = []
        now = datetime.now(UTC)
        for pending, by in closing:
            self._pending.remove(pending)
            pending.record.result, pending.record.completed_by = result, by
            pending.record.completed_at = now
            self._done.append(pending.record)
        if siblings:
            return
        if record.transition == TERMINATING:
            state = "Terminating:Proceed"
        elif result != "CONTINUE":
            state = "Terminating"
        else:
            state = record.warm_pool or "InService"
        with contextlib.suppress(KeyError):  # the group or instance may be gone by now
            _, asg = _find_group(record.group, item.region)
            _set_state(asg, record.instance_id, state)


def _backend(region: str) -> Any:
    return autoscaling_backends[DEFAULT_ACCOUNT_ID][region]


def _find_group(group: str, region: str | None = None) -> tuple[str, Any]:
    """(region, moto group) by name; any region already in use unless given."""
    regions = [region] if region else list(autoscaling_backends[DEFAULT_ACCOUNT_ID].keys())
    for name in regions:
        asg = _backend(name).autoscaling_groups.get(group)
        if asg is not None:
            return name, asg
    raise KeyError(f"no Auto Scaling group {group!r} in the simulated cloud")


def _hooks(region: str, group: str) -> list[Any]:
    return list(_backend(region).describe_lifecycle_hooks(group))


def _set_state(asg: Any, instance_id: str, state: str) -> None:
    for instance_state in asg.instance_states:
        if instance_state.instance.id == instance_id:
            instance_state.lifecycle_state = state
            return
    raise KeyError(f"instance {instance_id} is not in Auto Scaling group {asg.name}")


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """One ``SetInstanceHealth`` call received."""

    group: str
    instance_id: str
    status: str  # Healthy | Unhealthy
    respect_grace_period: bool


class InstanceHealth:
    """``SetInstanceHealth``: moto's instance health kept in step, and the group's reaction.

    An instance marked Unhealthy is replaced by its group: ``on_unhealthy(group, instance)``
    is called (the :class:`~agent.sim.world.World` starts its termination there).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reports: list[HealthReport] = []
        self.on_unhealthy: list[Callable[[str, str], None]] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {("autoscaling", "SetInstanceHealth"): self._health_call}

    def _health_call(self, call: Call) -> None:
        instance_id = call.params.get("InstanceId", "")
        status = call.params.get("HealthStatus", "")
        if status not in ("Healthy", "Unhealthy"):
            raise SimAwsError("ValidationError", "Valid values for HealthStatus: Healthy, "
                              "Unhealthy")
        found = _group_of(call.region, instance_id)
        if found is None:
            raise SimAwsError("ValidationError", "Instance Id not found - No managed instance "
                              f"found for instance ID: {instance_id}")
        group, instance_state = found
        instance_state.health_status = status
        respect = call.params.get("ShouldRespectGracePeriod", "true").lower() != "false"
        with self._lock:
            self.reports.append(HealthReport(group, instance_id, status, respect))
            listeners = list(self.on_unhealthy) if status == "Unhealthy" else []
        for listener in listeners:
            listener(group, instance_id)


def _group_of(region: str, instance_id: str) -> tuple[str, Any] | None:
    """(group name, moto instance state) of an instance in some group of ``region``."""
    for name, asg in _backend(region).autoscaling_groups.items():
        for instance_state in asg.instance_states:
            if instance_state.instance.id == instance_id:
                return name, instance_state
    return None
