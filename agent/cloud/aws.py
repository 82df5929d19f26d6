"""AWS API access: one botocore session, only the clients a boot needs, one retry policy.

Clients come from a single botocore session (not boto3), created lazily and once each.
botocore's own retries are off: :func:`agent.cloud.retry.retry` retries throttling and transient
errors with jittered backoff within ``aws.max_wait_seconds`` per call, and permanent errors
(AccessDenied, ResourceNotFound, validation) fail at once. Credentials come from the default
chain, whose instance-role step is answered by the agent's own IMDS client (IMDSv2, its
token handling and retries) instead of a second client inside botocore.

Politeness at fleet scale: a throttled answer means the quota is spent, most likely by the
fleet this instance belongs to, so it is retried more patiently than a blip (a 5xx, a lost
connection), Auto Scaling (small quotas shared by the whole account) most patiently; and
every client has botocore's adaptive client-side rate limiter (``mode = "adaptive"``, which
still acts with one attempt per call: it watches every answer), so that after a throttle
the client's own calls are paced. Every attempt is counted by API and outcome
(:meth:`Aws.request_counts`, for the telemetry), and sent by :mod:`agent.cloud.transport`, which
bounds the whole exchange (connect, request, every byte of the answer) by the call's budget.
An SDK failure is told by :func:`describe` alone: its code or kind, never an answer's body.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore import handlers
from botocore.config import Config as BotoConfig
from botocore.credentials import CredentialProvider, CredentialResolver
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path
from botocore.loaders import Loader
from botocore.parsers import ResponseParserError

from agent import DATA
from agent.cloud import service_models
from agent.cloud.retry import GaveUp, Pace, retry
from agent.cloud.transport import Transport
from agent.errors import AgentError, AwsError, ImdsError
from agent.frozen import frozen

if TYPE_CHECKING:
    from agent.cloud.config import AwsConfig
    from agent.cloud.imds import ImdsClient

log = logging.getLogger(__name__)

Handler = tuple[str, Callable[..., Any]]  # a botocore event's name, and a handler of it

# A request refused for the rate: the quota is spent (retried, patiently).
THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "RequestThrottled", "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})
# A failure on the service's side, whatever the HTTP status says (retried).
SERVER_ERRORS = frozenset({
    "InternalFailure", "ServiceUnavailable", "InternalError", "InternalServiceError",
    "InternalServiceErrorException",
})
# The caller lacks a permission: AccessDenied (query and XML services), AccessDeniedException
# (JSON services), UnauthorizedOperation (EC2). Never retried.
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
_NETWORK = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)
CONNECT_TIMEOUT = 5.0  # seconds to connect, at most (and never beyond the call's budget)
READ_TIMEOUT = 15.0  # seconds one attempt waits for its answer before it is tried again

# Backoff (base, cap in seconds; full jitter) after a transient error, and after a throttle.
TRANSIENT_BACKOFF = (0.1, 5.0)
THROTTLED_BACKOFF = {"autoscaling": (2.0, 60.0)}
THROTTLED_DEFAULT = (0.5, 20.0)


def pace(service: str) -> Pace:
    """The backoff of ``service``'s calls after each kind of error."""
    throttled = THROTTLED_BACKOFF.get(service, THROTTLED_DEFAULT)
    return lambda exc: throttled if is_throttling(exc) else TRANSIENT_BACKOFF


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and network failures are worth retrying; the rest is permanent."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLING or code in SERVER_ERRORS or status >= 500
    return isinstance(exc, _NETWORK)


def is_throttling(exc: BaseException) -> bool:
    """A throttling error: the request was refused, not processed."""
    return error_code(exc) in THROTTLING


