"""The telemetry's section: ``[telemetry]``, where the boot's metrics go."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import error_of, load

from agent.telemetry.config import TelemetryConfig


def test_off_by_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.telemetry == TelemetryConfig() and type(cfg.telemetry) is TelemetryConfig
    assert (cfg.telemetry.textfile, cfg.telemetry.cloudwatch_namespace) == ("", "")


def test_a_textfile_and_a_namespace(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[telemetry]\ntextfile = '/var/lib/node/agent.prom'\n"
                         "cloudwatch_namespace = 'Fleet/Boot'\n")
    assert (cfg.telemetry.textfile, cfg.telemetry.cloudwatch_namespace) == (
        "/var/lib/node/agent.prom", "Fleet/Boot")


@pytest.mark.parametrize(("text", "line"), [
    ("[telemetry]\ntextfile = 'agent.prom'\n",
     "telemetry.textfile: 'agent.prom' must be an absolute path"),
    ("[telemetry]\ntextfile = '/var/lib/node-exporter/agent.txt'\n",
     "telemetry.textfile: '/var/lib/node-exporter/agent.txt' must end in .prom"),
    ("[telemetry]\ncloudwatch_namespace = 'Instance Boot'\n",
     "telemetry.cloudwatch_namespace: 'Instance Boot' is not a CloudWatch namespace"),
    ("[telemetry]\ncloudwatch_namespace = 'AWS/EC2'\n",
     "telemetry.cloudwatch_namespace: 'AWS/EC2': namespaces starting AWS/ are AWS's own"),
])
def test_each_rule_is_one_line_naming_the_key(tmp_path: Path, text: str, line: str) -> None:
    assert error_of(tmp_path, text).startswith(line)
