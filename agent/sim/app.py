"""An application's health endpoint on loopback, for the readiness gate's tests and
benchmark: it answers 503 until told it is healthy, or a given sequence of statuses."""

from __future__ import annotations

import http.server
import time
from typing import Self

from agent.sim.serving import Served, ServerThread


class HealthApp(Served):
    """``GET /healthz`` (any path) answers :attr:`status`, or the next of :attr:`statuses`
    when set (a flapping application), with ``body`` as the answer's text."""

    def __init__(self, body: str = "") -> None:
        self.status = 503
        self.statuses: list[int] | None = None
        self.body = body
        self.healthy_at: float | None = None  # time.monotonic() of :meth:`healthy`
        self._serving: ServerThread | None = None

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1."""
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = app.statuses.pop(0) if app.statuses else app.status
                body = f"{app.body} {status}".encode() if app.body else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._serving = ServerThread(server, "health-app")
        return self

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._serving is not None
        return self._serving.port

    @property
    def url(self) -> str:
        """Its health check's URL."""
        return f"http://127.0.0.1:{self.port}/healthz"

    def healthy(self) -> None:
        """From now on, 200."""
        self.healthy_at = time.monotonic()
        self.status = 200

    def stop(self) -> None:
        """Stop serving."""
        if self._serving is not None:
            self._serving.stop()
            self._serving = None
