"""How the simulated cloud's servers run (:mod:`agent.sim.serving`): a daemon thread each,
started and stopped the same way, a context manager, and a port free again once stopped."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from typing import Self

import pytest

from agent.sim.serving import Served, ServerThread


class Recorder(Served):
    """A Served that only records what is done to it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self) -> Self:
        self.events.append("start")
        return self

    def stop(self) -> None:
        self.events.append("stop")


def test_with_starts_and_stops_even_when_the_block_fails() -> None:
    served = Recorder()
    with served as inside:
        assert inside is served and served.events == ["start"]
    assert served.events == ["start", "stop"]
    with pytest.raises(RuntimeError, match="boom"), served:
        raise RuntimeError("boom")
    assert served.events == ["start", "stop", "start", "stop"]


def test_a_served_thing_must_say_how_it_starts() -> None:
    with pytest.raises(NotImplementedError):
        Served().start()
    with pytest.raises(NotImplementedError):
        Served().stop()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


def serve(port: int = 0) -> ServerThread:
    return ServerThread(http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello), "hello")


def get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.integration
def test_a_server_thread_serves_on_the_port_it_picked() -> None:
    serving = serve()
    try:
        assert serving.port > 0
        assert get(serving.port) == b"hello"
        (thread,) = [t for t in threading.enumerate() if t.name == "hello"]
        assert thread.daemon
    finally:
        serving.stop()


@pytest.mark.integration
def test_stop_is_quick_closes_the_port_and_ends_the_thread() -> None:
    serving = serve()
    port = serving.port
    get(port)
    started = time.monotonic()
    serving.stop()
    assert time.monotonic() - started < 1
    assert not [t for t in threading.enumerate() if t.name == "hello"]
    with pytest.raises(ConnectionRefusedError):
        get(port)


@pytest.mark.integration
def test_a_stopped_server_s_port_serves_again_at_once() -> None:
    """A fixed port (``--aws 127.0.0.1:4566``) is free again for the next server right after
    ``stop``, although its last connections are still closing."""
    first = serve()
    port = first.port
    for _ in range(3):
        get(port)
    first.stop()
    again = serve(port)
    try:
        assert get(port) == b"hello"
    finally:
        again.stop()
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # nothing holds it any more
    finally:
        probe.close()
