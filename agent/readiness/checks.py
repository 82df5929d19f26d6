"""The readiness checks: one attempt each, bounded, saying what it saw in a few words.

* ``http``: one ``GET``, no redirect followed, the status compared with ``expect_status``
  (any 2xx by default). The body is never read: it may hold anything.
* ``tcp``: a connection accepted (then closed).
* ``command``: argv without a shell, its output discarded (it may print a secret), in a
  process group of its own that is killed when the attempt ends: nothing is left running.

A check reaches this instance only: its address must be loopback or one this machine holds
(:func:`local_problem`, asked once before the gate starts). What a check saw is short text
built from numbers and error names, never from what the other side sent.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.service.notify import child_environment

if TYPE_CHECKING:
    from agent.readiness.config import ReadinessCheck

USER_AGENT = "instance-boot-agent-readiness"


def host_port(check: ReadinessCheck) -> tuple[str, int]:
    """The address a network check connects to."""
    if check.http:
        parts = urlsplit(check.http)
        assert parts.hostname is not None  # validated at load
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    host, _, port = check.tcp.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def local_problem(host: str) -> str:
    """Why ``host`` is not this instance ('' when it is: loopback, or an address of ours)."""
    if host.lower() == "localhost":
        return ""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return ""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))  # only an address this machine holds can be bound
        except OSError:
            return f"{host} is not an address of this instance (checks reach it only)"
    return ""


def run(check: ReadinessCheck, budget: float) -> tuple[bool, str]:
    """One attempt within ``min(budget, its timeout)`` seconds: (passed, what it saw)."""
    timeout = round(max(0.05, min(budget, check.timeout_seconds)), 2)
    if check.http:
        return _http(check, timeout)
    if check.tcp:
        return _tcp(check, timeout)
    return _command(check.command, timeout)


def _http(check: ReadinessCheck, timeout: float) -> tuple[bool, str]:
    parts = urlsplit(check.http)
    host, port = host_port(check)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":  # this instance, by address: no name to verify
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    try:
        conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Connection": "close"})
        status = conn.getresponse().status  # the body is never read
    except (OSError, http.client.HTTPException) as exc:
        return False, _failure(exc, timeout)
    finally:
        conn.close()
    passed = status in check.expect_status if check.expect_status else 200 <= status < 300
    return passed, str(status)


def _tcp(check: ReadinessCheck, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection(host_port(check), timeout=timeout):
            return True, "connected"
    except OSError as exc:
        return False, _failure(exc, timeout)


def _command(argv: list[str], timeout: float) -> tuple[bool, str]:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=child_environment(),
                                start_new_session=True)
    except OSError as exc:
        return False, f"cannot run: {exc.strerror or type(exc).__name__}"
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:  # the whole group: what it forked goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if code is None:
        return False, f"timed out after {round(timeout, 1):g} s"
    if code < 0:
        return False, f"killed by {signal.Signals(-code).name}"
    return code == 0, f"exit {code}"


def _failure(exc: BaseException, timeout: float) -> str:
    """A few words for a failed connection or exchange (no text from the other side)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {round(timeout, 1):g} s"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower() if exc.errno != errno.ECONNREFUSED else (
            "connection refused")
    return type(exc).__name__
