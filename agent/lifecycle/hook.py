"""Auto Scaling lifecycle hooks: find the action, heartbeat it, CONTINUE or ABANDON it once;
and the other readiness signals (CloudFormation ``SignalResource``, a marker file).

The group comes from the instance tag ``aws:autoscaling:groupName`` when instance tags are
in the metadata (no such tag there: the instance is in no group), else from
``DescribeAutoScalingInstances``. With the tag, a boot needs two Auto Scaling calls,
``DescribeLifecycleHooks`` and ``CompleteLifecycleAction``: the lifecycle state comes from
IMDS's target lifecycle state and the instance's history (:func:`known_state`: the first
boot of an instance, or its first boot out of the warm pool, has its launch action pending;
after a reboot, Auto Scaling is asked), and a second run of the same boot finds what the
first one sent in the previous state.json. The hook is the configured one or the group's
only hook of the transition. While the boot (or a drain) runs, heartbeats keep the action
alive until the completion is admitted; completion is retried on throttling for as long as
the action lives, heartbeats extending it. :func:`outcome` is the decision table: which
result a boot sends, given what it found.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cloud import autoscaling
from agent.cloud.autoscaling import NotPending, instance_state
from agent.cloud.aws import Aws, describe, is_throttling
from agent.cloud.imds import GROUP_TAG
from agent.errors import AgentError, LifecycleError, describe_failure
from agent.frozen import frozen
from agent.fsutil import atomic_write
from agent.state.recorder import PhaseState, utc_now

if TYPE_CHECKING:
    from agent.cloud.imds import Metadata
    from agent.lifecycle.config import LifecycleConfig, SignalConfig
    from agent.state.recorder import Recorder

log = logging.getLogger(__name__)

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


class HookResult(enum.StrEnum):
    """What ``CompleteLifecycleAction`` is sent."""

    CONTINUE = "CONTINUE"
    ABANDON = "ABANDON"


class Completion(enum.Enum):
    """How a completion ended."""

    SENT = "sent"  # ours was admitted (or an attempt of ours whose answer was lost)
    NOT_PENDING = "not pending"  # no action was pending: it timed out, or someone else


ON_FAILURE: dict[str, HookResult | None] = {
    "abandon": HookResult.ABANDON, "continue": HookResult.CONTINUE, "none": None}


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
             transition: str = LAUNCHING, setting: str = "lifecycle.hook_name",
             state: str | None = None) -> Target | None:
    """The group and hook to signal, or None when the instance is in no group.

    ``state``: the instance's lifecycle state when the caller knows it; with the group tag
    in ``tags`` it saves the ``DescribeAutoScalingInstances`` call.
    """
    group = (tags or {}).get(GROUP_TAG, "")
    if tags is not None and not group:  # Auto Scaling tags every instance of a group
        return None
    if not (group and state is not None):
        state, described = instance_state(aws, instance_id)
        group = described or group
    if not group:
        return None
    assert state is not None
    hooks = autoscaling.call(aws, "describe_lifecycle_hooks", AutoScalingGroupName=group)
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


def known_state(target_state: str | None, earlier_boot: dict[str, Any] | None) -> str | None:
    """The launch lifecycle state IMDS implies, or None when Auto Scaling must be asked.

    IMDS tells the target state only (``InService`` while the instance waits in
    ``Pending:Wait`` too). At the first boot of an instance (``earlier_boot``: the history's
    record of an earlier boot of this instance, None when there was none) the launch action
    is pending, as it is at the first boot out of the warm pool; after a reboot it is long
    done, or not: ask.
    """
    if target_state is None:
        return None
    if earlier_boot is not None:
        before = str(earlier_boot.get("target_lifecycle_state") or "")
        if not (before.startswith("Warmed:") and target_state == "InService"):
            return None
    if target_state == "InService":
        return "Pending:Wait"
    if target_state.startswith("Warmed:"):
        return "Warmed:Pending:Wait"
    return None


def heartbeat(aws: Aws, target: Target, instance_id: str) -> bool:
    """``RecordLifecycleActionHeartbeat``; False when the action is no longer pending."""
    try:
        autoscaling.call(aws, "record_lifecycle_action_heartbeat",
                         budget=min(30.0, target.remaining()), AutoScalingGroupName=target.group,
                         LifecycleHookName=target.hook, InstanceId=instance_id)
    except NotPending:
        return False
    target.alive_until = time.monotonic() + target.heartbeat_timeout
    return True


def complete(aws: Aws, target: Target, instance_id: str, result: HookResult, *,
             attempted: bool = False) -> Completion:
    """Send ``result``; :attr:`Completion.NOT_PENDING` when no action was pending.

    Retried on throttling and transient errors while the action lives (at least 5 s): its
    deadline moves with every heartbeat admitted meanwhile. "No active Lifecycle Action
    found" after one of our own attempts may have been processed (a timeout, a 5xx; or
    ``attempted``: an earlier run recorded that it was sending, then ended) means that
    attempt completed it: ``"sent"``.
    """
    maybe_processed: list[BaseException] = []
    floor = time.monotonic() + 5.0

    def left() -> float:
        return max(floor - time.monotonic(), target.remaining())

    try:
        autoscaling.call(
            aws, "complete_lifecycle_action", budget=left,
            on_retry=lambda exc: None if is_throttling(exc) else maybe_processed.append(exc),
            AutoScalingGroupName=target.group, LifecycleHookName=target.hook,
            InstanceId=instance_id, LifecycleActionResult=result.value)
    except NotPending:
        if maybe_processed or attempted:
            log.info("lifecycle: an earlier attempt completed %s/%s", target.group, target.hook)
            return Completion.SENT
        return Completion.NOT_PENDING
    return Completion.SENT


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

    def stop(self) -> int:
        """Stop at once; waits for a heartbeat in flight; how many were sent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.count

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not heartbeat(self.aws, self.target, self.instance_id):
                    if not self._stop.is_set():  # (not the completion we just sent)
                        log.warning("lifecycle: %s is no longer pending; heartbeats stop",
                                    self.target.hook)
                    return
            except AgentError as exc:
                log.warning("lifecycle heartbeat failed: %s", exc)
                continue
            except Exception as exc:  # a bug must not kill the boot's keepalive silently
                log.warning("lifecycle heartbeat failed: internal error: %s", describe(exc))
                log.debug("heartbeat", exc_info=True)
                continue
            self.count += 1
            log.debug("lifecycle heartbeat %d for %s", self.count, self.target.hook)


