"""The telemetry's section: ``[telemetry]``, where the boot's metrics go."""

from __future__ import annotations

import re
from typing import Annotated

from agent.frozen import frozen
from agent.schema.fields import SECTION, Check, OptionalFile, Text

CLOUDWATCH_NAMESPACE = r"[0-9A-Za-z.\-_/#:]{1,255}"


def _prom(value: str) -> str:
    if value and not value.endswith(".prom"):
        raise ValueError(f"{value!r} must end in .prom (the only files node_exporter's "
                         "textfile collector reads)")
    return value


def _namespace(value: str) -> str:
    if value and not re.fullmatch(CLOUDWATCH_NAMESPACE, value):
        raise ValueError(f"{value!r} is not a CloudWatch namespace (1 to 255 of "
                         "A-Z a-z 0-9 . - _ / # :)")
    if value.startswith("AWS/"):
        raise ValueError(f"{value!r}: namespaces starting AWS/ are AWS's own")
    return value


@frozen()
class TelemetryConfig:
    """``[telemetry]``: the boot's metrics, for Prometheus and CloudWatch (off by default)."""

    __pydantic_config__ = SECTION

    textfile: Annotated[OptionalFile, Check(_prom)] = ""  # node_exporter textfile collector
    cloudwatch_namespace: Annotated[Text, Check(_namespace)] = ""  # PutMetricData per boot
