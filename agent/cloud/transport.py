"""The HTTP exchange of each AWS attempt, bounded as a whole by its deadline.

botocore's own timeouts bound each socket operation, so an answer dripped a byte at a time
never ends. The agent therefore sends every attempt itself, from botocore's documented
``before-send`` event (a handler that returns an answer replaces botocore's sending; botocore
parses it as its own), with the standard library's HTTP client: the connection is made within
the connect timeout, and every read of the answer (status line, headers, body) and every
write of the request within what is left of the attempt's deadline, checked before each
socket operation. No thread is involved: a read that would pass the deadline is cut short by
the socket's own timeout, and the connection is closed. Failures are botocore's own
exceptions (:class:`~botocore.exceptions.ReadTimeoutError` and its kin), so the retry policy
sees what it always saw.

Connections are kept alive per endpoint and reused across threads; the environment's
``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` are honoured (an ``http://`` proxy: a CONNECT
tunnel for HTTPS), TLS verifies against botocore's CA bundle (or ``AWS_CA_BUNDLE``).
"""

from __future__ import annotations

import base64
import http.client
import io
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

MAX_IDLE = 16  # idle keep-alive connections kept per endpoint


class _Late(TimeoutError):
    """The attempt's deadline passed."""


class _Bounded:
    """A connected socket whose every read and write ends by :attr:`deadline`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = 0.0
        self._readers = 0  # answers still reading (http.client closes the connection first)
        self._closed = False

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Late("the answer did not end in time")
        return left

    def sendall(self, data: Any) -> None:
        """Write all of ``data`` before the deadline."""
        self.sock.settimeout(self._left())
        self.sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        """One read, ended by the deadline at the latest."""
        self.sock.settimeout(self._left())
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        """The answer's reader (http.client reads the status, headers and body through it)."""
        self._readers += 1
        return io.BufferedReader(_Reader(self))

    def dropped(self) -> bool:
        """An idle connection the server closed (or wrote to): not to be reused."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        """Close the socket, once no answer is reading from it any more."""
        self._closed = True
        if self._readers == 0:
            self.sock.close()

    def reader_closed(self) -> None:
        """An answer's reader is closed (the socket closes now if it was closed meanwhile)."""
        self._readers -= 1
        if self._closed and self._readers == 0:
            self.sock.close()


class _Reader(io.RawIOBase):
    """The raw stream under http.client's buffered reader: each read bounded by the deadline."""

    def __init__(self, bounded: _Bounded) -> None:
        super().__init__()
        self._bounded = bounded

    def readable(self) -> bool:
        """Yes."""
        return True

    def readinto(self, buffer: Any) -> int:
        """One read from the socket."""
        return self._bounded.recv_into(buffer)

    def close(self) -> None:
        """Closed: the socket may close."""
        if not self.closed:
            self._bounded.reader_closed()
        super().close()


class _HTTP(http.client.HTTPConnection):
    """http.client's connection, its socket bounded once connected."""

    bounded: _Bounded | None = None

    def connect(self) -> None:
        """Connect (within ``timeout``), then bound the socket."""
        super().connect()
        self.bounded = _Bounded(self.sock)
        self.sock = self.bounded


class _HTTPS(http.client.HTTPSConnection):
    """The same over TLS (through the proxy's tunnel, if any)."""

    bounded: _Bounded | None = None

    def connect(self) -> None:
        """Connect and shake hands (within ``timeout`` each), then bound the socket."""
        super().connect()
        self.bounded = _Bounded(self.sock)
        self.sock = self.bounded