# -- the launch hook of a boot ------------------------------------------------------------


@frozen()
class Decision:
    """What the lifecycle phase does: send ``send`` (or nothing), record ``result``."""

    state: PhaseState
    detail: str
    send: HookResult | None = None
    result: str | None = None  # lifecycle.result in state.json


def outcome(target: Target | None, *, failed: bool, on_failure: str,
            earlier: str | None) -> Decision:
    """The launch hook's decision table (pure).

    ``target``: what discovery found (None: not in a group); ``failed``: the boot failed;
    ``on_failure``: ``lifecycle.on_failure``; ``earlier``: the result an earlier run of this
    boot sent to the same group, if any.
    """
    if target is None:
        return Decision(PhaseState.SKIPPED, "not in an Auto Scaling group")
    if not target.hook:
        return Decision(PhaseState.SKIPPED, target.reason)
    result = ON_FAILURE[on_failure] if failed else HookResult.CONTINUE
    if result is None:
        return Decision(PhaseState.DONE, "boot failed; lifecycle.on_failure = none: left to "
                        "time out")
    if not target.pending:
        how = f"completed ({earlier}) by an earlier run" if earlier else "nothing pending"
        return Decision(PhaseState.DONE, f"instance is {target.instance_state or 'not waiting'}"
                        f": {how}", result=earlier)
    return Decision(PhaseState.DONE, f"{result} sent to {target.group}/{target.hook}",
                    send=result, result=result.value)


