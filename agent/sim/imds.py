"""A local IMDSv2 simulator: the EC2 instance metadata service, with fault injection.

Semantics follow the EC2 documentation and amazon-ec2-metadata-mock: a session token from
``PUT /latest/api/token`` (TTL 1..21600 s) is required on every GET (no IMDSv1 fallback),
``X-Forwarded-For`` is refused, and optional categories (tags, IAM role, spot, rebalance,
target lifecycle state, user data) answer 404 when the instance does not have them.
Scheduled events (``events/maintenance/scheduled``) are a JSON list, empty when there are
none; :func:`scheduled_event` makes one as EC2 shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from agent.sim.serving import Served, ServerThread

TOKEN_PATH = "/latest/api/token"  # noqa: S105
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105
MAX_TTL = 21600
CREDENTIALS_LIFETIME = timedelta(hours=6)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


EVENT_CODES = ("instance-reboot", "system-reboot", "system-maintenance", "instance-retirement",
               "instance-stop")
EVENT_STATES = {"active": "", "completed": "[Completed] ", "canceled": "[Canceled] "}


def event_time(moment: datetime) -> str:
    """A scheduled event's time as IMDS writes it: ``21 Jan 2019 09:00:43 GMT``."""
    return moment.astimezone(UTC).strftime("%d %b %Y %H:%M:%S GMT")


def scheduled_event(code: str, *, state: str = "active", description: str = "",
                    not_before: datetime | None = None, not_after: datetime | None = None,
                    event_id: str | None = None) -> dict[str, str]:
    """One entry of ``events/maintenance/scheduled`` as IMDS serves it.

    ``state`` is ``active``, ``completed`` or ``canceled``; a finished event's Description
    starts ``[Completed]`` or ``[Canceled]``, as EC2 writes it.
    """
    if code not in EVENT_CODES:
        raise ValueError(f"unknown scheduled event code {code!r}")
    if state not in EVENT_STATES:
        raise ValueError(f"unknown scheduled event state {state!r}")
    start = not_before or datetime.now(UTC) + timedelta(days=14)
    event = {
        "NotBefore": event_time(start),
        "Code": code,
        "Description": EVENT_STATES[state] + (description or {
            "instance-retirement": "The instance is running on degraded hardware",
            "instance-stop": "The instance is scheduled to be stopped",
        }.get(code, f"scheduled {code.replace('-', ' ')}")),
        "EventId": event_id or f"instance-event-{secrets.token_hex(9)[:17]}",
        "State": state,
    }
    if not_after is not None or code in ("system-reboot", "system-maintenance"):
        event["NotAfter"] = event_time(not_after or start + timedelta(hours=2))
    return event


@dataclasses.dataclass
class SimInstance:
    """The facts the simulator serves; change them at runtime with :meth:`update`."""

    instance_id: str = "i-0123456789abcdef0"
    instance_type: str = "m5.xlarge"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    image_id: str = "ami-0123456789abcdef0"
    account_id: str = "123456789012"
    private_ip: str = "10.0.1.23"
    architecture: str = "x86_64"
    tags: dict[str, str] | None = None
    target_lifecycle_state: str | None = None
    spot_action: dict[str, Any] | None = None
    rebalance: dict[str, Any] | None = None
    scheduled_events: list[dict[str, str]] = dataclasses.field(default_factory=list)
    user_data: bytes | None = None
    role_name: str | None = "agent-instance-role"
    market: str = "on-demand"  # instance-life-cycle: "on-demand" | "spot"
    pending_time: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def update(self, **changes: Any) -> None:
        """Change facts atomically (unknown names raise ``TypeError``)."""
        names = {f.name for f in dataclasses.fields(self)} - {"_lock"}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown SimInstance fields: {sorted(unknown)}")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def snapshot(self) -> SimInstance:
        """A consistent copy of the facts (tags and events copied too)."""
        with self._lock:
            copy = dataclasses.replace(self, _lock=threading.Lock())
            if self.tags is not None:
                copy.tags = dict(self.tags)
            copy.scheduled_events = [dict(e) for e in self.scheduled_events]
        return copy


class _Json:
    """A metadata leaf served as JSON."""

    def __init__(self, value: dict[str, Any] | list[Any]) -> None:
        self.value = value


_Node = str | bytes | _Json | dict[str, "_Node"]