def is_access_denied(exc: BaseException) -> bool:
    """The caller (the instance role, or the role assumed) lacks a permission."""
    return error_code(exc) in ACCESS_DENIED


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def describe(exc: BaseException) -> str:
    """One line for an SDK failure: its code or kind, never an answer's body nor ``str()``.

    The one describer of AWS failures (callers name the operation and what it concerns). A
    ClientError keeps AWS's own message only when it looks like one (short, one line, no
    markup): botocore puts an unparsable error body there verbatim. Any other exception is
    described by its kind alone (botocore's ResponseParserError embeds the whole answer).
    """
    if isinstance(exc, AgentError):
        return exc.message
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = _word(error.get("Code")) or f"HTTP {status}"
        message = _aws_message(error.get("Message"))
        return f"{code}: {message}" if message else code
    if isinstance(exc, ParamValidationError):  # about the request we made, not an answer
        return " ".join(str(exc).split())[:300]
    for kind, text in _KINDS:
        if isinstance(exc, kind):
            url = getattr(exc, "kwargs", {}).get("endpoint_url", "")
            return text.format(url=url if isinstance(url, str) and url.isprintable() else "")
    return f"{type(exc).__name__} (details withheld: they may quote the answer)"


_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (NoCredentialsError, "no AWS credentials (instance profile, environment or config)"),
    (ConnectTimeoutError, "connect timed out ({url})"),
    (ReadTimeoutError, "no complete answer in time ({url})"),
    (ConnectionClosedError, "the connection closed before the answer was complete ({url})"),
    (ProxyConnectionError, "cannot connect to the proxy"),
    (SSLError, "TLS failed with {url} (certificate validation or handshake)"),
    (EndpointConnectionError, "cannot connect to {url}"),
    (ResponseParserError, "an answer that cannot be parsed (cut short, or not the service's "
                          "format)"),
    (CredentialRetrievalError, "credentials could not be retrieved"),
    (PartialCredentialsError, "partial AWS credentials"),
)
_MESSAGE = re.compile(r"[^<>{}\x00-\x1f\x7f]{1,300}")


def _word(value: Any) -> str:
    """An error code as AWS writes one (letters, digits, ``.:_-``), else ''."""
    text = str(value or "")
    return text if re.fullmatch(r"[A-Za-z0-9.:_-]{1,100}", text) else ""


def _aws_message(value: Any) -> str:
    """AWS's error message when it looks like one (short, one line, no markup), else ''."""
    text = " ".join(str(value or "").split())
    return text if _MESSAGE.fullmatch(text) else ""


def builtin_handlers(skipped: frozenset[str]) -> list[tuple[Any, ...]]:
    """botocore's builtin handlers in botocore's order, minus those of services and
    documentation no client of ours uses (named at build time for this botocore:
    ``models.skipped_handlers``; with another botocore, none is skipped)."""
    return [spec for spec in handlers.BUILTIN_HANDLERS if spec[0] not in skipped]


def _register_handlers(session: botocore.session.Session, specs: list[tuple[Any, ...]]) -> None:
    """Register ``specs`` as a session registers its builtin handlers."""
    events = session.get_component("event_emitter")
    for spec in specs:
        if len(spec) == 2:
            session.register(spec[0], spec[1])
        elif spec[2] is handlers.REGISTER_FIRST:
            events.register_first(spec[0], spec[1])
        elif spec[2] is handlers.REGISTER_LAST:
            events.register_last(spec[0], spec[1])


class _Loader(Loader):
    """botocore's data loader, minus its scan of ~400 service directories (~20 ms of stat
    calls per model type) to confirm that the few services we name exist.

    Its search path holds ``agent/data`` before botocore's own data: there ``endpoints.json``
    is botocore's endpoint data pruned to the services we call (``scripts/gen_endpoints.py``;
    botocore's whole file is 1.2 MB, ~8 MB of objects, parsed at the first client). Being
    botocore's own data, it resolves endpoints as the data botocore ships does.
    """

    ENDPOINTS = os.path.join(DATA, "endpoints")

    def list_available_services(self, type_name: str) -> list[str]:
        """The services the agent calls (a model that is missing still fails to load)."""
        return sorted(Aws.SERVICES)

    def is_builtin_path(self, path: str) -> bool:
        """Whether ``path`` is botocore's own data: the pruned endpoints are."""
        return path == self.ENDPOINTS or bool(super().is_builtin_path(path))


