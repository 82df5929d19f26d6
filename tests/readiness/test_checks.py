"""The readiness checks, one attempt each against real things: an HTTP server and a TCP
listener on loopback, commands as real process groups; what each says it saw."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.readiness import checks
from agent.readiness.config import ReadinessCheck


def check(**kw: Any) -> ReadinessCheck:
    return ReadinessCheck(**kw)


def free_port() -> int:
    """A loopback port nothing listens on (bound, never listened, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(("kw", "address"), [
    ({"http": "http://127.0.0.1/healthz"}, ("127.0.0.1", 80)),
    ({"http": "https://localhost:8443/"}, ("localhost", 8443)),
    ({"http": "https://[::1]/"}, ("::1", 443)),
    ({"tcp": "127.0.0.1:5432"}, ("127.0.0.1", 5432)),
    ({"tcp": "[::1]:6379"}, ("::1", 6379)),
])
def test_the_address_a_network_check_connects_to(kw: dict[str, str],
                                                 address: tuple[str, int]) -> None:
    assert checks.host_port(check(**kw)) == address


def test_a_check_reaches_this_instance_only() -> None:
    assert checks.local_problem("localhost") == ""
    assert checks.local_problem("127.0.0.53") == ""
    assert checks.local_problem("::1") == ""
    assert checks.local_problem("192.0.2.10") == (  # TEST-NET-1: no machine holds it
        "192.0.2.10 is not an address of this instance (checks reach it only)")


def test_a_refused_connection_is_said_plainly() -> None:
    assert checks.run(check(tcp=f"127.0.0.1:{free_port()}"), 5) == (False, "connection refused")
    assert checks.run(check(http=f"http://127.0.0.1:{free_port()}/"), 5) == (
        False, "connection refused")


class Answer(http.server.BaseHTTPRequestHandler):
    """Status from the path (``/503``); ``/slow`` never answers in time; a body that must
    never be read or repeated."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("User-Agent")))  # type: ignore[attr-defined]
        if self.path == "/slow":
            time.sleep(1.5)
        status = int(self.path.strip("/").split("?")[0] or 200) if self.path != "/slow" else 200
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", "/200")
        self.end_headers()
        self.wfile.write(b"\x1b[31msecret body")

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.integration
def test_http_compares_the_status_and_follows_no_redirect(
        server: http.server.ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert checks.run(check(http=f"{url}/204?deep=1"), 5) == (True, "204")
    assert checks.run(check(http=f"{url}/503"), 5) == (False, "503")
    assert checks.run(check(http=f"{url}/302"), 5) == (False, "302")  # not followed
    assert checks.run(check(http=f"{url}/302", expect_status=[302]), 5) == (True, "302")
    assert checks.run(check(http=f"{url}/200", expect_status=[204]), 5) == (False, "200")
    assert server.seen[0] == ("/204?deep=1", checks.USER_AGENT)  # type: ignore[attr-defined]
    assert len(server.seen) == 5  # type: ignore[attr-defined]


@pytest.mark.integration
def test_an_attempt_ends_within_its_budget(server: http.server.ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/slow"
    started = time.monotonic()
    assert checks.run(check(http=url, timeout_seconds=10), 0.3) == (
        False, "no answer within 0.3 s")
    assert time.monotonic() - started < 1.0


@pytest.mark.integration
def test_tcp_is_a_connection_accepted() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert checks.run(check(tcp=f"127.0.0.1:{port}"), 5) == (True, "connected")


@pytest.mark.integration
def test_a_command_is_its_exit_code_and_leaves_nothing_running(tmp_path: Path) -> None:
    assert checks.run(check(command=["/bin/true"]), 5) == (True, "exit 0")
    assert checks.run(check(command=["/bin/sh", "-c", "echo secret; exit 3"]), 5) == (
        False, "exit 3")
    assert checks.run(check(command=["/bin/sh", "-c", "kill -TERM $$"]), 5) == (
        False, "killed by SIGTERM")
    assert checks.run(check(command=[str(tmp_path / "absent")]), 5) == (
        False, "cannot run: No such file or directory")
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    passed, saw = checks.run(check(command=["/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file};"
                                            " wait"], timeout_seconds=0.5), 10)
    assert (passed, saw) == (False, "timed out after 0.5 s")
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    for _ in range(100):  # the whole group was killed: the forked sleep too
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the command's child survived its attempt")
