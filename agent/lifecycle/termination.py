"""The end of an instance: notices from IMDS, then a drain within a deadline.

Watched in daemon mode, one poll every ``termination.poll_seconds``: the Auto Scaling
target lifecycle state (``Terminated``), and on spot instances only the interruption notice
(``spot/instance-action``) and the rebalance recommendation. A termination or interruption
notice runs the drain: the configured commands in order, then ``systemctl stop`` of the
configured units, all within ``deadline_seconds`` (for spot, before the interruption time),
while heartbeats keep a pending ``EC2_INSTANCE_TERMINATING`` hook alive; then the hook gets
CONTINUE and the published secrets are wiped. A rebalance recommendation only logs and runs
``rebalance_command``.

Scheduled events (``termination.scheduled_events``): the poll also reads
``events/maintenance/scheduled``. An active ``instance-retirement`` or ``instance-stop``
event of an instance in a group marks it Unhealthy (``SetInstanceHealth``, once), so that
the group launches its replacement before EC2 stops it; the group's termination then brings
the usual drain. Outside a group such an event is a warning: someone must act.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.frozen import frozen
from agent.service.notify import child_environment, run_command
from agent.state.recorder import utc_now

if TYPE_CHECKING:
    from agent.cloud.aws import Aws
    from agent.cloud.imds import ImdsClient
    from agent.lifecycle.config import TerminationConfig
    from agent.lifecycle.hook import Heartbeater, Target
    from agent.state.recorder import Recorder

log = logging.getLogger(__name__)
SPOT_MARGIN = 5.0  # finish the drain this long before a spot interruption


@frozen()
class Notice:
    """What IMDS announced."""

    kind: str  # "autoscaling" | "spot" | "rebalance"
    detail: str
    deadline: float | None = None  # monotonic time of a spot interruption


def poll(imds: ImdsClient, *, spot: bool) -> tuple[Notice | None, str | None]:
    """One look at IMDS: a notice (termination first) and the target lifecycle state."""
    target = imds.target_lifecycle_state()
    if target == "Terminated":
        return Notice("autoscaling", "target lifecycle state Terminated"), target
    if spot:
        action = imds.spot_action()
        if action is not None:
            when = str(action.get("time", ""))
            return Notice("spot", f"spot {action.get('action', 'interruption')} at {when}",
                          _monotonic_at(when)), target
        rebalance = imds.rebalance()
        if rebalance is not None:
            return Notice("rebalance", f"rebalance recommended at "
                          f"{rebalance.get('noticeTime', '?')}"), target
    return None, target


def _monotonic_at(stamp: str) -> float | None:
    """A ``2026-11-26T12:00:00Z`` wall-clock time as a monotonic deadline."""
    try:
        epoch = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
    return time.monotonic() + (epoch - time.time())


def drain_deadline(deadline_seconds: float, notice: Notice) -> float:
    """When the drain must be over (monotonic): ``deadline_seconds`` from now, and for spot
    ``SPOT_MARGIN`` before the interruption. Taken when the notice is seen."""
    deadline = time.monotonic() + deadline_seconds
    if notice.deadline is not None:
        deadline = min(deadline, notice.deadline - SPOT_MARGIN)
    return deadline


class TerminatingHook(threading.Thread):
    """The group's termination hook, found (the AWS SDK loaded first) while the drain's
    commands already run, kept alive by heartbeats, completed after them."""

    def __init__(self, hook_name: str, heartbeat_seconds: float, notice: Notice,
                 clients: Callable[[], Aws], instance_id: str,
                 tags: dict[str, str] | None) -> None:
        super().__init__(name="terminating-hook", daemon=True)
        self.hook_name, self.heartbeat_seconds = hook_name, heartbeat_seconds
        self.notice, self.clients = notice, clients
        self.instance_id, self.tags = instance_id, tags
        self.aws: Aws | None = None
        self.target: Target | None = None
        self.beats: Heartbeater | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Find the hook; heartbeats when its action is pending."""
        from agent.lifecycle import hook as lifecycle  # noqa: PLC0415 - imports botocore

        try:
            self.aws = aws = self.clients()
            # the group's termination sets the target state Terminated: its hooks wait
            known = "Terminating:Wait" if self.notice.kind == "autoscaling" else None
            self.target = lifecycle.discover(
                aws, self.instance_id, self.tags, hook_name=self.hook_name,
                transition=lifecycle.TERMINATING, setting="termination.hook_name", state=known)
            if self.target is not None and self.target.pending:
                self.beats = lifecycle.Heartbeater(aws, self.target, self.instance_id,
                                                   self.heartbeat_seconds).start()
        except Exception as exc:  # said by finish(), in the drain's own thread
            self.error = exc

    def finish(self) -> dict[str, Any] | None:
        """CONTINUE once the commands are done; state.json's ``hook`` record."""
        from agent.lifecycle import hook as lifecycle  # noqa: PLC0415

        self.join()
        if isinstance(self.error, AgentError):
            return {"error": str(self.error)}
        if self.error is not None:
            raise self.error
        target, aws = self.target, self.aws
        if target is None or not target.pending or aws is None:
            return None
        assert self.beats is not None
        try:
            sent = lifecycle.complete(aws, target, self.instance_id,
                                      lifecycle.HookResult.CONTINUE)
        except AgentError as exc:
            self.beats.stop()
            return {"group": target.group, "hook": target.hook, "error": str(exc)}
        return {"group": target.group, "hook": target.hook,
                "result": "CONTINUE" if sent is lifecycle.Completion.SENT else None,
                "heartbeats": self.beats.stop()}


