"""The HTTP exchange of each AWS attempt: ended by its deadline, connections kept alive
and dropped ones not reused, proxies from the environment, botocore's exceptions; against
real servers on loopback."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from agent.cloud import transport
from agent.cloud.transport import Transport


@pytest.fixture
def dripping() -> Iterator[str]:
    """A server that answers one byte every 0.2 s (the status line included), forever."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                while not stop.wait(0.2):
                    try:
                        conn.sendall(b"H")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.integration
def test_a_dripped_answer_ends_at_the_deadline(dripping: str) -> None:
    request = AWSRequest("POST", dripping, data=b"{}").prepare()
    threads = set(threading.enumerate())
    start = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        Transport().send(request, connect_timeout=1, read_timeout=15,
                         deadline=start + 1.0)
    assert time.monotonic() - start < 3  # (1 s, and slack for a loaded machine)
    assert set(threading.enumerate()) <= threads  # no reader left behind




class Echo(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: answers with the client's port and the request line."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        said = f"{self.client_address[1]} {self.requestline} {len(body)} " \
               f"{self.headers.get('Proxy-Authorization', '')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(said)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(said)

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def echo() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def post(sender: Transport, url: str, body: bytes = b"{}") -> list[str]:
    request = AWSRequest("POST", url, data=body).prepare()
    answer = sender.send(request, connect_timeout=2, read_timeout=5,
                         deadline=time.monotonic() + 5)
    assert answer.status_code == 200
    return answer.content.decode().split(" ", 4)


@pytest.mark.integration
def test_a_connection_is_kept_alive_and_reused(
        echo: http.server.ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{echo.server_address[1]}"
    sender = Transport()
    first = post(sender, f"{url}/a?x=1", b"x" * 1000)
    assert first[1:4] == ["POST", "/a?x=1", "HTTP/1.1"] and first[4].startswith("1000")
    assert post(sender, f"{url}/b")[0] == first[0]  # the same client port: the same connection
    closing = post(sender, f"{url}/close")
    assert closing[0] == first[0]
    assert post(sender, f"{url}/c")[0] != first[0]  # the server said close: a new one
    sender.close()


@pytest.mark.integration
def test_an_idle_connection_the_server_dropped_is_not_reused(
        echo: http.server.ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{echo.server_address[1]}"
    sender = Transport()
    first = post(sender, f"{url}/a")
    (idle,) = next(iter(sender._idle.values()))
    assert idle.bounded is not None
    idle.bounded.sock.shutdown(socket.SHUT_RD)  # as if the server had closed it: readable
    assert post(sender, f"{url}/b")[0] != first[0]


def test_connecting_fails_as_botocore_says() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"  # bound, nobody listening
        request = AWSRequest("POST", url, data=b"{}").prepare()
        with pytest.raises(EndpointConnectionError):
            Transport().send(request, connect_timeout=2, read_timeout=2,
                             deadline=time.monotonic() + 2)
        with pytest.raises(ConnectTimeoutError):  # the deadline passed before connecting
            Transport().send(request, connect_timeout=2, read_timeout=2,
                             deadline=time.monotonic() - 1)


@pytest.mark.integration
def test_an_http_proxy_gets_the_absolute_url(
        echo: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = echo.server_address[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    said = post(Transport(), "http://sts.example.internal/path?q=1")
    assert said[1:3] == ["POST", "http://sts.example.internal/path?q=1"]


@pytest.mark.integration
def test_an_http_proxy_with_credentials_is_told_them(
        echo: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = echo.server_address[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://us%40r:p%3Ass@127.0.0.1:{port}")
    said = post(Transport(), "http://sts.example.internal/path")
    assert said[4].split(" ", 1)[1].strip() == transport._proxy_auth(
        urllib.parse.urlsplit(f"http://us%40r:p%3Ass@127.0.0.1:{port}"))["Proxy-Authorization"]


def test_the_proxy_of_an_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert transport._proxy_for("https", "sts.amazonaws.com") == ""
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "169.254.169.254,.internal")
    assert transport._proxy_for("https", "sts.amazonaws.com") == "http://proxy.internal:3128"
    assert transport._proxy_for("https", "vpce.internal") == ""
    assert transport._proxy_for("http", "sts.amazonaws.com") == ""  # no HTTP_PROXY
    assert transport._proxy_auth(urllib.parse.urlsplit("http://proxy:3128")) == {}
    assert transport._proxy_auth(urllib.parse.urlsplit("http://us%40r:p%3Ass@proxy:3128")) == {
        "Proxy-Authorization": "Basic " + base64.b64encode(b"us@r:p:ss").decode()}