_Response = tuple[int, bytes, str, dict[str, str]]  # status, body, content type, headers


class ImdsRequest(NamedTuple):
    """One served request (never the token)."""

    method: str
    path: str
    status: int


@dataclasses.dataclass
class _Fault:
    remaining: int
    status: int
    paths: tuple[str, ...] | None

    def matches(self, path: str) -> bool:
        return self.paths is None or path.startswith(self.paths)


class ImdsSimulator(Served):
    """A threaded IMDSv2 server on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, instance: SimInstance | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.instance = instance if instance is not None else SimInstance()
        self.poll_interval = poll_interval  # how soon stop() takes effect
        self.latency = 0.0
        self.token_lifetime: float | None = None
        self.disabled = False
        # The response hop limit too low for the client (a container on an instance with hop
        # limit 1): token PUTs are connected but their answers never arrive.
        self.hop_limit_exceeded = False
        self._stopped = threading.Event()
        self.requests: list[ImdsRequest] = []
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._server: _Server | None = None
        self._serving: ServerThread | None = None
        self._credentials = {
            "AccessKeyId": "ASIA" + secrets.token_hex(8).upper(),
            "SecretAccessKey": secrets.token_urlsafe(30),
            "Token": secrets.token_urlsafe(64),
        }

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> ImdsSimulator:
        """Bind and serve in a daemon thread."""
        self._stopped.clear()
        self._server = _Server((self._host, self._port), _Handler)
        self._server.sim = self
        self._serving = ServerThread(self._server, "imds-sim", self.poll_interval)
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        if self._server is None or self._serving is None:
            return
        self._stopped.set()
        self._serving.stop()
        self._server.close_connections()
        self._server, self._serving = None, None

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("ImdsSimulator is not started")
        return f"http://{self._host}:{self._server.server_port}"

    # faults and inspection -----------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, paths: Iterable[str] | None = None) -> None:
        """Answer the next ``count`` requests (whose path starts with one of ``paths``)."""
        with self._lock:
            self._faults.append(_Fault(count, status, tuple(paths) if paths else None))

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far."""
        with self._lock:
            self._tokens.clear()

    def count(
        self, method: str | None = None, path_prefix: str | None = None, status: int | None = None
    ) -> int:
        """How many logged requests match all the given filters."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method)
                and (path_prefix is None or r.path.startswith(path_prefix))
                and (status is None or r.status == status)
            )

    # request handling (called by the handler threads) ----------------------------------

    def _take_fault(self, path: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(path):
                    fault.remaining -= 1
                    return fault.status
            self._faults = [f for f in self._faults if f.remaining > 0]
        return None

    def _issue_token(self, ttl: int) -> str:
        lifetime = float(ttl) if self.token_lifetime is None else min(ttl, self.token_lifetime)
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + lifetime
        return token

    def _token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(ImdsRequest(method, path, status))

    def _tree(self) -> dict[str, _Node]:
        inst = self.instance.snapshot()
        now = datetime.now(UTC)
        hostname = f"ip-{inst.private_ip.replace('.', '-')}." + (
            "ec2.internal" if inst.region == "us-east-1" else f"{inst.region}.compute.internal"
        )
        meta: dict[str, _Node] = {
            "ami-id": inst.image_id,
            "hostname": hostname,
            "instance-id": inst.instance_id,
            "instance-life-cycle": inst.market,
            "instance-type": inst.instance_type,
            "local-hostname": hostname,
            "local-ipv4": inst.private_ip,
            "mac": "0e:" + ":".join(inst.instance_id[-10:][i : i + 2] for i in range(0, 10, 2)),
            "placement": {
                "availability-zone": inst.availability_zone,
                "region": inst.region,
            },
        }
        if inst.role_name is not None:
            meta["iam"] = {
                "info": _Json(
                    {
                        "Code": "Success",
                        "LastUpdated": _iso(now),
                        "InstanceProfileArn": (
                            f"arn:aws:iam::{inst.account_id}:instance-profile/{inst.role_name}"
                        ),
                        "InstanceProfileId": "AIPAEXAMPLE0INSTANCE0",
                    }
                ),
                "security-credentials": {
                    inst.role_name: _Json(
                        {
                            "Code": "Success",
                            "LastUpdated": _iso(now),
                            "Type": "AWS-HMAC",
                            **self._credentials,
                            "Expiration": _iso(now + CREDENTIALS_LIFETIME),
                        }
                    )
                },
            }
        if inst.tags is not None:
            meta["tags"] = {"instance": dict(inst.tags)}
        if inst.target_lifecycle_state is not None:
            meta["autoscaling"] = {"target-lifecycle-state": inst.target_lifecycle_state}
        if inst.spot_action is not None:
            meta["spot"] = {"instance-action": _Json(inst.spot_action)}
        events: dict[str, _Node] = {
            "maintenance": {"scheduled": _Json(inst.scheduled_events)}}
        if inst.rebalance is not None:
            events["recommendations"] = {"rebalance": _Json(inst.rebalance)}
        meta["events"] = events
        document = {
            "accountId": inst.account_id,
            "architecture": inst.architecture,
            "availabilityZone": inst.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": inst.image_id,
            "instanceId": inst.instance_id,
            "instanceType": inst.instance_type,
            "kernelId": None,
            "pendingTime": _iso(inst.pending_time),
            "privateIp": inst.private_ip,
            "ramdiskId": None,
            "region": inst.region,
            "version": "2017-09-30",
        }
        tree: dict[str, _Node] = {
            "dynamic": {"instance-identity": {"document": _Json(document)}},
            "meta-data": meta,
        }
        if inst.user_data is not None:
            tree["user-data"] = inst.user_data
        return tree

    def _lookup(self, path: str) -> tuple[bytes, str] | None:
        """Body and content type for a metadata path, or None (404)."""
        if not path.startswith("/latest/"):
            return None
        node: _Node = self._tree()
        for segment in (s for s in path[len("/latest/") :].split("/") if s):
            if not isinstance(node, dict) or segment not in node:
                return None
            node = node[segment]
        if isinstance(node, dict):
            listing = [k + "/" if isinstance(v, dict) else k for k, v in node.items()]
            return "\n".join(listing).encode(), "text/plain"
        if isinstance(node, _Json):
            return json.dumps(node.value, indent=2).encode(), "application/json"
        if isinstance(node, bytes):
            return node, "application/octet-stream"
        return node.encode(), "text/plain"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: ImdsSimulator

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (it timed out, as tests make it) is not worth a traceback."""
        import sys  # noqa: PLC0415

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.server.track(self.connection, alive=True)

    def finish(self) -> None:
        self.server.track(self.connection, alive=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is :attr:`ImdsSimulator.requests`."""

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        sim = self.server.sim
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if sim.latency:
            time.sleep(sim.latency)
        if sim.hop_limit_exceeded and path == TOKEN_PATH and self.command == "PUT":
            sim._log(self.command, path, 0)  # the answer dies on the way: nothing is sent
            sim._stopped.wait(60)
            self.close_connection = True
            return
        status, body, ctype, headers = self._route(sim, path)
        sim._log(self.command, path, status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, sim: ImdsSimulator, path: str) -> _Response:
        refusal = self._refusal(sim, path)
        if refusal is not None:
            return refusal
        if path == TOKEN_PATH:
            return self._token(sim)
        if self.command != "GET":
            return self._error(405)
        if not sim._token_valid(self.headers.get(TOKEN_HEADER)):
            return self._error(401)
        found = sim._lookup(path)
        if found is None:
            return self._error(404)
        return 200, found[0], found[1], {}

    def _refusal(self, sim: ImdsSimulator, path: str) -> _Response | None:
        """Disabled service, injected fault, or a proxied request."""
        if sim.disabled:
            return self._error(403, "IMDS disabled")
        fault = sim._take_fault(path)
        if fault is not None:
            return self._error(fault)
        if "X-Forwarded-For" in self.headers:
            return self._error(403)
        return None

    def _token(self, sim: ImdsSimulator) -> _Response:
        if self.command != "PUT":
            return self._error(405)
        ttl = self.headers.get(TTL_HEADER, "")
        if not (ttl.isascii() and ttl.isdigit() and 1 <= int(ttl) <= MAX_TTL):
            return self._error(400)
        return 200, sim._issue_token(int(ttl)).encode(), "text/plain", {TTL_HEADER: ttl}

    @staticmethod
    def _error(status: int, text: str | None = None) -> _Response:
        body = text or HTTPStatus(status).phrase
        return status, body.encode(), "text/plain", {}