class _Answer:
    """An answer's body, read already, as botocore's ``AWSResponse.raw`` serves it."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        """The body, in one piece."""
        yield self._body


class Transport:
    """Sends botocore's prepared requests, each exchange ended by its deadline."""

    def __init__(self, ca_bundle: Callable[[], str | None] = lambda: None) -> None:
        self._ca_bundle = ca_bundle  # asked at the first HTTPS connection
        self._context: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int, str], list[_HTTP | _HTTPS]] = {}
        self._lock = threading.Lock()

    def send(self, request: AWSPreparedRequest, *, connect_timeout: float,
             read_timeout: float, deadline: float) -> AWSResponse:
        """Send ``request``; its answer, read whole by ``deadline`` (monotonic) at the latest.

        Connecting waits at most ``connect_timeout``; the answer (after the request is
        written) at most ``read_timeout``; neither beyond ``deadline``.
        """
        url = urllib.parse.urlsplit(request.url)
        scheme, host = url.scheme, url.hostname or ""
        port = url.port or (443 if scheme == "https" else 80)
        proxy = _proxy_for(scheme, host)
        key = (scheme, host, port, proxy)
        conn = self._take(key)
        if conn is None:
            conn = self._connect(key, request.url, min(connect_timeout,
                                                       deadline - time.monotonic()))
        bounded = conn.bounded
        assert bounded is not None
        bounded.deadline = min(deadline, time.monotonic() + read_timeout)
        target = request.url if proxy and scheme == "http" else (
            urllib.parse.urlunsplit(("", "", url.path or "/", url.query, "")))
        body = request.body
        if body is not None and not isinstance(body, str | bytes | bytearray):
            body = body.read()  # a file-like body (not one of the agent's calls)
        headers = dict(request.headers.items())
        if proxy and scheme == "http":  # (an https endpoint's tunnel carries it instead)
            headers.update(_proxy_auth(urllib.parse.urlsplit(proxy)))
        try:
            conn.request(request.method or "GET", target, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeoutError(endpoint_url=request.url, error=exc) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ConnectionClosedError(endpoint_url=request.url, error=exc,
                                        request=request) from None
        if response.will_close:
            conn.close()
        else:
            self._keep(key, conn)
        return AWSResponse(request.url, response.status,
                           HTTPHeaders.from_pairs(response.getheaders()), _Answer(content))

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def _take(self, key: tuple[str, str, int, str]) -> _HTTP | _HTTPS | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or (conn.sock is not None and conn.bounded is not None
                                and not conn.bounded.dropped()):
                return conn
            conn.close()

    def _keep(self, key: tuple[str, str, int, str], conn: _HTTP | _HTTPS) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, key: tuple[str, str, int, str], url: str,
                 timeout: float) -> _HTTP | _HTTPS:
        scheme, host, port, proxy = key
        if timeout <= 0:
            raise ConnectTimeoutError(endpoint_url=url, error=_Late("no time left"))
        conn: _HTTP | _HTTPS
        via = urllib.parse.urlsplit(proxy) if proxy else None
        where = (via.hostname or "", via.port or 80) if via is not None else (host, port)
        if scheme == "https":
            conn = _HTTPS(*where, timeout=timeout, context=self._tls())
            if via is not None:
                conn.set_tunnel(host, port, headers=_proxy_auth(via))
        else:
            conn = _HTTP(*where, timeout=timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise SSLError(endpoint_url=url, error=exc) from None
        except TimeoutError as exc:
            conn.close()
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from None
        except OSError as exc:
            conn.close()
            if via is not None:
                raise ProxyConnectionError(proxy_url=f"{via.hostname}:{via.port or 80}",
                                           error=exc) from None
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:  # loading the CA bundle costs a few ms: once
            self._context = ssl.create_default_context(cafile=self._ca_bundle())
        return self._context


def _proxy_for(scheme: str, host: str) -> str:
    """The environment's ``http://`` proxy for this endpoint, or ''."""
    proxy = urllib.request.getproxies_environment().get(scheme, "")
    if not proxy or urllib.request.proxy_bypass(host):
        return ""
    return proxy if "://" in proxy else f"http://{proxy}"


def _proxy_auth(via: urllib.parse.SplitResult) -> dict[str, str]:
    """``Proxy-Authorization`` for a proxy URL with credentials."""
    if via.username is None:
        return {}
    user = urllib.parse.unquote(via.username)
    password = urllib.parse.unquote(via.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}
