"""moto in server mode, fronted by a WSGI middleware that adds what moto lacks.

The middleware records every AWS call, adds latency, enforces request quotas (a token
bucket per API, throttled calls answered as AWS answers them: :mod:`agent.sim.quotas`),
injects errors in the wire format of each protocol (:mod:`agent.sim.wire`), answers a small
control API under ``/_sim/``, and hands chosen actions to interceptors: Auto Scaling
lifecycle hooks and instance health (:mod:`agent.sim.autoscaling`), CloudFormation
``SignalResource`` (:mod:`agent.sim.signals`), and any other through
:attr:`SimCloud.interceptors`.

moto keeps its state per process: one :class:`SimCloud` at a time, reset by ``start()``.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from agent.sim.autoscaling import (
    LAUNCHING,
    TERMINATING,
    InstanceHealth,
    LifecycleActionRecord,
    LifecycleActions,
)
from agent.sim.quotas import Quotas
from agent.sim.serving import Served, ServerThread
from agent.sim.signals import ResourceSignals
from agent.sim.wire import (
    THROTTLED,
    THROTTLING_CODES,
    Call,
    Interceptor,
    SimAwsError,
    empty_response,
    error_response,
    namespace,
    parse_call,
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Control = Callable[[dict[str, Any] | None], dict[str, Any]]


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
            return self._reply(start_response,
                               *error_response(call.protocol, *fault, namespace(call)))
        interceptor = cloud.interceptors.get((call.service, call.action))
        if interceptor is None:
            if fault is not None:  # processed by moto, then the answer is "lost"
                list(self.app(environ, lambda *args: None))
                return self._reply(start_response,
                                   *error_response(call.protocol, *fault, namespace(call)))
            return self.app(environ, start_response)
        try:
            interceptor(call)
        except SimAwsError as exc:
            return self._reply(
                start_response, *error_response(call.protocol, exc.code, exc.message, exc.status,
                                                namespace(call))
            )
        if fault is not None:
            return self._reply(start_response,
                               *error_response(call.protocol, *fault, namespace(call)))
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


class SimCloud(Served):
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
        self._serving: ServerThread | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> SimCloud:
        """Serve in a daemon thread, with moto's (process-wide) state reset."""
        server = make_server(self._host, self._port, _Middleware(_Dispatcher(), self),
                             threaded=True, request_handler=_Handler)
        self._serving = ServerThread(server, "aws-sim")
        reset = urllib.request.Request(  # noqa: S310 - moto's own API, on our loopback server
            f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=30) as answer:  # noqa: S310
            answer.read()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._serving is None:
            raise RuntimeError("SimCloud is not started")
        return f"http://{self._host}:{self._serving.port}"

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
