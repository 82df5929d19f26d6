"""A fault proxy in front of the simulated cloud: answers cut short, garbled or dripped.

A broken middlebox, as the agent meets one: a small threaded HTTP proxy on loopback that
forwards each AWS call to the moto server (:class:`~agent.sim.cloud.SimCloud`) and does to
its answer what :meth:`FaultProxy.set` chose for that operation (``AssumeRole``,
``GetSecretValue``...): pass it through, cut its body after N bytes (the answer is whole as
far as HTTP goes, its document is not), replace its body (empty, HTML, ``{}``), or drip the
whole answer (status line, headers, body) one byte per interval. Point the agent at
:attr:`FaultProxy.endpoint_url` (``aws.endpoint_url``)::

    with World() as world, FaultProxy(world.cloud.endpoint_url) as proxy:
        proxy.set("AssumeRole", Fault.truncate(300))
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailers", "transfer-encoding", "upgrade", "content-length"})
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>gateway</body></html>\n"


@dataclasses.dataclass(frozen=True)
class Fault:
    """What happens to an answer: ``kind`` ``pass`` | ``truncate`` | ``replace`` | ``drip``."""

    kind: str = "pass"
    keep: int = 0  # truncate: the body's first bytes kept (< 0: all but the last -keep)
    body: bytes = b""  # replace: the new body
    content_type: str = ""  # replace: the new Content-Type ('' keeps the answer's)
    interval: float = 1.0  # drip: seconds between bytes

    @classmethod
    def truncate(cls, keep: int) -> Fault:
        """The body cut after ``keep`` bytes (Content-Length says so: a short document)."""
        return cls("truncate", keep=keep)

    @classmethod
    def replace(cls, body: bytes, content_type: str = "") -> Fault:
        """The body replaced (the status and the other headers kept)."""
        return cls("replace", body=body, content_type=content_type)

    @classmethod
    def empty(cls) -> Fault:
        """An empty body."""
        return cls.replace(b"")

    @classmethod
    def html(cls) -> Fault:
        """A middlebox's HTML page."""
        return cls.replace(HTML, "text/html")

    @classmethod
    def empty_json(cls) -> Fault:
        """``{}``."""
        return cls.replace(b"{}")

    @classmethod
    def drip(cls, interval: float = 1.0) -> Fault:
        """The whole answer, one byte every ``interval`` seconds."""
        return cls("drip", interval=interval)


def action_of(headers: Any, body: bytes) -> str:
    """The AWS operation of a request: ``X-Amz-Target``'s, else the query's ``Action``."""
    target = headers.get("X-Amz-Target")
    if target:
        return str(target).rpartition(".")[2]
    form = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return form.get("Action", [""])[0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        """Forward, then answer as the operation's fault says."""
        self._forward()

    def do_GET(self) -> None:
        """Forward, then answer as the operation's fault says."""
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.server.proxy
        action = action_of(self.headers, body)
        fault = proxy.take(action)
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            status, reason, content = answer.status, answer.reason, answer.read()
            answered = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP]
        finally:
            upstream.close()
        proxy.answered(action, content)
        if fault.kind == "truncate":
            content = content[:fault.keep]
        elif fault.kind == "replace":
            content = fault.body
            if fault.content_type:
                answered = [(k, v) for k, v in answered if k.lower() != "content-type"]
                answered.append(("Content-Type", fault.content_type))
        closing = fault.kind != "pass"
        answered += [("Content-Length", str(len(content))),
                     ("Connection", "close" if closing else "keep-alive")]
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in answered) + "\r\n"
        raw = head.encode("latin-1") + content
        self.close_connection = closing
        if fault.kind == "drip":
            self._drip(raw, fault.interval)
        else:
            self.wfile.write(raw)

    def _drip(self, raw: bytes, interval: float) -> None:
        """One byte at a time, until the answer ends, the client leaves or the proxy stops."""
        for index in range(len(raw)):
            try:
                self.wfile.write(raw[index:index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            if self.server.stopping.wait(interval):
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultProxy, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.proxy = proxy
        self.stopping = threading.Event()


class FaultProxy:
    """The proxy: faults chosen per AWS operation, every call seen recorded."""

    PASS: ClassVar[Fault] = Fault()

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._host, self._port = host, port
        self._faults: dict[str, tuple[Fault, int | None]] = {}
        self._lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []  # (operation, fault kind), in order
        self.answers: list[tuple[str, bytes]] = []  # (operation, moto's body), in order
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def set(self, action: str, fault: Fault, count: int | None = None) -> None:
        """Answer ``action`` (e.g. ``GetSecretValue``) so: the next ``count`` calls, or all."""
        with self._lock:
            self._faults[action] = (fault, count)

    def clear(self) -> None:
        """Every answer passes through again."""
        with self._lock:
            self._faults.clear()

    def take(self, action: str) -> Fault:
        """The fault for one call of ``action`` (counted)."""
        with self._lock:
            fault, count = self._faults.get(action, (self.PASS, None))
            if count is not None:
                if count <= 1:
                    self._faults.pop(action, None)
                else:
                    self._faults[action] = (fault, count - 1)
            self.seen.append((action, fault.kind))
            return fault

    def answered(self, action: str, body: bytes) -> None:
        """Record moto's own answer to a call (before the fault)."""
        with self._lock:
            self.answers.append((action, body))

    def calls(self, action: str) -> list[str]:
        """The fault kind of each call of ``action`` so far."""
        with self._lock:
            return [kind for seen, kind in self.seen if seen == action]

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the running proxy."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{self._host}:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        self._server = _Server(self, (self._host, self._port))
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (dripping answers end too)."""
        if self._server is not None:
            self._server.stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

