"""Telemetry: the boot's figures for Prometheus and CloudWatch; never a reason to fail.

``telemetry.textfile``: the Prometheus text format that node_exporter's textfile collector
reads, written atomically (a complete temporary file renamed over it, mode 0644) after the
boot and after each refresh of the secrets: the boot's and each phase's duration, whether it
is ready (and degraded), when it ended, and every AWS request attempt by API and outcome.
``telemetry.cloudwatch_namespace``: one ``PutMetricData`` per boot, ``BootDuration``
(Seconds) and ``BootFailed`` (Count, 0 or 1), by ``AutoScalingGroupName`` and by
``AutoScalingGroupName, InstanceType`` (outside a group by ``InstanceType``); with a bake
manifest, the image's age: ``agent_image_age_seconds`` and ``agent_image_info`` in the
textfile, ``ImageAgeDays`` by ``AutoScalingGroupName`` in CloudWatch. A failure of
either is a warning on the boot, never its failure. The text is formatted by hand (no client
library on the boot path).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.errors import AgentError, describe_failure, exception_detail
from agent.frozen import frozen
from agent.fsutil import atomic_write

if TYPE_CHECKING:
    from agent.cloud.aws import Aws
    from agent.state.recorder import Recorder
    from agent.telemetry.config import TelemetryConfig

log = logging.getLogger(__name__)
OUTCOMES = ("ok", "throttled", "error")
CLOUDWATCH_BUDGET = 30.0  # seconds for the one PutMetricData (within aws.max_wait_seconds)
TEXTFILE_WARNING = "telemetry: textfile"
CLOUDWATCH_WARNING = "telemetry: CloudWatch"


@frozen()
class ImageFigures:
    """The image this instance booted, from its bake manifest."""

    built_at: float  # Unix time of the bake
    image_id: str
    os: str

    def age(self) -> float:
        """Seconds since the bake, now."""
        return time.time() - self.built_at

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ImageFigures | None:
        """From the state (None when the image has no manifest)."""
        image = doc.get("image") or {}
        if not isinstance(image.get("built_at_epoch"), (int, float)):
            return None
        return cls(float(image["built_at_epoch"]),
                   str((doc.get("instance") or {}).get("image_id") or ""),
                   str(image.get("os") or ""))


Requests = dict[tuple[str, str], int]
"""AWS request attempts by (api, outcome)."""


def counted(aws: Aws | None, earlier: Requests | None = None) -> Requests:
    """``aws``'s request counts so far, added to ``earlier``."""
    total = dict(earlier or {})
    for key, count in (aws.request_counts() if aws is not None else {}).items():
        total[key] = total.get(key, 0) + count
    return total


@dataclass
class Figures:
    """What the boot measured."""

    ready: bool
    duration: float  # seconds, from the start of `agent run` to the verdict
    finished_at: float  # Unix time of the verdict
    phases: dict[str, float] = field(default_factory=dict)  # seconds, the phases that ran
    image: ImageFigures | None = None


def figures(doc: dict[str, Any], *, ready: bool, started: float) -> Figures:
    """The figures of a boot that just ended (``started``: its ``time.monotonic()``)."""
    phases = {str(p["name"]): p["duration_ms"] / 1000 for p in doc.get("phases", [])
              if isinstance(p.get("duration_ms"), int)}
    return Figures(ready, time.monotonic() - started, time.time(), phases, ImageFigures.of(doc))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(round(value, 6))


def _label(value: str) -> str:
    """A label value, escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return lines


def render(boot: Figures, *, degraded: bool, requests: dict[tuple[str, str], int],
           regates: dict[str, int] | None = None) -> str:
    """The textfile: Prometheus text exposition format 0.0.4."""
    apis = sorted({api for api, _ in requests})
    lines = [
        *_metric("agent_boot_duration_seconds", "gauge",
                 "Seconds from the start of agent run to the boot's verdict.",
                 [({}, boot.duration)]),
        *_metric("agent_boot_phase_duration_seconds", "gauge",
                 "Seconds each phase of the boot took (the phases that ran).",
                 [({"phase": name}, seconds) for name, seconds in boot.phases.items()]),
        *_metric("agent_boot_ready", "gauge",
                 "1 when the boot is ready (healthy or degraded), 0 when it failed.",
                 [({}, int(boot.ready))]),
        *_metric("agent_boot_degraded", "gauge",
                 "1 when the boot is ready but degraded (agent status says why).",
                 [({}, int(boot.ready and degraded))]),
        *_metric("agent_boot_timestamp_seconds", "gauge",
                 "Unix time of the boot's verdict.", [({}, boot.finished_at)]),
        *_metric("agent_aws_requests_total", "counter",
                 "AWS API requests, every attempt, by API and outcome.",
                 [({"api": api, "outcome": outcome}, requests.get((api, outcome), 0))
                  for api in apis for outcome in OUTCOMES]),
        *(_metric("agent_readiness_after_rotation_total", "counter",
                  "Readiness gates run again after a rotation reloaded units, by outcome.",
                  [({"outcome": k}, regates.get(k, 0)) for k in ("passed", "failed")])
          if regates is not None else []),
    ]
    if boot.image is not None:
        lines += [
            *_metric("agent_image_age_seconds", "gauge", "Seconds since the image was baked.",
                     [({}, boot.image.age())]),
            *_metric("agent_image_info", "gauge", "The image this instance booted.",
                     [({"image_id": boot.image.image_id, "os": boot.image.os,
                        "agent_version": __version__}, 1)]),
        ]
    return "\n".join(lines) + "\n"


def metric_data(boot: Figures, group: str, instance_type: str) -> list[dict[str, Any]]:
    """PutMetricData's data: both metrics for each set of dimensions."""
    if group:
        sets = [[{"Name": "AutoScalingGroupName", "Value": group}],
                [{"Name": "AutoScalingGroupName", "Value": group},
                 {"Name": "InstanceType", "Value": instance_type}]]
    else:
        sets = [[{"Name": "InstanceType", "Value": instance_type}]]
    data = [datum for dimensions in sets for datum in (
        {"MetricName": "BootDuration", "Dimensions": dimensions, "Value": boot.duration,
         "Unit": "Seconds"},
        {"MetricName": "BootFailed", "Dimensions": dimensions, "Value": float(not boot.ready),
         "Unit": "Count"},
    )]
    if boot.image is not None and group:
        data.append({"MetricName": "ImageAgeDays", "Dimensions": sets[0],
                     "Value": boot.image.age() / 86400, "Unit": "None"})
    return data