class _RoleFetcher:
    """botocore's role-credential fetcher, answered by the agent's IMDS client.

    The credentials it returns are secrets: they go to botocore and nowhere else.
    """

    PATH = "/latest/meta-data/iam/security-credentials/"

    def __init__(self, imds: ImdsClient) -> None:
        self._imds = imds

    def retrieve_iam_role_credentials(self) -> dict[str, str]:
        """The metadata dict botocore's InstanceMetadataProvider expects, or {} for none."""
        try:
            listing = self._imds.get(self.PATH, allow_404=True)
            if not listing or not listing.strip():
                return {}
            role = listing.decode().split()[0]
            doc = self._imds.get_json(self.PATH + role)
        except ImdsError as exc:
            log.warning("no instance role credentials: %s", exc)
            return {}
        if not isinstance(doc, dict) or doc.get("Code", "Success") != "Success":
            return {}
        return {"role_name": role, "access_key": doc["AccessKeyId"],
                "secret_key": doc["SecretAccessKey"], "token": doc["Token"],
                "expiry_time": doc["Expiration"]}


@frozen()
class Role:
    """A role to fetch with: its credentials come from ``sts:AssumeRole``."""

    arn: str
    external_id: str = ""
    session_name: str = "instance-boot-agent"  # the boot uses the instance id


def _assumed(fetch: Callable[[], Any], role: Role) -> Any:
    """``AssumeRole``'s credentials; an answer without usable ones is an error naming the
    role (a refusal stays botocore's ClientError, its code saying AssumeRole; a transient
    error stays as it is, for the call's retries)."""
    try:
        return fetch()
    except ClientError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        what = ("an answer without usable credentials"
                if isinstance(exc, KeyError | TypeError | ValueError) else describe(exc))
        raise AwsError(f"sts AssumeRole {role.arn}: {what}") from None


class _Assumed(CredentialProvider):
    """botocore's credential chain of one role session: refreshable AssumeRole credentials."""

    METHOD = "assume-role"
    CANONICAL_NAME = "instance-boot-agent-role"

    def __init__(self, credentials: Any) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Any:
        """The credentials (botocore refreshes them before they expire)."""
        return self._credentials


