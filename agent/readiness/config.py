"""The ``[readiness]`` section: what must serve before the launch hook hears ``CONTINUE``.

Units (each ``active``) and checks (``http``, ``tcp`` or ``command``), all passing at once
for ``settle_seconds``, within ``timeout_seconds``. A check reaches this instance only: its
host is an IP literal (checked at boot to be loopback or one of the instance's own
addresses) or ``localhost``; a host name could resolve anywhere. The gate itself is
:mod:`agent.readiness.gate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

from agent.frozen import frozen
from agent.schema.fields import SECTION, Bounds, Check, Command, Text, UnitName, span

LOCAL_NAMES = ("localhost",)
ONESHOT_READINESS = ("[readiness] needs daemon mode (a oneshot run exits before the "
                     "applications could be watched)")


def _host(host: str, what: str) -> str:
    """An IP literal or ``localhost`` (a name could resolve to another machine)."""
    if host.lower() in LOCAL_NAMES:
        return host
    import ipaddress  # noqa: PLC0415 - only to validate

    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: host {host!r} must be an IP address of this instance or "
                         "localhost (checks reach this instance only)") from None
    return host


def _url(value: str) -> str:
    if not value:
        return value
    from urllib.parse import urlsplit  # noqa: PLC0415 - only to validate

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


@frozen()
class ReadinessCheck:
    """A ``[[readiness.checks]]`` entry: exactly one of ``http``, ``tcp``, ``command``."""

    __pydantic_config__ = SECTION

    http: Annotated[Text, Check(_url)] = ""
    tcp: Annotated[Text, Check(_address)] = ""
    command: Command = dataclasses.field(default_factory=list)
    expect_status: list[Annotated[int, Bounds(ge=100, le=599)]] = dataclasses.field(
        default_factory=list)  # default: any 2xx
    timeout_seconds: Annotated[float, span(0.1, 60)] = 5.0  # one attempt

    def __post_init__(self) -> None:
        given = [k for k in ("http", "tcp", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a check is exactly one of http, tcp or command"
                             + (f" (this one has {' and '.join(given)})" if given else ""))
        if self.expect_status and not self.http:
            raise ValueError("expect_status is for http checks")

    @property
    def kind(self) -> str:
        """``http``, ``tcp`` or ``command``."""
        return "http" if self.http else "tcp" if self.tcp else "command"

    @property
    def label(self) -> str:
        """How messages and ``agent status`` name it: the URL, ``tcp HOST:PORT``, the argv."""
        if self.http:
            return self.http
        if self.tcp:
            return f"tcp {self.tcp}"
        return " ".join(self.command)


@frozen()
class ReadinessConfig:
    """``[readiness]``: without it, the lifecycle phase follows the agent's own phases."""

    __pydantic_config__ = SECTION

    units: list[UnitName] = dataclasses.field(default_factory=list)
    timeout_seconds: Annotated[float, span(1, 7200)] = 600.0  # the whole wait
    settle_seconds: Annotated[float, span(0, 3600)] = 10.0  # everything holds this long
    interval_seconds: Annotated[float, span(0.1, 60)] = 2.0  # between rounds
    checks: list[ReadinessCheck] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if len(set(self.units)) != len(self.units):
            raise ValueError("units: a unit is named twice")
        if self.enabled and self.settle_seconds >= self.timeout_seconds:  # else: no gate
            raise ValueError(f"settle_seconds ({self.settle_seconds:g}) must be shorter than "
                             f"timeout_seconds ({self.timeout_seconds:g})")

    @property
    def enabled(self) -> bool:
        """Whether the gate runs: something to wait for is configured."""
        return bool(self.units or self.checks)


def given_readiness(raw: Any, validate: Callable[[Any], ReadinessConfig]) -> ReadinessConfig:
    """A ``[readiness]`` section that is there must wait for something."""
    section = validate(raw)
    if raw and isinstance(raw, dict) and not section.enabled:
        raise ValueError("waits for nothing: give units or checks (or remove the section)")
    return section
