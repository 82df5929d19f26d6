"""moto in server mode, fronted by a WSGI middleware that adds what moto lacks.

The middleware records every AWS call, adds latency, enforces request quotas (a token
bucket per API, throttled calls answered as AWS answers them: :class:`Quotas`), injects
errors in the wire format of each protocol (query, ec2, JSON), answers a small control API
under ``/_sim/``, and hands chosen actions to interceptors. :class:`LifecycleActions` is such
an interceptor: Auto Scaling lifecycle hooks whose actions stay pending until
``CompleteLifecycleAction``, accept heartbeats, and time out to the hook's DefaultResult.
Other semantics (CloudFormation ``SignalResource``, ``SetInstanceHealth`` with the group's
reaction) plug in the same way through :attr:`SimCloud.interceptors`.

moto keeps its state per process: one :class:`SimCloud` at a time, reset by ``start()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from moto.autoscaling.models import autoscaling_backends
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
NAMESPACES = {"cloudformation": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
              "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
MAX_GLOBAL_TIMEOUT = 48 * 3600

_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/([^/,]+)/")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Control = Callable[[dict[str, Any] | None], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Call:
    """One AWS API call as the simulator received it."""

    service: str
    action: str
    params: dict[str, Any]
    region: str
    protocol: str  # "query" | "ec2" | "json"
    at: float = 0.0  # time.monotonic() when it arrived (after the added latency)
    throttled: bool = False  # refused by a quota or an injected throttling error


class SimAwsError(Exception):
    """Raised by an interceptor: answered as an AWS error in the call's protocol."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


Interceptor = Callable[[Call], None]


# --- the AWS wire protocols -----------------------------------------------------------


# How AWS refuses a call over its quota, by wire protocol: (code, HTTP status, message).
THROTTLED = {
    "query": ("Throttling", 400, "Rate exceeded"),  # Auto Scaling, CloudFormation, STS
    "json": ("ThrottlingException", 400, "Rate exceeded"),  # Secrets Manager, SSM
    "ec2": ("RequestLimitExceeded", 503, "Request limit exceeded."),
}
THROTTLING_CODES = frozenset(code for code, _, _ in THROTTLED.values())


