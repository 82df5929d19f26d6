"""The end of an instance: notices from IMDS, then a drain within a deadline.

Watched in daemon mode, one poll every ``termination.poll_seconds``: the Auto Scaling
target lifecycle state (``Terminated``), and on spot instances only the interruption notice
(``spot/instance-action``) and the rebalance recommendation. A termination or interruption
notice runs the drain: the configured commands in order, then ``systemctl stop`` of the
configured units, all within ``deadline_seconds`` (for spot, before the interruption time),
while heartbeats keep a pending ``EC2_INSTANCE_TERMINATING`` hook alive; then the hook gets
CONTINUE and the published secrets are wiped. A rebalance recommendation only logs and runs
``rebalance_command``.
"""

from __future__ import annotations

import calendar
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import generations
from agent.errors import AgentError
from agent.service import child_environment, run_command
from agent.state import utc_now

if TYPE_CHECKING:
    from agent.aws import Aws
    from agent.config import Config
    from agent.imds import ImdsClient

log = logging.getLogger(__name__)
SPOT_MARGIN = 5.0  # finish the drain this long before a spot interruption


@dataclass(frozen=True)
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


def drain(cfg: Config, notice: Notice, aws: Aws | None, instance_id: str,
          tags: dict[str, str] | None) -> dict[str, Any]:
    """Run the drain and complete the termination hook; the record for state.json."""
    from agent import lifecycle  # noqa: PLC0415 - imports botocore

    term = cfg.termination
    deadline = time.monotonic() + term.deadline_seconds
    if notice.deadline is not None:
        deadline = min(deadline, notice.deadline - SPOT_MARGIN)
    record: dict[str, Any] = {"reason": notice.kind, "notice": notice.detail,
                              "started_at": utc_now(), "steps": [], "hook": None,
                              "secrets_wiped": False}
    target = beats = None
    if aws is not None:
        try:
            target = lifecycle.discover(aws, instance_id, tags, hook_name=term.hook_name,
                                        transition=lifecycle.TERMINATING,
                                        setting="termination.hook_name")
        except AgentError as exc:
            record["hook"] = {"error": str(exc)}
        if target is not None and target.pending:
            beats = lifecycle.Heartbeater(aws, target, instance_id,
                                          cfg.lifecycle.heartbeat_seconds).start()
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
    if target is not None and target.pending and aws is not None:
        assert beats is not None
        try:
            sent = lifecycle.complete(aws, target, instance_id, lifecycle.HookResult.CONTINUE)
            record["hook"] = {"group": target.group, "hook": target.hook,
                              "result": "CONTINUE" if sent is lifecycle.Completion.SENT
                              else None, "heartbeats": beats.stop()}
        except AgentError as exc:
            beats.stop()
            record["hook"] = {"group": target.group, "hook": target.hook, "error": str(exc)}
    if term.wipe_secrets:
        record["secrets_wiped"] = wipe(Path(cfg.secrets.dir))
    record["finished_at"] = utc_now()
    return record


def rebalance(cfg: Config, notice: Notice) -> dict[str, Any]:
    """A rebalance recommendation: log, and run the optional command."""
    log.warning("termination: %s", notice.detail)
    argv = cfg.termination.rebalance_command
    result = "no command"
    if argv:
        result = run_command(argv, timeout=cfg.termination.deadline_seconds,
                             what="rebalance_command") or "ok"
    return {"notice": notice.detail, "at": utc_now(), "command": result}


def wipe(root: Path) -> bool:
    """Remove every published secret file under ``root`` (the directory itself stays)."""
    wiped = generations.wipe(root)
    if wiped:
        log.info("termination: secrets under %s wiped", root)
    return wiped