class Telemetry:
    """The boot's telemetry: published after the verdict, the textfile again after refreshes."""

    def __init__(self, cfg: TelemetryConfig, rec: Recorder) -> None:
        self.cfg = cfg
        self.rec = rec
        self.boot: Figures | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is configured."""
        return bool(self.cfg.textfile or self.cfg.cloudwatch_namespace)

    def report(self, *, ready: bool, started: float, aws: Aws | None,
               make_aws: Callable[[], Aws] | None) -> None:
        """The boot's figures published. Telemetry never fails a boot: any failure, a bug
        too, is a warning. ``make_aws``: the boot's clients, for CloudWatch when the boot
        failed before its first AWS call."""
        if not self.enabled:
            return
        try:
            boot = figures(self.rec.doc, ready=ready, started=started)
            if aws is None and make_aws is not None and self.cfg.cloudwatch_namespace:
                aws = make_aws()
            self.booted(boot, aws)
        except Exception as exc:
            log.debug("telemetry", exc_info=True)
            with contextlib.suppress(Exception):
                self.rec.warn(f"telemetry: {describe_failure('the telemetry', exc)}")

    def booted(self, boot: Figures, aws: Aws | None) -> None:
        """After the verdict: the textfile, and the boot's one CloudWatch data point."""
        self.boot = boot
        self.write(aws)
        if self.cfg.cloudwatch_namespace and not self.put(boot, aws):
            self.write(aws)  # now degraded by the warning

    def write(self, aws: Aws | None, earlier: Requests | None = None) -> None:
        """(Re)write the textfile with the current request counts (``earlier``: those of
        the processes before this one) and condition."""
        if not self.cfg.textfile or self.boot is None:
            return
        try:
            text = render(self.boot, degraded=self.rec.doc.get("condition") == "degraded",
                          requests=counted(aws, earlier),
                          regates=(self.rec.doc.get("readiness") or {}).get("after_rotation"))
            atomic_write(self.cfg.textfile, text.encode(), mode=0o644, sync=False)
        except OSError as exc:
            self._warn(TEXTFILE_WARNING, f"{self.cfg.textfile}: {exc.strerror or exc}")
            return
        except Exception as exc:  # a bug here must not reach the boot
            log.debug("telemetry textfile", exc_info=True)
            self._warn(TEXTFILE_WARNING,
                       f"internal error: {type(exc).__name__}: {exception_detail(exc)}")
            return
        self.rec.clear_warning(TEXTFILE_WARNING)

    def put(self, boot: Figures, aws: Aws | None) -> bool:
        """One ``PutMetricData``; a problem is a warning (False)."""
        instance = self.rec.doc.get("instance") or {}
        if aws is None or not instance.get("instance_type"):
            self._warn(CLOUDWATCH_WARNING, "no data point: the boot failed before the "
                       "instance and its AWS clients were known")
            return False
        from agent.cloud.aws import describe, is_access_denied  # noqa: PLC0415 - loaded by now

        try:
            aws.call("cloudwatch", "put_metric_data", budget=min(CLOUDWATCH_BUDGET, aws.max_wait),
                     Namespace=self.cfg.cloudwatch_namespace,
                     MetricData=metric_data(boot, str(instance.get("auto_scaling_group") or ""),
                                            str(instance["instance_type"])))
        except AgentError as exc:
            self._warn(CLOUDWATCH_WARNING, str(exc))
            return False
        except Exception as exc:
            if is_access_denied(exc):
                self._warn(CLOUDWATCH_WARNING, "PutMetricData: access denied: the instance role "
                           "needs cloudwatch:PutMetricData")
            else:
                log.debug("telemetry CloudWatch", exc_info=True)
                self._warn(CLOUDWATCH_WARNING, f"PutMetricData: {describe(exc)}")
            return False
        log.info("telemetry: BootDuration %.3f s, BootFailed %d sent to CloudWatch %s",
                 boot.duration, int(not boot.ready), self.cfg.cloudwatch_namespace)
        return True

    def _warn(self, prefix: str, problem: str) -> None:
        log.warning("%s: %s", prefix, problem)
        self.rec.clear_warning(prefix)
        self.rec.warn(f"{prefix}: {problem}")
