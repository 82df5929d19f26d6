"""A small typed IMDSv2 client: session tokens, retries, and the facts the boot needs.

IMDSv2 only (never a token-less IMDSv1 request). The token is cached until 60 s before it
expires and never logged; a 401 means it expired early: fetch a new one and retry. 503s,
timeouts and refused connections are retried with jittered backoff within
``max_wait_seconds``; 403 (IMDS disabled, or the response hop limit is too low for a
container) and 400 fail at once.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agent.cloud.retry import GaveUp, retry
from agent.errors import ImdsError
from agent.frozen import frozen

if TYPE_CHECKING:
    from agent.cloud.config import ImdsConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a password
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
TOKEN_MARGIN = 60.0  # renew this long before the token expires
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
HOP_LIMIT = ("the token request got no answer although the connection was made: the "
             "instance's response hop limit (http-put-response-hop-limit) is probably too low "
             "for this host, as for a container on an instance whose hop limit is 1: raise it "
             "to 2")
TAGS_PATH = "/latest/meta-data/tags/instance"
TAG_KEY = re.compile(r"[A-Za-z0-9+=._:@-]{1,128}")  # what instance metadata tags allow
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
IDENTITY_FIELDS = {  # Identity field -> identity document key
    "instance_id": "instanceId", "instance_type": "instanceType", "region": "region",
    "availability_zone": "availabilityZone", "image_id": "imageId",
    "account_id": "accountId", "architecture": "architecture", "private_ip": "privateIp",
}
REQUIRED_IDENTITY = frozenset({"instance_id", "instance_type", "region", "availability_zone"})
IDENTITY_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@frozen()
class Identity:
    """The instance identity document's facts (they never change for an instance)."""

    instance_id: str
    instance_type: str
    region: str
    availability_zone: str
    image_id: str
    account_id: str
    architecture: str
    private_ip: str


GROUP_TAG = "aws:autoscaling:groupName"


@frozen()
class Metadata:
    """What the boot's metadata phase learns: identity, tags, Auto Scaling target state."""

    identity: Identity
    tags: dict[str, str] | None  # None: instance tags are not in the metadata
    target_state: str | None  # None: not in an Auto Scaling group (as far as IMDS says)

    @classmethod
    def read(cls, imds: ImdsClient) -> Metadata:
        """Everything from IMDS, with its retries."""
        return cls(imds.identity(), imds.tags(), imds.target_lifecycle_state())

    def in_service(self) -> Metadata:
        """The same instance, put InService (a warm pool's instance, promoted)."""
        return dataclasses.replace(self, target_state="InService")

    @property
    def warm(self) -> bool:
        """A warm-pool boot: the target lifecycle state is ``Warmed:*``."""
        return (self.target_state or "").startswith("Warmed:")

    def record(self) -> dict[str, str]:
        """state.json's ``instance``."""
        ident = self.identity
        return {"instance_id": ident.instance_id, "instance_type": ident.instance_type,
                "region": ident.region, "availability_zone": ident.availability_zone,
                "image_id": ident.image_id, "account_id": ident.account_id,
                "auto_scaling_group": (self.tags or {}).get(GROUP_TAG, ""),
                "target_lifecycle_state": self.target_state or ""}

    def summary(self) -> str:
        """The phase's detail."""
        ident = self.identity
        tags = "tags off" if self.tags is None else f"{len(self.tags)} tags"
        return f"{ident.instance_id} {ident.instance_type} in {ident.availability_zone}; {tags}"


class _Transient(Exception):
    """A failure worth retrying (503, timeout, refused connection, expired token)."""


