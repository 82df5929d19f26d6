"""Telemetry: the Prometheus textfile read back with prometheus_client's own parser, the
CloudWatch data points read back from moto; a telemetry failure only degrades the boot."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from agentproc import FILES, Booter, eventually
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.state.recorder import PHASES
from agent.telemetry import metrics as telemetry


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, by prometheus_client's text parser."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def requests(samples: dict[str, Any], api: str, outcome: str) -> float:
    return float(samples["agent_aws_requests_total"][(("api", api), ("outcome", outcome))])


def with_telemetry(b: Booter, extra: str = "", files: list[dict[str, Any]] = FILES) -> Path:
    textfile = b.root / "textfile" / "agent.prom"
    b.configure(files, extra=f'\n[telemetry]\ntextfile = "{textfile}"\n'
                              f'cloudwatch_namespace = "InstanceBoot"\n{extra}')
    return textfile


def test_render_is_the_prometheus_text_format() -> None:
    figures = telemetry.Figures(ready=True, duration=0.4123, finished_at=1764590000.25,
                                phases={"metadata": 0.008, "secrets": 0.072})
    text = telemetry.render(figures, degraded=False, requests={
        ('svc:Odd"Name\\', "ok"): 2, ("autoscaling:CompleteLifecycleAction", "throttled"): 3})
    samples = parse(text)
    assert samples["agent_boot_duration_seconds"] == {(): 0.4123}
    assert samples["agent_boot_phase_duration_seconds"] == {
        (("phase", "metadata"),): 0.008, (("phase", "secrets"),): 0.072}
    assert samples["agent_boot_ready"] == {(): 1.0}
    assert samples["agent_boot_degraded"] == {(): 0.0}
    assert samples["agent_boot_timestamp_seconds"] == {(): 1764590000.25}
    assert requests(samples, 'svc:Odd"Name\\', "ok") == 2  # escaped, and read back intact
    assert requests(samples, "autoscaling:CompleteLifecycleAction", "throttled") == 3
    assert requests(samples, "autoscaling:CompleteLifecycleAction", "ok") == 0  # every outcome
    kinds = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert kinds["agent_aws_requests"] == "counter" and kinds["agent_boot_ready"] == "gauge"


@pytest.mark.integration
def test_a_boot_writes_the_textfile_and_one_cloudwatch_data_point(booter: Booter) -> None:
    textfile = with_telemetry(booter)
    booter.world.cloud.fail_next("GetSecretValue", count=1)  # one throttled attempt
    assert booter.run().returncode == 0
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert os.listdir(textfile.parent) == ["agent.prom"]  # no temporary file left behind
    samples = parse(textfile.read_text())
    assert samples["agent_boot_ready"] == {(): 1.0}
    assert samples["agent_boot_degraded"] == {(): 0.0}
    assert set(samples["agent_boot_phase_duration_seconds"]) == {
        (("phase", str(name)),) for name in PHASES}
    doc = booter.doc()
    assert samples["agent_boot_duration_seconds"][()] >= sum(
        p["duration_ms"] for p in doc["phases"]) / 1000 * 0.5  # the phases overlap
    cloud = booter.world.cloud
    for api, action in (("autoscaling:CompleteLifecycleAction", "CompleteLifecycleAction"),
                        ("secretsmanager:GetSecretValue", "GetSecretValue"),
                        ("autoscaling:DescribeLifecycleHooks", "DescribeLifecycleHooks")):
        calls = cloud.calls(action)
        assert requests(samples, api, "ok") == len([c for c in calls if not c.throttled])
        assert requests(samples, api, "throttled") == len(cloud.throttled(action))
    assert requests(samples, "secretsmanager:GetSecretValue", "throttled") == 1

    (put,) = cloud.calls("PutMetricData")  # once per boot
    assert put.service == "monitoring"
    metrics = booter.world.boto3_client("cloudwatch").list_metrics(Namespace="InstanceBoot")
    found = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
             for m in metrics["Metrics"]}
    group = (("AutoScalingGroupName", "web-asg"),)
    both = (("AutoScalingGroupName", "web-asg"), ("InstanceType", "m5.xlarge"))
    assert found == {("BootDuration", group), ("BootDuration", both), ("BootFailed", group),
                     ("BootFailed", both)}
    assert failed_values(booter) == [0.0]
    assert doc["condition"] == "healthy"


def failed_values(b: Booter) -> list[float]:
    cloudwatch = b.world.boto3_client("cloudwatch")
    stats = cloudwatch.get_metric_statistics(
        Namespace="InstanceBoot", MetricName="BootFailed", Statistics=["Maximum"],
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": "web-asg"}],
        StartTime="2000-01-01T00:00:00Z", EndTime="2100-01-01T00:00:00Z", Period=60)
    return [float(p["Maximum"]) for p in stats["Datapoints"]]


@pytest.mark.integration
def test_a_failed_boot_reports_itself_failed(booter: Booter) -> None:
    textfile = with_telemetry(booter, files=[*FILES, {"secret_id": "prod/absent",
                                                      "path": "absent.txt"}])
    assert booter.run().returncode == 1
    samples = parse(textfile.read_text())
    assert samples["agent_boot_ready"] == {(): 0.0}
    assert samples["agent_boot_degraded"] == {(): 0.0}
    assert failed_values(booter) == [1.0]
    assert booter.results() == ["ABANDON"]


@pytest.mark.integration
def test_telemetry_failures_only_degrade(booter: Booter) -> None:
    blocker = booter.root / "not-a-dir"
    blocker.write_text("a file where the textfile's directory should be")
    booter.configure(FILES, extra=f'\n[telemetry]\ntextfile = "{blocker}/agent.prom"\n'
                                  'cloudwatch_namespace = "InstanceBoot"\n')
    booter.world.cloud.fail_next("PutMetricData", code="AccessDenied", status=403,
                                 message="not authorized")
    proc = booter.run()
    assert proc.returncode == 0, proc.stderr
    doc = booter.doc()
    assert doc["state"] == "ready" and doc["condition"] == "degraded"
    assert booter.results() == ["CONTINUE"]
    warnings = "\n".join(doc["warnings"])
    assert f"telemetry: textfile: {blocker}/agent.prom: Not a directory" in warnings
    assert "telemetry: CloudWatch: PutMetricData: access denied: the instance role needs " \
           "cloudwatch:PutMetricData" in warnings
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_the_textfile_follows_each_refresh(booter: Booter) -> None:
    textfile = with_telemetry(booter)
    with booter.daemon() as daemon:
        before = parse(textfile.read_text())
        assert "secretsmanager:DescribeSecret" not in str(before)
        daemon.send_signal(signal.SIGHUP)
        booter.refreshed(1)
        samples = eventually(lambda: (s := parse(textfile.read_text())) and str(s).count(
            "DescribeSecret") and s)
        described = len(booter.world.cloud.calls("DescribeSecret"))
        assert requests(samples, "secretsmanager:DescribeSecret", "ok") == described
        assert samples["agent_boot_timestamp_seconds"] == before["agent_boot_timestamp_seconds"]


def test_the_image_age_and_info_are_rendered() -> None:
    image = telemetry.ImageFigures(built_at=time.time() - 3 * 86400, image_id="ami-0abc",
                                   os="debian-12")
    figures = telemetry.Figures(ready=True, duration=0.4, finished_at=1764590000.0,
                                image=image)
    samples = parse(telemetry.render(figures, degraded=False, requests={}))
    assert abs(samples["agent_image_age_seconds"][()] - 3 * 86400) < 60
    assert samples["agent_image_info"] == {(("agent_version", __version__),
                                            ("image_id", "ami-0abc"), ("os", "debian-12")): 1.0}
    without = parse(telemetry.render(telemetry.Figures(True, 0.4, 1764590000.0), degraded=False,
                                     requests={}))
    assert "agent_image_age_seconds" not in without and "agent_image_info" not in without


@pytest.mark.integration
def test_a_boot_from_a_baked_image_reports_its_age(booter: Booter, tmp_path: Path) -> None:
    manifest = tmp_path / "image.json"
    manifest.write_text(json.dumps({
        "built_at": "2026-10-01T00:00:00Z", "built_at_epoch": time.time() - 45 * 86400,
        "agent": "0.1.0", "os": "Debian GNU/Linux 12 (bookworm)",
        "os_release": {"id": "debian", "version_id": "12"}}))
    textfile = with_telemetry(booter, extra=f'\n[image]\nmanifest = "{manifest}"\n')
    assert booter.run().returncode == 0
    samples = parse(textfile.read_text())
    assert 45 * 86400 - 60 < samples["agent_image_age_seconds"][()] < 45 * 86400 + 60
    ((labels, value),) = samples["agent_image_info"].items()
    image_id = booter.doc()["instance"]["image_id"]
    assert image_id.startswith("ami-") and value == 1.0
    assert dict(labels) == {"image_id": image_id, "os": "debian-12", "agent_version": __version__}

    cloudwatch = booter.world.boto3_client("cloudwatch")
    names = {m["MetricName"]: m["Dimensions"] for m in cloudwatch.list_metrics(
        Namespace="InstanceBoot", MetricName="ImageAgeDays")["Metrics"]}
    assert names == {"ImageAgeDays": [{"Name": "AutoScalingGroupName", "Value": "web-asg"}]}
    stats = cloudwatch.get_metric_statistics(
        Namespace="InstanceBoot", MetricName="ImageAgeDays", Statistics=["Maximum"],
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": "web-asg"}],
        StartTime="2000-01-01T00:00:00Z", EndTime="2100-01-01T00:00:00Z", Period=60)
    (point,) = stats["Datapoints"]
    assert 44.99 < point["Maximum"] < 45.01