def drain(term: TerminationConfig, notice: Notice, clients: Callable[[], Aws] | None,
          instance_id: str, tags: dict[str, str] | None, deadline: float | None = None, *,
          heartbeat_seconds: float, secrets_dir: str) -> dict[str, Any]:
    """Run the drain and complete the termination hook by ``deadline`` (monotonic; default
    :func:`drain_deadline` from now), heartbeating it every ``heartbeat_seconds`` (0: a third
    of its timeout); the record for state.json. ``clients``: the AWS clients (None: no
    hook to complete), made while the commands start; ``secrets_dir``: what a wipe
    empties."""
    if deadline is None:
        deadline = drain_deadline(term.deadline_seconds, notice)
    record: dict[str, Any] = {"reason": notice.kind, "notice": notice.detail,
                              "started_at": utc_now(), "steps": [], "hook": None,
                              "secrets_wiped": False}
    hook = None
    if clients is not None:
        hook = TerminatingHook(term.hook_name, heartbeat_seconds, notice, clients,
                               instance_id, tags)
        hook.start()
    steps = [(argv, " ".join(argv)) for argv in term.commands]
    steps += [(["systemctl", "stop", unit], f"systemctl stop {unit}") for unit in term.stop_units]
    for argv, what in steps:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            record["steps"].append({"step": what, "result": "skipped: deadline passed"})
            continue
        problem = run_command(argv, timeout=remaining, what=f"drain: {what}",
                              env=child_environment())
        record["steps"].append({"step": what, "result": problem or "ok"})
    if hook is not None:
        record["hook"] = hook.finish()
    if term.wipe_secrets:
        record["secrets_wiped"] = wipe(Path(secrets_dir))
    record["finished_at"] = utc_now()
    return record


def rebalance(term: TerminationConfig, notice: Notice) -> dict[str, Any]:
    """A rebalance recommendation: log, and run the optional command."""
    log.warning("termination: %s", notice.detail)
    argv = term.rebalance_command
    result = "no command"
    if argv:
        result = run_command(argv, timeout=term.deadline_seconds,
                             what="rebalance_command") or "ok"
    return {"notice": notice.detail, "at": utc_now(), "command": result}


def wipe(root: Path) -> bool:
    """Remove every published secret file under ``root`` (the directory itself stays)."""
    from agent.secrets import generations  # noqa: PLC0415 - the watch itself stays lean

    wiped = generations.wipe(root)
    if wiped:
        log.info("termination: secrets under %s wiped", root)
    return wiped


# -- scheduled events ----------------------------------------------------------------------

STOPPING = frozenset({"instance-retirement", "instance-stop"})  # EC2 will stop the instance
EVENTS_WARNING = "scheduled event"
HEALTH_BUDGET = 60.0  # seconds for SetInstanceHealth (within aws.max_wait_seconds)


@frozen()
class Event:
    """One scheduled event, as IMDS lists it."""

    code: str  # instance-retirement, instance-stop, system-reboot, ...
    event_id: str
    state: str  # active | completed | canceled
    description: str
    not_before: str  # as IMDS writes it: "21 Jan 2019 09:00:43 GMT"
    not_after: str

    @classmethod
    def of(cls, item: dict[str, Any]) -> Event:
        """From IMDS's JSON (absent fields are '')."""
        def text(key: str) -> str:
            value = item.get(key)
            return value if isinstance(value, str) else ""
        return cls(text("Code"), text("EventId"), text("State").lower(), text("Description"),
                   text("NotBefore"), text("NotAfter"))

    @property
    def active(self) -> bool:
        """Not completed or canceled (those also say so in their Description)."""
        return self.state == "active" and not self.description.startswith(
            ("[Completed]", "[Canceled]"))

    @property
    def stops(self) -> bool:
        """An active event after which EC2 stops (or retires) the instance."""
        return self.active and self.code in STOPPING

    def record(self) -> dict[str, str]:
        """state.json's entry (``action`` is added by the caller)."""
        return {"code": self.code, "event_id": self.event_id, "state": self.state,
                "not_before": self.not_before, "not_after": self.not_after,
                "description": self.description}