class ImdsClient:
    """Thread-safe: one keep-alive connection per thread, one shared token."""

    def __init__(
        self,
        endpoint: str = "http://169.254.169.254",
        *,
        token_ttl: int = 21600,
        timeout: float = 2.0,
        max_wait: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ImdsError(f"imds.endpoint {endpoint!r} is not an http:// URL")
        self.endpoint = endpoint
        self._host = parts.hostname
        self._port = parts.port or 80
        self._ttl = token_ttl
        self._timeout = timeout
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self.on_notice: Callable[[str], None] | None = None  # a diagnosis while retrying
        self._noticed: set[str] = set()
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self._local = threading.local()
        self._identity: Identity | None = None

    @classmethod
    def from_config(cls, cfg: ImdsConfig, *, within: float | None = None) -> ImdsClient:
        """The client ``[imds]`` describes; ``within`` caps its patience (a poll interval)."""
        if within is None:
            return cls(cfg.endpoint, token_ttl=cfg.token_ttl_seconds,
                       timeout=cfg.timeout_seconds, max_wait=cfg.max_wait_seconds)
        return cls(cfg.endpoint, token_ttl=cfg.token_ttl_seconds,
                   timeout=min(cfg.timeout_seconds, within), max_wait=within)

    # -- facts -------------------------------------------------------------------------

    def identity(self) -> Identity:
        """The identity document, fetched once (every field a string, the needed ones set)."""
        if self._identity is None:
            doc = self.get_json(IDENTITY_PATH)
            if not isinstance(doc, dict):
                raise ImdsError(f"IMDS {IDENTITY_PATH}: not a JSON object")
            fields = {}
            for name, key in IDENTITY_FIELDS.items():
                value = doc.get(key)
                if value is None and name not in REQUIRED_IDENTITY:
                    value = ""
                if not isinstance(value, str) or (name in REQUIRED_IDENTITY and not
                                                  IDENTITY_VALUE.fullmatch(value)):
                    shown = "missing" if value is None else f"{type(value).__name__} {value!r:.40}"
                    raise ImdsError(f"IMDS identity document: {key} is {shown}, not a "
                                    "valid string")
                fields[name] = value
            self._identity = Identity(**fields)
        return self._identity

    def tags(self) -> dict[str, str] | None:
        """Instance tags, or None when tags are not enabled in metadata (a 404)."""
        listing = self.get(TAGS_PATH, allow_404=True)
        if listing is None:
            return None
        keys = [k for k in _decode(listing, TAGS_PATH).splitlines() if k]
        odd = [k for k in keys if not TAG_KEY.fullmatch(k)]
        if odd:  # IMDS cannot serve such keys: instance metadata tags refuse them
            log.warning("IMDS tags: ignoring keys with characters IMDS does not serve: %s",
                        ", ".join(repr(k) for k in odd[:3]))
        return {key: self.text(f"{TAGS_PATH}/{key}") for key in keys if key not in odd}

    def target_lifecycle_state(self) -> str | None:
        """Auto Scaling's target lifecycle state (InService, Warmed:*, Terminated), if any."""
        path = "/latest/meta-data/autoscaling/target-lifecycle-state"
        raw = self.get(path, allow_404=True)
        return _decode(raw, path).strip() if raw is not None else None

    def market(self) -> str:
        """``spot`` or ``on-demand`` (instance-life-cycle; '' when IMDS does not say)."""
        path = "/latest/meta-data/instance-life-cycle"
        raw = self.get(path, allow_404=True)
        return _decode(raw, path).strip() if raw is not None else ""

    def spot_action(self) -> dict[str, Any] | None:
        """A spot interruption notice ({"action": ..., "time": ...}), or None."""
        return self._optional_json("/latest/meta-data/spot/instance-action")

    def rebalance(self) -> dict[str, Any] | None:
        """A rebalance recommendation ({"noticeTime": ...}), or None."""
        return self._optional_json("/latest/meta-data/events/recommendations/rebalance")

    def scheduled_events(self) -> list[dict[str, Any]]:
        """Scheduled maintenance events (a JSON list; [] when there are none)."""
        path = "/latest/meta-data/events/maintenance/scheduled"
        raw = self.get(path, allow_404=True)
        if raw is None or not raw.strip():
            return []
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise ImdsError(f"IMDS {path}: not JSON") from None
        if not isinstance(value, list):
            raise ImdsError(f"IMDS {path}: not a JSON list")
        return [item for item in value if isinstance(item, dict)]

    def _optional_json(self, path: str) -> dict[str, Any] | None:
        raw = self.get(path, allow_404=True)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise ImdsError(f"IMDS {path}: not JSON") from None
        return value if isinstance(value, dict) else None

    def user_data(self) -> bytes | None:
        """The instance's user-data, or None when it has none."""
        return self.get("/latest/user-data", allow_404=True)

    # -- requests ----------------------------------------------------------------------

    def text(self, path: str) -> str:
        """A path's body as text (404 is an error)."""
        body = self.get(path)
        assert body is not None
        return _decode(body, path)

    def get_json(self, path: str) -> Any:
        """A path's body parsed as JSON."""
        body = self.get(path)
        assert body is not None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ImdsError(f"IMDS {path}: not JSON") from None

    def get(self, path: str, *, allow_404: bool = False) -> bytes | None:
        """GET with a session token; retries transient failures within the budget."""

        def attempt() -> bytes | None:
            status, body = self._request("GET", path, {TOKEN_HEADER: self._get_token()})
            if status == 200:
                return body
            if status == 404 and allow_404:
                return None
            if status == 401:
                self._drop_token()
                raise _Transient("401: session token rejected (expired)")
            self._raise_for(status, path)
            raise AssertionError("unreachable")

        return self._retrying(attempt, path)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _get_token(self) -> str:
        with self._token_lock:
            now = self._clock()
            if self._token is None or now >= self._token_expires:
                status, body = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(self._ttl)})
                if status != 200:
                    self._raise_for(status, TOKEN_PATH)
                token = _decode(body, TOKEN_PATH).strip()
                if not token or not (token.isascii() and token.isprintable()):
                    raise ImdsError(f"IMDS {TOKEN_PATH}: the token is not printable ASCII")
                self._token = token
                margin = TOKEN_MARGIN if self._ttl > 2 * TOKEN_MARGIN else self._ttl / 2
                self._token_expires = now + self._ttl - margin
                log.debug("IMDS session token obtained (ttl %d s)", self._ttl)
            return self._token

    def _notice(self, text: str) -> None:
        """Say once what a symptom most likely means (logged, and to ``on_notice``)."""
        if text in self._noticed:
            return
        self._noticed.add(text)
        log.warning("IMDS: %s", text)
        if self.on_notice is not None:
            self.on_notice(text)

    def _drop_token(self) -> None:
        with self._token_lock:
            self._token = None

    def _retrying(self, attempt: Callable[[], T], path: str) -> T:
        try:
            return retry(
                attempt,
                transient=lambda exc: isinstance(exc, _Transient),
                budget=self._max_wait,
                base=0.05,
                cap=2.0,
                on_retry=lambda exc, n, pause: log.info(
                    "IMDS %s: %s; retry %d in %.2f s", path, exc, n, pause
                ),
                clock=self._clock,
                sleep=self._sleep,
            )
        except GaveUp as exc:
            raise ImdsError(
                f"IMDS at {self.endpoint} unavailable after {exc.waited:.1f} s "
                f"({exc.attempts} attempts): {exc.last}"
            ) from None

    def _raise_for(self, status: int, path: str) -> None:
        if status in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status}")
        if status == 403:
            raise ImdsError(
                f"IMDS refused {path} (403): the metadata service is disabled for this instance "
                "(its http-endpoint), or the request carried X-Forwarded-For (a proxy)"
            )
        if status == 400:
            raise ImdsError(f"IMDS rejected {path} (400 bad request)")
        if status == 404:
            raise ImdsError(f"IMDS has no {path} (404)")
        raise ImdsError(f"IMDS {path}: unexpected HTTP {status}")

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        connected = False
        try:
            if conn.sock is None:
                conn.connect()
            connected = True
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            if connected and path == TOKEN_PATH and _describe(exc) == "timed out":
                self._notice(HOP_LIMIT)
                raise _Transient(f"timed out after connecting ({HOP_LIMIT})") from None
            raise _Transient(_describe(exc)) from None
        if response.will_close:
            conn.close()
            self._local.conn = None
        return response.status, body


def _decode(body: bytes, path: str) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise ImdsError(f"IMDS {path}: not UTF-8 text") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