def parse_call(environ: dict[str, Any]) -> Call | None:
    """The AWS call in a WSGI request (body restored for moto), or None if not one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    region, service = scope.groups() if scope else ("us-east-1", "")
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        params = json.loads(body or b"{}")
        return Call(service, target.rpartition(".")[2], params, region, "json")
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action = form.pop("Action", "")
        form.pop("Version", None)
        if action:
            protocol = "ec2" if service == "ec2" else "query"
            return Call(service, action, form, region, protocol)
    return None


def error_response(
    protocol: str, code: str, message: str, status: int, namespace: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """An AWS error body that botocore parses into ``ClientError(code)`` (``namespace``: the
    query service's XML namespace, as AWS writes it on its ErrorResponse)."""
    request_id = str(uuid.uuid4())
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
    elif protocol == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    else:
        kind = "Sender" if status < 500 else "Receiver"
        xmlns = f' xmlns="{namespace}"' if namespace else ""
        body = (
            f"<ErrorResponse{xmlns}><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    return status, [*headers, ("x-amzn-RequestId", request_id)], body


def empty_response(call: Call) -> tuple[int, list[tuple[str, str]], bytes]:
    """The success answer of an action whose result is empty."""
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        return 200, [("Content-Type", "application/x-amz-json-1.1")], b"{}"
    action = call.action
    body = (
        f'<{action}Response xmlns="{NAMESPACES.get(call.service, AUTOSCALING_NS)}">'
        f"<{action}Result/>"
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    ).encode()
    return 200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


# --- lifecycle hooks ------------------------------------------------------------------


@dataclasses.dataclass
class LifecycleActionRecord:
    """A lifecycle action: pending while ``result`` is None."""

    group: str
    hook: str
    transition: str
    instance_id: str
    token: str
    heartbeat_timeout: int
    default_result: str
    started_at: datetime
    result: str | None = None
    completed_by: str | None = None  # "api" | "timeout" | "abandoned" (another hook's ABANDON)
    completed_at: datetime | None = None
    heartbeats: int = 0
    warm_pool: str | None = None  # Warmed:Stopped/Running/Hibernated: where CONTINUE leads


@dataclasses.dataclass
class _Pending:
    record: LifecycleActionRecord
    region: str
    deadline: float
    global_deadline: float


class LifecycleActions:
    """Pending Auto Scaling lifecycle actions, kept in step with moto's instance states."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._done: list[LifecycleActionRecord] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {
            ("autoscaling", "CompleteLifecycleAction"): self._complete_call,
            ("autoscaling", "RecordLifecycleActionHeartbeat"): self._heartbeat_call,
        }

    def start(self, group: str, instance_id: str, transition: str,
              warm_pool: str | None = None) -> list[LifecycleActionRecord]:
        """Put the instance in the wait state of ``transition`` for each of its hooks.

        ``warm_pool`` (e.g. ``Warmed:Stopped``): a launch into the warm pool, waiting in
        ``Warmed:Pending:Wait`` and going to that state on CONTINUE.
        """
        region, asg = _find_group(group)
        hooks = [h for h in _hooks(region, group) if h.lifecycle_transition == transition]
        now, started_at = time.monotonic(), datetime.now(UTC)
        with self._lock:
            self.expire()
            started = []
            for hook in hooks:
                timeout = int(hook.heartbeat_timeout)
                record = LifecycleActionRecord(
                    group=group,
                    hook=hook.name,
                    transition=transition,
                    instance_id=instance_id,
                    token=str(uuid.uuid4()),
                    heartbeat_timeout=timeout,
                    default_result=hook.default_result,
                    started_at=started_at,
                    warm_pool=warm_pool if transition == LAUNCHING else None,
                )
                global_deadline = now + min(100 * timeout, MAX_GLOBAL_TIMEOUT)
                self._pending.append(_Pending(record, region, now + timeout, global_deadline))
                started.append(dataclasses.replace(record))
            if started:
                state = "Pending:Wait" if transition == LAUNCHING else "Terminating:Wait"
            else:
                state = "InService" if transition == LAUNCHING else "Terminating"
            if warm_pool and transition == LAUNCHING:
                state = "Warmed:Pending:Wait" if started else warm_pool
            _set_state(asg, instance_id, state)
        return started

    def expire(self) -> None:
        """Apply the DefaultResult of every action whose timeout has elapsed."""
        now = time.monotonic()
        with self._lock:
            for item in list(self._pending):
                if item in self._pending and now >= min(item.deadline, item.global_deadline):
                    self._finish(item, item.record.default_result, "timeout")

    def time_out(self) -> None:
        """Apply every pending action's DefaultResult now, as its timeout would."""
        with self._lock:
            for item in list(self._pending):
                if item in self._pending:  # (an ABANDON closes its siblings too)
                    self._finish(item, item.record.default_result, "timeout")

    def records(self, instance_id: str | None = None) -> list[LifecycleActionRecord]:
        """Copies of every action, completed and pending, oldest first."""
        with self._lock:
            self.expire()
            every = self._done + [p.record for p in self._pending]
        every.sort(key=lambda r: r.started_at)
        return [
            dataclasses.replace(r)
            for r in every
            if instance_id is None or r.instance_id == instance_id
        ]

    def _complete_call(self, call: Call) -> None:
        result = call.params.get("LifecycleActionResult", "")
        if result not in ("CONTINUE", "ABANDON"):
            raise SimAwsError(
                "ValidationError", "Valid values for LifecycleActionResult: CONTINUE, ABANDON"
            )
        with self._lock:
            self._finish(self._match(call), result, "api")

    def _heartbeat_call(self, call: Call) -> None:
        with self._lock:
            item = self._match(call)
            item.record.heartbeats += 1
            timeout = item.record.heartbeat_timeout
            item.deadline = min(time.monotonic() + timeout, item.global_deadline)

    def _match(self, call: Call) -> _Pending:
        """The pending action a Complete/Heartbeat call names, or a ValidationError."""
        group = call.params.get("AutoScalingGroupName", "")
        hook = call.params.get("LifecycleHookName", "")
        instance_id = call.params.get("InstanceId")
        token = call.params.get("LifecycleActionToken")
        if hook not in {h.name for h in _hooks(call.region, group)}:
            raise SimAwsError(
                "ValidationError", f"No Lifecycle Hook found with name {hook} for group {group}"
            )
        if not instance_id and not token:
            raise SimAwsError(
                "ValidationError", "Either InstanceId or LifecycleActionToken must be specified"
            )
        self.expire()
        for item in self._pending:
            record = item.record
            if (
                (item.region, record.group, record.hook) == (call.region, group, hook)
                and (not instance_id or record.instance_id == instance_id)
                and (not token or record.token == token)
            ):
                return item
        which = f"token {token}" if token and not instance_id else f"instance ID {instance_id}"
        raise SimAwsError("ValidationError", f"No active Lifecycle Action found with {which}")

    def _finish(self, item: _Pending, result: str, completed_by: str) -> None:
        """Complete an action; move the instance on once none of its transition remains."""
        record = item.record
        key = (record.instance_id, record.transition)
        siblings = [
            p
            for p in self._pending
            if p is not item and (p.record.instance_id, p.record.transition) == key
        ]
        closing = [(item, completed_by)]
        if result == "ABANDON":  # ABANDON stops the instance's remaining actions too
            closing += [(p, "abandoned") for p in siblings]
            siblings = []
        now = datetime.now(UTC)
        for pending, by in closing:
            self._pending.remove(pending)
            pending.record.result, pending.record.completed_by = result, by
            pending.record.completed_at = now
            self._done.append(pending.record)
        if siblings:
            return
        if record.transition == TERMINATING:
            state = "Terminating:Proceed"
        elif result != "CONTINUE":
            state = "Terminating"
        else:
            state = record.warm_pool or "InService"
        with contextlib.suppress(KeyError):  # the group or instance may be gone by now
            _, asg = _find_group(record.group, item.region)
            _set_state(asg, record.instance_id, state)


def _backend(region: str) -> Any:
    return autoscaling_backends[DEFAULT_ACCOUNT_ID][region]


def _find_group(group: str, region: str | None = None) -> tuple[str, Any]:
    """(region, moto group) by name; any region already in use unless given."""
    regions = [region] if region else list(autoscaling_backends[DEFAULT_ACCOUNT_ID].keys())
    for name in regions:
        asg = _backend(name).autoscaling_groups.get(group)
        if asg is not None:
            return name, asg
    raise KeyError(f"no Auto Scaling group {group!r} in the simulated cloud")


def _hooks(region: str, group: str) -> list[Any]:
    return list(_backend(region).describe_lifecycle_hooks(group))


def _set_state(asg: Any, instance_id: str, state: str) -> None:
    for instance_state in asg.instance_states:
        if instance_state.instance.id == instance_id:
            instance_state.lifecycle_state = state
            return
    raise KeyError(f"instance {instance_id} is not in Auto Scaling group {asg.name}")


# --- CloudFormation resource signals (cfn-signal) ------------------------------------


@dataclasses.dataclass(frozen=True)
class Signal:
    """One ``SignalResource`` call received for an expected stack resource."""

    stack: str
    resource: str
    unique_id: str
    status: str  # SUCCESS | FAILURE


class ResourceSignals:
    """``SignalResource`` (what cfn-signal sends), which moto does not implement.

    A test declares which stack resources wait for signals with :meth:`expect`; a signal to
    anything else is the ValidationError CloudFormation answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected: set[tuple[str, str]] = set()
        self.received: list[Signal] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {("cloudformation", "SignalResource"): self._signal_call}

    def expect(self, stack: str, resource: str) -> None:
        """Let ``resource`` of ``stack`` receive signals."""
        with self._lock:
            self._expected.add((stack, resource))

    def _signal_call(self, call: Call) -> None:
        stack = call.params.get("StackName", "")
        resource = call.params.get("LogicalResourceId", "")
        status = call.params.get("Status", "")
        if status not in ("SUCCESS", "FAILURE"):
            raise SimAwsError("ValidationError", "Status must be SUCCESS or FAILURE")
        with self._lock:
            if (stack, resource) not in self._expected:
                raise SimAwsError("ValidationError", f"Stack {stack} does not exist"
                                  if stack not in {s for s, _ in self._expected} else
                                  f"Resource {resource} does not exist for stack {stack}")
            self.received.append(Signal(stack, resource, call.params.get("UniqueId", ""),
                                        status))


# --- instance health (SetInstanceHealth) -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """One ``SetInstanceHealth`` call received."""

    group: str
    instance_id: str
    status: str  # Healthy | Unhealthy
    respect_grace_period: bool


class InstanceHealth:
    """``SetInstanceHealth``: moto's instance health kept in step, and the group's reaction.

    An instance marked Unhealthy is replaced by its group: ``on_unhealthy(group, instance)``
    is called (the :class:`~agent.sim.world.World` starts its termination there).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reports: list[HealthReport] = []
        self.on_unhealthy: list[Callable[[str, str], None]] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {("autoscaling", "SetInstanceHealth"): self._health_call}

    def _health_call(self, call: Call) -> None:
        instance_id = call.params.get("InstanceId", "")
        status = call.params.get("HealthStatus", "")
        if status not in ("Healthy", "Unhealthy"):
            raise SimAwsError("ValidationError", "Valid values for HealthStatus: Healthy, "
                              "Unhealthy")
        found = _group_of(call.region, instance_id)
        if found is None:
            raise SimAwsError("ValidationError", "Instance Id not found - No managed instance "
                              f"found for instance ID: {instance_id}")
        group, instance_state = found
        instance_state.health_status = status
        respect = call.params.get("ShouldRespectGracePeriod", "true").lower() != "false"
        with self._lock:
            self.reports.append(HealthReport(group, instance_id, status, respect))
            listeners = list(self.on_unhealthy) if status == "Unhealthy" else []
        for listener in listeners:
            listener(group, instance_id)


def _group_of(region: str, instance_id: str) -> tuple[str, Any] | None:
    """(group name, moto instance state) of an instance in some group of ``region``."""
    for name, asg in _backend(region).autoscaling_groups.items():
        for instance_state in asg.instance_states:
            if instance_state.instance.id == instance_id:
                return name, instance_state
    return None


# --- request quotas ---------------------------------------------------------------------


@dataclasses.dataclass
class TokenBucket:
    """AWS's quota algorithm: ``burst`` tokens, refilled at ``rate`` per second; a call
    takes one, or is throttled when there is none."""

    burst: float
    rate: float
    tokens: float = -1.0  # full at the first call
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """One token, if there is one."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Quotas:
    """Request quotas per API: each action of a limited service has a bucket of its own."""

    def __init__(self) -> None:
        self._limits: dict[str, tuple[float, float]] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def limit(self, service: str, burst: float, rate: float) -> None:
        """Every API of ``service`` (as signed: ``monitoring`` for CloudWatch) gets a
        bucket of ``burst`` tokens refilled at ``rate`` per second."""
        self._limits[service] = (burst, rate)
        self._buckets = {k: v for k, v in self._buckets.items() if k[0] != service}

    def clear(self) -> None:
        """No quotas any more."""
        self._limits.clear()
        self._buckets.clear()

    def admit(self, service: str, action: str, now: float) -> bool:
        """Whether this call is within its API's quota (not thread-safe: hold a lock)."""
        limit = self._limits.get(service)
        if limit is None:
            return True
        bucket = self._buckets.get((service, action))
        if bucket is None:
            bucket = self._buckets[(service, action)] = TokenBucket(*limit)
        return bucket.take(now)


# --- the middleware and the server ------------------------------------------------------


@dataclasses.dataclass
class _Fault:
    action: str
    remaining: int
    code: str
    status: int
    message: str
    after: bool = False  # process the call first, then answer the error (a lost response)


class _Middleware:
    """Latency, call log, faults, interceptors and the control API in front of moto."""

    def __init__(self, app: WsgiApp, cloud: SimCloud) -> None:
        self.app = app
        self.cloud = cloud

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sim/"):
            return self._reply(start_response, *self.cloud._control(environ, path[6:]))
        call = parse_call(environ)
        if call is None:
            return self.app(environ, start_response)
        cloud = self.cloud
        pause = cloud.latency + cloud.action_latency.get(call.action, 0.0)
        if pause:
            time.sleep(pause)
        cloud.lifecycle.expire()
        if cloud._take_time_out(call.action):
            cloud.lifecycle.time_out()
        fault, after = cloud._record(call)
        if fault is not None and not after:
            return self._reply(start_response, *error_response(call.protocol, *fault, _ns(call)))
        interceptor = cloud.interceptors.get((call.service, call.action))
        if interceptor is None:
            if fault is not None:  # processed by moto, then the answer is "lost"
                list(self.app(environ, lambda *args: None))
                return self._reply(start_response,
                                   *error_response(call.protocol, *fault, _ns(call)))
            return self.app(environ, start_response)
        try:
            interceptor(call)
        except SimAwsError as exc:
            return self._reply(
                start_response, *error_response(call.protocol, exc.code, exc.message, exc.status,
                                                _ns(call))
            )
        if fault is not None:
            return self._reply(start_response, *error_response(call.protocol, *fault, _ns(call)))
        return self._reply(start_response, *empty_response(call))

    @staticmethod
    def _reply(
        start_response: StartResponse, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> list[bytes]:
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [*headers, ("Content-Length", str(len(body)))],
        )
        return [body]


def _ns(call: Call) -> str:
    """The XML namespace of a query service's answers."""
    return NAMESPACES.get(call.service, AUTOSCALING_NS) if call.protocol == "query" else ""


class _Handler(MotoRequestHandler):
    """Nagle off (or small responses stall 40 ms on delayed ACKs); no access log."""

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_request(self, *args: Any) -> None:
        pass


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, with each host's backend looked up once: moto's own lists its
    package directory (about 180 stat calls) for every request, under the lock that every
    request takes, which serialized concurrent calls as AWS does not."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self._backends: dict[str | None, Any] = {}  # host -> backend (read under self.lock)

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


class _Server(ThreadedMotoServer):
    def __init__(self, cloud: SimCloud, host: str, port: int) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self._cloud = cloud

    def _server_entry(self) -> None:
        app = _Middleware(_Dispatcher(), self._cloud)
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=_Handler
        )
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.05)  # a quick stop()