class LaunchHook:
    """This boot's launch hook: found (and heartbeated) while the boot runs, completed once.

    ``previous``: the state document of an earlier run of this boot (None: the first run);
    ``earlier_boot``: the history's record of this instance's boot before this one;
    ``knows_boots``: whether there is a history to tell a first boot from a reboot (without
    one, Auto Scaling is asked what is pending).
    """

    def __init__(self, cfg: LifecycleConfig, aws: Aws, meta: Metadata, *,
                 previous: dict[str, Any] | None = None,
                 earlier_boot: dict[str, Any] | None = None, knows_boots: bool = True) -> None:
        self.cfg = cfg
        self.aws = aws
        self.meta = meta
        self.instance_id = meta.identity.instance_id
        self.previous = previous
        self.earlier_boot = earlier_boot
        self.knows_boots = knows_boots
        self.heartbeats: Heartbeater | None = None

    @classmethod
    def at_boot(cls, cfg: LifecycleConfig, aws: Aws, meta: Metadata, rec: Recorder,
                earlier_boot: dict[str, Any] | None, history_file: str) -> LaunchHook:
        """The hook of this boot: its earlier run from ``rec``, its earlier boot from the
        history, which exists when ``history_file`` (``tuning.history_file``) is set."""
        return cls(cfg, aws, meta, previous=rec.previous, earlier_boot=earlier_boot,
                   knows_boots=bool(history_file))

    def find(self) -> Target | None:
        """The group and hook; heartbeats start when the action is pending."""
        target = discover(self.aws, self.instance_id, self.meta.tags,
                          hook_name=self.cfg.hook_name, state=self.known_state())
        if target is not None and target.pending:
            self.heartbeats = Heartbeater(self.aws, target, self.instance_id,
                                          self.cfg.heartbeat_seconds).start()
        return target

    def known_state(self) -> str | None:
        """The launch state as IMDS and the earlier runs tell it (None: ask Auto Scaling)."""
        target_state = self.meta.target_state
        group = (self.meta.tags or {}).get(GROUP_TAG, "")
        record = _earlier_record(self.previous, group, target_state or "")
        if group and target_state and record and isinstance(record.get("result"), str):
            return target_state  # an earlier run of this boot completed it: nothing pending
        if record and isinstance(record.get("sending"), str):
            return None  # an earlier run was sending when it ended: is the action still there?
        if not self.knows_boots:
            return None  # a reboot would look like a first boot
        return known_state(target_state, self.earlier_boot)

    def finish(self, target: Target | None, rec: Recorder, *,
               failed: bool) -> tuple[PhaseState, str]:
        """The lifecycle phase: CONTINUE the launch hook :meth:`find` found, or ``on_failure``.

        Heartbeats go on until the completion is admitted (it may be throttled for long).
        Once a result is sent nothing may fail the phase: it would contradict what was sent.
        """
        try:
            decision = outcome(target, failed=failed, on_failure=self.cfg.on_failure,
                               earlier=_earlier(target, rec.previous))
            sent = None
            if decision.send is not None and target is not None:
                sent = self._complete(target, decision.send, rec)
        except BaseException:
            with contextlib.suppress(Exception):
                if self.heartbeats is not None:
                    self.heartbeats.stop()
            raise
        try:
            return self._record(target, decision, sent, rec, self.meta.warm)
        except Exception as exc:
            log.warning("lifecycle: recording the result: %s", exc)
            log.debug("lifecycle", exc_info=True)
            return decision.state, decision.detail

    def _complete(self, target: Target, result: HookResult, rec: Recorder) -> Completion:
        """Record that ``result`` is being sent (durably, before it goes out), then send it.

        A run killed at any moment leaves the next one either this intent or the result: it
        then asks Auto Scaling whether the action is still pending rather than assume it,
        and takes "No active Lifecycle Action found" as this attempt's doing.
        """
        record = _earlier_record(rec.previous, target.group, self.meta.target_state or "")
        attempted = bool(record and record.get("sending"))
        rec.commit(lifecycle={"group": target.group, "hook": target.hook, "result": None,
                              "sending": result.value,
                              "target_lifecycle_state": self.meta.target_state or ""})
        return complete(self.aws, target, self.instance_id, result, attempted=attempted)

    def _record(self, target: Target | None, decision: Decision, sent: Completion | None,
                rec: Recorder, warm: bool) -> tuple[PhaseState, str]:
        beats = self.heartbeats.stop() if self.heartbeats is not None else 0
        if target is None:
            return decision.state, decision.detail
        rec.update(instance={**rec.doc["instance"], "auto_scaling_group": target.group})
        if not target.hook:
            return decision.state, decision.detail
        record = {"group": target.group, "hook": target.hook, "result": decision.result,
                  "heartbeats": beats, "target_lifecycle_state": self.meta.target_state or ""}
        if sent is Completion.NOT_PENDING:  # at a first boot, or found pending: not as it should
            rec.update(lifecycle={**record, "result": None})
            rec.warn(f"lifecycle: the {target.hook} action was no longer pending "
                     "(timed out, or completed by someone else)")
            return PhaseState.DONE, "no active lifecycle action any more: not ours to complete"
        rec.update(lifecycle=record)
        return decision.state, decision.detail + (" (warm pool)" if warm and sent else "")