def scheduled(imds: ImdsClient) -> list[Event]:
    """The instance's scheduled events, as IMDS lists them."""
    return [Event.of(item) for item in imds.scheduled_events()]


def mark_unhealthy(aws: Aws, instance_id: str) -> None:
    """``SetInstanceHealth`` Unhealthy, now (not after the group's health check grace
    period): the group terminates the instance and launches a replacement."""
    aws.call("autoscaling", "set_instance_health", budget=min(HEALTH_BUDGET, aws.max_wait),
             InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)


Marked = tuple[str, str]
"""How :func:`set_unhealthy` went: ``("sent", "")``, ``("retry", problem)`` (out of retries:
the next poll tries again) or ``("failed", problem)`` (permanent: not tried again)."""


def set_unhealthy(aws: Aws, instance_id: str) -> Marked:
    """:func:`mark_unhealthy`, its failure worded for state.json."""
    from agent.cloud.aws import describe, is_access_denied  # noqa: PLC0415 - botocore, loaded

    try:
        mark_unhealthy(aws, instance_id)
    except AgentError as exc:
        return "retry", str(exc)
    except Exception as exc:
        if is_access_denied(exc):
            return "failed", ("SetInstanceHealth: access denied: the instance role needs "
                              "autoscaling:SetInstanceHealth")
        return "failed", f"SetInstanceHealth failed: {describe(exc)}"
    return "sent", ""


class ScheduledEvents:
    """What the daemon did about each scheduled event; Unhealthy sent once per instance.

    ``mark``: sends SetInstanceHealth (:func:`set_unhealthy`, in a job of the resident);
    ``earlier``: the ``health`` of an earlier run of this boot, so that a restarted daemon
    does not mark the instance again.
    """

    def __init__(self, rec: Recorder, group: str, in_group: bool,
                 mark: Callable[[], Marked], earlier: object = None) -> None:
        self.rec = rec
        self.group = group
        self.in_group = in_group
        self.mark = mark
        self.health: dict[str, Any] | None = earlier if isinstance(earlier, dict) and \
            earlier.get("status") == "Unhealthy" else None
        self.failed: str = ""  # a permanent SetInstanceHealth failure: not tried again
        self.last: list[dict[str, str]] | None = None

    def seen(self, events: list[Event]) -> None:
        """One poll's events: act on a stopping one, record the active ones."""
        active = [e for e in events if e.active]
        records = []
        for event in active:
            records.append({**event.record(), "action": self._act(event)})
        stopping = {e.event_id for e in active if e.stops}
        over = [w for w in self.rec.doc["warnings"] if w.startswith(EVENTS_WARNING)
                and not any(i and i in w for i in stopping)]
        for warning in over:  # the event completed or was canceled
            self.rec.clear_warning(warning)
        if records != self.last:
            self.last = records
            self.rec.update(events=records, **({"health": self.health} if self.health else {}))

    def _act(self, event: Event) -> str:
        if not event.stops:
            return "none (the instance keeps running)"
        when = f"{event.code} {event.event_id} not before {event.not_before or '?'}"
        if not self.in_group:
            self._warn(f"{EVENTS_WARNING}: {when}: not in an Auto Scaling group: stop and "
                       "start this instance (or replace it) before then")
            return "warning: not in an Auto Scaling group"
        if self.health is not None:
            return (f"marked Unhealthy in {self.health.get('group') or 'its group'} at "
                    f"{self.health.get('at')}: the group replaces the instance")
        if self.failed:
            return self.failed
        outcome, problem = self.mark()
        if outcome == "retry":
            self._warn(f"{EVENTS_WARNING}: {when}: SetInstanceHealth: {problem} (retried)")
            return f"SetInstanceHealth failed (retried at the next poll): {problem}"
        if outcome != "sent":
            self.failed = problem
            self._warn(f"{EVENTS_WARNING}: {when}: {self.failed}")
            return self.failed
        self.rec.clear_warning(f"{EVENTS_WARNING}: {when}: SetInstanceHealth")
        self.health = {"status": "Unhealthy", "group": self.group, "at": utc_now(),
                       "event_id": event.event_id, "code": event.code}
        log.warning("scheduled event %s: marked Unhealthy in %s: the group replaces the "
                    "instance", when, self.group or "its group")
        return (f"marked Unhealthy in {self.group or 'its group'} at {self.health['at']}: "
                "the group replaces the instance")

    def _warn(self, message: str) -> None:
        """A warning, written once (the poll sees the same event every few seconds)."""
        if message not in self.rec.doc["warnings"]:
            log.warning("%s", message)
            self.rec.warn(message)
