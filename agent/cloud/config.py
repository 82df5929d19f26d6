"""The cloud clients' sections: ``[imds]`` (the metadata service) and ``[aws]`` (the AWS
APIs)."""

from __future__ import annotations

from typing import Annotated

from agent.frozen import frozen
from agent.schema.fields import SECTION, Bounds, Check, Text, span


def _http_only(value: str) -> str:
    if not value.startswith("http://") or len(value) <= len("http://"):
        raise ValueError("must be an http:// URL (IMDS speaks plain HTTP)")
    return value.rstrip("/")


@frozen()
class ImdsConfig:
    """``[imds]``: where and how patiently to read instance metadata."""

    __pydantic_config__ = SECTION

    endpoint: Annotated[Text, Check(_http_only)] = "http://169.254.169.254"
    token_ttl_seconds: Annotated[int, Bounds(ge=1, le=21600)] = 21600
    timeout_seconds: Annotated[float, span(0.1, 60)] = 2.0
    max_wait_seconds: Annotated[float, span(1, 3600)] = 120.0


@frozen()
class AwsConfig:
    """``[aws]``: region, endpoint and the retry budget of each call."""

    __pydantic_config__ = SECTION

    region: Text = ""
    endpoint_url: Text = ""
    max_wait_seconds: Annotated[float, span(1, 3600)] = 300.0