def _earlier_record(previous: dict[str, Any] | None, group: str,
                    target_state: str) -> dict[str, Any] | None:
    """What an earlier run of this boot recorded about ``group``'s launch hook (its result,
    or ``sending``: the result it was sending when it ended) for the same launch (a launch
    into the warm pool is another action than the one into service); None: nothing."""
    record = (previous or {}).get("lifecycle")
    if not group or not isinstance(record, dict) or record.get("group") != group:
        return None
    before = record.get("target_lifecycle_state")
    if not isinstance(before, str):  # recorded by an earlier version: the instance's
        instance = (previous or {}).get("instance")
        if not isinstance(instance, dict):
            return None
        before = str(instance.get("target_lifecycle_state") or "")
    return record if before.startswith("Warmed:") == target_state.startswith("Warmed:") else None


def _earlier(target: Target | None, previous: dict[str, Any] | None) -> str | None:
    """The result an earlier run of this boot sent (or was sending) to the same group."""
    record = (previous or {}).get("lifecycle")
    if target is None or not isinstance(record, dict) or record.get("group") != target.group:
        return None
    result = record.get("result") or record.get("sending")
    return result if isinstance(result, str) else None


Lookup = tuple[LaunchHook, Target | None]  # what the hook's lookup found: the hook, its target


def phase(cfg: LifecycleConfig, lookup: Future[Lookup] | None, rec: Recorder, *,
          failed: bool) -> tuple[PhaseState, str]:
    """The lifecycle phase of a boot: skipped when off or when the boot never knew the
    instance (no ``lookup``); else the hook the lookup found (it raises the lookup's failure)
    finished."""
    if not cfg.enabled:
        return PhaseState.SKIPPED, "lifecycle.enabled = false"
    if lookup is None:
        return PhaseState.SKIPPED, "not run: the boot failed before the instance was known"
    hook, target = lookup.result()
    return hook.finish(target, rec, failed=failed)


def signal(cfg: SignalConfig, aws: Aws | None, meta: Metadata | None, ready: bool,
           rec: Recorder) -> None:
    """The other readiness signals: a marker file, CloudFormation ``SignalResource`` (with
    ``meta``, the instance's, when IMDS was read).

    Neither fails the boot: a problem, a bug too, is a warning.
    """
    try:
        _signal(cfg, aws, meta, ready, rec)
    except Exception as exc:
        rec.warn(f"signal: {describe_failure('the signals', exc)}")


def _signal(cfg: SignalConfig, aws: Aws | None, meta: Metadata | None, ready: bool,
            rec: Recorder) -> None:
    instance_id = meta.identity.instance_id if meta is not None else None
    if cfg.marker_file:
        marker = Path(cfg.marker_file)
        try:
            if ready:
                atomic_write(marker, f"{utc_now()}\n".encode(), mode=0o644)
            else:
                marker.unlink(missing_ok=True)
        except OSError as exc:
            rec.warn(f"signal: marker file {marker}: {exc.strerror}")
    if cfg.cloudformation_stack and aws is not None and instance_id:
        status = "SUCCESS" if ready else "FAILURE"
        try:
            aws.call("cloudformation", "signal_resource", StackName=cfg.cloudformation_stack,
                     LogicalResourceId=cfg.cloudformation_resource, UniqueId=instance_id,
                     Status=status)
            log.info("signal: %s sent to %s/%s", status, cfg.cloudformation_stack,
                     cfg.cloudformation_resource)
        except Exception as exc:
            message = describe(exc)
            rec.warn(f"signal: SignalResource {cfg.cloudformation_stack}/"
                     f"{cfg.cloudformation_resource} failed: {message}")