class SimCloud:
    """moto server on ``host:port`` (0 picks a free port) with lifecycle-hook semantics."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        self.latency = latency
        self.action_latency: dict[str, float] = {}  # extra seconds for one action
        self.lifecycle = LifecycleActions()
        self.signals = ResourceSignals()
        self.health = InstanceHealth()
        self.quotas = Quotas()
        self.interceptors: dict[tuple[str, str], Interceptor] = {
            **self.lifecycle.interceptors, **self.signals.interceptors,
            **self.health.interceptors}
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._faults: list[_Fault] = []
        self._time_out_before: set[str] = set()
        self._controls: dict[str, Control] = {"aws": self._aws_control}
        self._server: _Server | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> SimCloud:
        """Reset moto's (process-wide) state and serve in a daemon thread."""
        moto_api_backend.reset()
        self._server = _Server(self, self._host, self._port)
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> SimCloud:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("SimCloud is not started")
        _, port = self._server.get_host_and_port()
        return f"http://{self._host}:{port}"

    # calls and faults ------------------------------------------------------------------

    def calls(self, action: str | None = None) -> list[Call]:
        """Every AWS call received so far (of one action if given), oldest first."""
        with self._lock:
            return [c for c in self._calls if action is None or c.action == action]

    def fail_next(
        self,
        action: str,
        count: int = 1,
        code: str = "ThrottlingException",
        status: int = 400,
        message: str = "Rate exceeded",
        after: bool = False,
    ) -> None:
        """Answer the next ``count`` calls of ``action`` with this AWS error.

        ``after``: the call is processed first and only its answer is replaced (a response
        lost on the way back, as after a timeout or a 5xx from a proxy).
        """
        with self._lock:
            self._faults.append(_Fault(action, count, code, status, message, after))

    def clear_faults(self) -> None:
        """Forget every fault not yet answered."""
        with self._lock:
            self._faults.clear()
            self._time_out_before.clear()

    def time_out_before(self, action: str) -> None:
        """Let the pending lifecycle actions time out (DefaultResult) just before the next
        ``action`` call arrives: the hook expires while its caller is busy."""
        with self._lock:
            self._time_out_before.add(action)

    def _take_time_out(self, action: str) -> bool:
        with self._lock:
            if action not in self._time_out_before:
                return False
            self._time_out_before.discard(action)
            return True

    def limit(self, service: str, burst: float, rate: float) -> None:
        """A request quota for every API of ``service``: ``burst`` calls at once, ``rate``
        per second after that; calls beyond it are throttled as AWS throttles them."""
        with self._lock:
            self.quotas.limit(service, burst, rate)

    def throttled(self, action: str | None = None) -> list[Call]:
        """The calls answered with a throttling error (by a quota or an injected fault)."""
        return [c for c in self.calls(action) if c.throttled]

    def _record(self, call: Call) -> tuple[tuple[str, str, int] | None, bool]:
        """Log a call; the (code, message, status) of a fault to answer, and its ``after``.

        A call over its quota is answered as AWS throttles one, before any fault."""
        now = time.monotonic()
        with self._lock:
            answer: tuple[tuple[str, str, int] | None, bool] = (None, False)
            if not self.quotas.admit(call.service, call.action, now):
                code, status, message = THROTTLED.get(call.protocol, THROTTLED["query"])
                answer = (code, message, status), False
            else:
                for fault in self._faults:
                    if fault.action == call.action and fault.remaining > 0:
                        fault.remaining -= 1
                        answer = (fault.code, fault.message, fault.status), fault.after
                        break
            error = answer[0]
            throttled = error is not None and error[0] in THROTTLING_CODES
            self._calls.append(dataclasses.replace(call, at=now, throttled=throttled))
        return answer

    # lifecycle hooks -------------------------------------------------------------------

    def launch(self, group: str, instance_id: str,
               warm_pool: str | None = None) -> list[LifecycleActionRecord]:
        """The instance launches: ``Pending:Wait`` per launch hook, else ``InService``.

        With ``warm_pool`` (``Warmed:Stopped``...) it launches into the group's warm pool.
        """
        return self.lifecycle.start(group, instance_id, LAUNCHING, warm_pool)

    def terminate(self, group: str, instance_id: str) -> list[LifecycleActionRecord]:
        """The instance is to terminate: ``Terminating:Wait`` per terminate hook."""
        return self.lifecycle.start(group, instance_id, TERMINATING)

    def actions(self, instance_id: str | None = None) -> list[LifecycleActionRecord]:
        """Lifecycle actions, pending and completed (copies)."""
        return self.lifecycle.records(instance_id)

    def expire(self) -> None:
        """Apply the DefaultResult of timed-out lifecycle actions now."""
        self.lifecycle.expire()

    # control API -----------------------------------------------------------------------

    def add_control(self, name: str, handler: Control) -> None:
        """Serve ``/_sim/<name>``: GET calls ``handler(None)``, POST ``handler(json_body)``."""
        self._controls[name] = handler

    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` answers: lifecycle actions and call counts."""
        with self._lock:
            counts = Counter(c.action for c in self._calls)
        return {
            "actions": [_jsonable(dataclasses.asdict(r)) for r in self.actions()],
            "calls": dict(counts),
        }

    def _aws_control(self, body: dict[str, Any] | None) -> dict[str, Any]:
        """POST {"latency": s, "fail_next": {...fail_next kwargs} | [...], "expire": true,
        "time_out_before": "CompleteLifecycleAction",
        "limit": {"service": ..., "burst": n, "rate": n} | [...]}."""
        body = body or {}
        if "latency" in body:
            self.latency = float(body["latency"])
        limits = body.get("limit", [])
        for limit in [limits] if isinstance(limits, dict) else limits:
            self.limit(str(limit["service"]), float(limit["burst"]), float(limit["rate"]))
        faults = body.get("fail_next", [])
        for fault in [faults] if isinstance(faults, dict) else faults:
            self.fail_next(**fault)
        if body.get("expire"):
            self.expire()
        if "time_out_before" in body:
            self.time_out_before(str(body["time_out_before"]))
        return self.state()

    def _control(
        self, environ: dict[str, Any], name: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if name == "state" and method == "GET":
                answer = self.state()
            elif name in self._controls and method in ("GET", "POST"):
                body = None
                if method == "POST":
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                answer = self._controls[name](body)
            else:
                return 404, [("Content-Type", "application/json")], b'{"error": "not found"}'
        except (TypeError, ValueError, KeyError) as exc:
            error = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            return 400, [("Content-Type", "application/json")], error
        return 200, [("Content-Type", "application/json")], json.dumps(answer).encode()


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}