class Aws:
    """Lazily created clients (by service, region and role), and :meth:`call` with the retry
    policy. The instance's own credentials sign everything not fetched with a role."""

    SERVICES = tuple(service_models.OPERATIONS)
    HANDLERS = builtin_handlers(service_models.skipped_handlers())

    def __init__(self, region: str, *, endpoint_url: str = "", max_wait: float = 300.0,
                 imds: ImdsClient | None = None, events: Sequence[Handler] = ()) -> None:
        self.region = region
        self.events = tuple(events)  # botocore event handlers every client gets
        self.endpoint_url = endpoint_url or None
        self.max_wait = max_wait
        self._config = BotoConfig(  # adaptive: botocore's client-side rate limiter, which
            retries={"total_max_attempts": 1, "mode": "adaptive"},  # acts even at 1 attempt
            connect_timeout=min(CONNECT_TIMEOUT, max_wait),
            read_timeout=min(READ_TIMEOUT, max_wait),
            max_pool_connections=16,
            user_agent_extra="instance-boot-agent",
        )
        self._session = self._new_session()
        self._transport = Transport(lambda: self._session.get_config_variable("ca_bundle")
                                    or get_cert_path(True))
        if imds is not None:
            self._use_imds_for_role_credentials(imds)
        self._roles: dict[Role, botocore.session.Session] = {}
        self._clients: dict[tuple[str, str, Role | None], Any] = {}
        self._lock = threading.Lock()
        self._deadline = threading.local()  # of the call this thread is making
        self._requests: Counter[tuple[str, str]] = Counter()  # (api, outcome): attempts
        self._requests_lock = threading.Lock()

    def _new_session(self) -> botocore.session.Session:
        session = botocore.session.Session(include_builtin_handlers=False)
        _register_handlers(session, self.HANDLERS)
        data_path = session.get_config_variable("data_path")
        paths = [os.path.expanduser(p) for p in data_path.split(os.pathsep)] if data_path else []
        pruned = service_models.search_path()  # before botocore's own (which stay for the rest)
        session.register_component("data_loader", _Loader(
            extra_search_paths=[*paths, *([pruned] if pruned else []), DATA]))
        session.set_config_variable("region", self.region)
        session.set_config_variable("ec2_metadata_v1_disabled", True)
        return session

    @classmethod
    def from_config(cls, cfg: AwsConfig, instance_region: str, *,
                    imds: ImdsClient | None = None, events: Sequence[Handler] = ()) -> Aws:
        """The clients ``[aws]`` describes, in ``aws.region`` or else the instance's region;
        ``events``: botocore event handlers (name, handler) every client gets."""
        return cls(cfg.region or instance_region, endpoint_url=cfg.endpoint_url,
                   max_wait=cfg.max_wait_seconds, imds=imds, events=events)

    def _use_imds_for_role_credentials(self, imds: ImdsClient) -> None:
        """Swap botocore's instance-role provider for one backed by ``imds``, in place."""
        from botocore.credentials import InstanceMetadataProvider  # noqa: PLC0415

        resolver = self._session.get_component("credential_provider")
        providers = resolver.providers
        for index, provider in enumerate(providers):
            if provider.METHOD == InstanceMetadataProvider.METHOD:
                providers[index] = InstanceMetadataProvider(_RoleFetcher(imds))  # type: ignore[arg-type]

    def _role_session(self, role: Role) -> botocore.session.Session:
        """A session signing with ``role``: one AssumeRole, reused until near expiry."""
        session = self._roles.get(role)
        if session is None:
            from botocore.credentials import (  # noqa: PLC0415
                AssumeRoleCredentialFetcher,
                DeferredRefreshableCredentials,
            )

            extra = {"RoleSessionName": role.session_name}
            if role.external_id:
                extra["ExternalId"] = role.external_id
            fetcher = AssumeRoleCredentialFetcher(
                lambda service, **kw: self._create_client(self._session, service,
                                                          self.region, **kw),
                self._session.get_credentials(), role.arn, extra_args=extra)
            credentials = DeferredRefreshableCredentials(
                partial(_assumed, fetcher.fetch_credentials, role), "assume-role")
            session = self._new_session()
            session.register_component("credential_provider",
                                       CredentialResolver([_Assumed(credentials)]))
            self._roles[role] = session
        return session

    def _create_client(self, session: botocore.session.Session, service: str, region: str,
                       **kwargs: Any) -> Any:
        """A botocore client whose every attempt :meth:`_send` sends, with :attr:`events`'
        handlers registered (on ``client.meta.events``, botocore's event system)."""
        client = session.create_client(service, region_name=region,
                                       endpoint_url=self.endpoint_url, config=self._config,
                                       **kwargs)
        for name, handler in self.events:
            client.meta.events.register(name, handler)
        client.meta.events.register("before-send", self._send)
        return client

    def client(self, service: str, region: str | None = None, role: Role | None = None) -> Any:
        """The client for ``service`` in ``region`` (default: ours) signing as ``role`` (default:
        the instance), created once (botocore sessions are not thread-safe)."""
        key = (service, region or self.region, role)
        client = self._clients.get(key)  # made already: no waiting behind another's making
        if client is not None:
            return client
        with self._lock:
            if key not in self._clients:
                session = self._session if role is None else self._role_session(role)
                try:
                    client = self._create_client(session, service, key[1])
                except BotoCoreError as exc:
                    raise AwsError(f"{service}: cannot create client: {describe(exc)}") from None
                self._clients[key] = client
            return self._clients[key]

    def _send(self, request: Any, **kwargs: Any) -> Any:
        """botocore's ``before-send``: send the attempt ourselves, bounded as a whole.

        Connecting waits at most :data:`CONNECT_TIMEOUT`, the answer at most
        :data:`READ_TIMEOUT`, and the whole attempt never beyond what is left of the call's
        budget (:mod:`agent.cloud.transport`).
        """
        left = getattr(self._deadline, "left", None)
        budget = max(0.0, left() if left is not None else self.max_wait)
        return self._transport.send(request, connect_timeout=CONNECT_TIMEOUT,
                                    read_timeout=READ_TIMEOUT,
                                    deadline=time.monotonic() + budget)

    def call(self, service: str, operation: str, *,
             budget: float | Callable[[], float] | None = None,
             on_retry: Callable[[BaseException], None] | None = None,
             region: str | None = None, role: Role | None = None,
             **params: Any) -> dict[str, Any]:
        """Call ``operation`` (snake_case), retrying transient errors within the budget.

        Raises botocore's ClientError for permanent failures (callers decide what a code
        means), and :class:`AwsError` when the retry budget runs out, credentials are
        missing, or the SDK fails otherwise (an answer it cannot parse: described by
        :func:`describe`, never quoted).
        ``budget``: seconds, or a function giving the seconds left (a deadline that moves);
        ``on_retry`` sees each transient error before its retry.
        """
        client = self.client(service, region, role)
        method = getattr(client, operation)
        api = f"{service}:{client.meta.method_to_api_mapping.get(operation, operation)}"

        def attempt() -> dict[str, Any]:
            try:
                result: dict[str, Any] = method(**params)
            except Exception as exc:
                self._count(api, "throttled" if is_throttling(exc) else "error")
                raise
            self._count(api, "ok")
            return result

        def retrying(exc: BaseException, n: int, pause: float) -> None:
            log.info("%s %s: %s; retry %d in %.2f s", service, operation, describe(exc), n,
                     pause)
            if on_retry is not None:
                on_retry(exc)

        budget = self.max_wait if budget is None else budget
        if callable(budget):  # a deadline that moves: read again at each attempt
            self._deadline.left = budget
        else:
            end = time.monotonic() + budget
            self._deadline.left = lambda: end - time.monotonic()
        try:
            return retry(
                attempt,
                transient=is_transient,
                budget=budget,
                pace=pace(service),
                on_retry=retrying,
            )
        except GaveUp as exc:
            raise AwsError(
                f"{service} {operation}: gave up after {exc.waited:.1f} s "
                f"({exc.attempts} attempts): {describe(exc.last)}"
            ) from None
        except (BotoCoreError, ResponseParserError) as exc:  # no AWS code for callers to read
            raise AwsError(f"{service} {operation}: {describe(exc)}") from None
        finally:
            self._deadline.left = None

    def _count(self, api: str, outcome: str) -> None:
        with self._requests_lock:
            self._requests[(api, outcome)] += 1

    def request_counts(self) -> dict[tuple[str, str], int]:
        """Attempts so far by (api, outcome); outcome ``ok``, ``throttled`` or ``error``."""
        with self._requests_lock:
            return dict(self._requests)

    def describe_instance_type(self, instance_type: str) -> dict[str, Any] | None:
        """A type's ``DescribeInstanceTypes`` record (None when AWS knows none); what it
        means for the instance is :func:`agent.instance.types.from_describe`'s."""
        try:
            reply = self.call("ec2", "describe_instance_types", InstanceTypes=[instance_type])
        except ClientError as exc:
            if error_code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
                return None
            raise AwsError(f"ec2 DescribeInstanceTypes: {describe(exc)}") from None
        found = reply.get("InstanceTypes") or []
        return dict(found[0]) if found else None
