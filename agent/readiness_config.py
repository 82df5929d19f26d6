"""The ``[readiness]`` section: what must serve before the launch hook hears ``CONTINUE``.

Units (each ``active``) and checks (``http``, ``tcp`` or ``command``), all passing at once
for ``settle_seconds``, within ``timeout_seconds``. A check reaches this instance only: its
host is an IP literal (checked at boot to be loopback or one of the instance's own
addresses) or ``localhost``; a host name could resolve anywhere. The gate itself is
:mod:`agent.readiness`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from agent.fields import Command, Section, Text, UnitName, span
from agent.sections import ReadinessCheckRules, ReadinessRules

LOCAL_NAMES = ("localhost",)



def _host(host: str, what: str) -> str:
    """An IP literal or ``localhost`` (a name could resolve to another machine)."""
    if host.lower() in LOCAL_NAMES:
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: host {host!r} must be an IP address of this instance or "
                         "localhost (checks reach this instance only)") from None
    return host


def _url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError(f"{value!r}: no user or password in a check's URL")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number from 1 to 65535") from None
    _host(parts.hostname, value)
    return value


def _address(value: str) -> str:
    if not value:
        return value
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (an IPv6 host in brackets: [::1]:5432)")
    _host(host, value)
    return value


class ReadinessCheck(ReadinessCheckRules, Section):
    """A ``[[readiness.checks]]`` entry: exactly one of ``http``, ``tcp``, ``command``."""

    http: Text = ""
    tcp: Text = ""
    command: Command = []
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = []  # default: any 2xx
    timeout_seconds: Annotated[float, span(0.1, 60)] = 5.0  # one attempt

    @field_validator("http")
    @classmethod
    def _http(cls, value: str) -> str:
        return _url(value)

    @field_validator("tcp")
    @classmethod
    def _tcp(cls, value: str) -> str:
        return _address(value)

    @model_validator(mode="after")
    def _one_kind(self) -> ReadinessCheck:
        given = [k for k in ("http", "tcp", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a check is exactly one of http, tcp or command"
                             + (f" (this one has {' and '.join(given)})" if given else ""))
        if self.expect_status and not self.http:
            raise ValueError("expect_status is for http checks")
        return self


class ReadinessConfig(ReadinessRules, Section):
    """``[readiness]``: without it, the lifecycle phase follows the agent's own phases."""

    units: list[UnitName] = []
    timeout_seconds: Annotated[float, span(1, 7200)] = 600.0  # the whole wait
    settle_seconds: Annotated[float, span(0, 3600)] = 10.0  # everything holds this long
    interval_seconds: Annotated[float, span(0.1, 60)] = 2.0  # between rounds
    checks: list[ReadinessCheck] = []

    @model_validator(mode="after")
    def _something(self) -> ReadinessConfig:
        if self.model_fields_set and not self.enabled:
            raise ValueError("waits for nothing: give units or checks (or remove the section)")
        if len(set(self.units)) != len(self.units):
            raise ValueError("units: a unit is named twice")
        if self.settle_seconds >= self.timeout_seconds:
            raise ValueError(f"settle_seconds ({self.settle_seconds:g}) must be shorter than "
                             f"timeout_seconds ({self.timeout_seconds:g})")
        return self
