"""Secrets: fetch from AWS, render, publish all of them or none, on tmpfs only.

:class:`Secrets` is the published set: the boot's secrets phase (:meth:`Secrets.publish`)
and every refresh of the resident daemon (:meth:`Secrets.refresh`). Files are published as
generations (:mod:`agent.generations`), handed to services by credential drop-ins and
change hooks (:mod:`agent.handoff`). Secret values live only in :class:`SecretValue` and
:class:`Rendered` (whose reprs are redacted) and in the bytes written to the files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent import envfile, generations, handoff
from agent.aws import Aws, describe, error_code
from agent.errors import AgentError, SecretsError
from agent.fsutil import fs_name, fs_type, is_memory_fs, is_mount_point, mount_tmpfs
from agent.secrets_config import SecretFile, SecretsConfig
from agent.state import PhaseState, utc_now

if TYPE_CHECKING:
    from agent.state import Recorder

log = logging.getLogger(__name__)

_MISSING = frozenset({"ResourceNotFoundException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"})
SSM_BATCH = 10  # GetParameters takes at most 10 names
FETCH_WORKERS = 8  # concurrent fetches (each a connection: keep a listen backlog happy)


@dataclass(frozen=True)
class SecretRef:
    """What one fetch gets; entries with the same reference share it."""

    source: Literal["secretsmanager", "ssm"]
    name: str  # the secret id or the parameter name
    stage: str = ""  # Secrets Manager: the staging label (AWSCURRENT by default)
    version_id: str = ""  # Secrets Manager: a fixed version

    @classmethod
    def of(cls, entry: SecretFile) -> SecretRef:
        """The reference of a ``[[secrets.files]]`` entry."""
        stage = "" if entry.version_id or entry.source == "ssm" else (
            entry.version_stage or "AWSCURRENT")
        return cls(entry.source, entry.name, stage, entry.version_id)

    @property
    def label(self) -> str:
        """``secret 'prod/db'`` or ``parameter '/prod/db/password'``."""
        return f"{'parameter' if self.source == 'ssm' else 'secret'} {self.name!r}"


@dataclass(frozen=True, repr=False)
class SecretValue:
    """One fetched secret version. ``repr``/``str`` never show the value."""

    secret_id: str
    version_id: str
    arn: str = ""
    text: str | None = field(default=None, compare=False)
    binary: bytes | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        kind = "binary" if self.binary is not None else "string"
        return f"SecretValue({self.secret_id!r}, version={self.version_id!r}, {kind}=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class Rendered:
    """A file's final bytes (redacted repr) and the entry it came from."""

    entry: SecretFile
    value: SecretValue
    content: bytes

    def __repr__(self) -> str:
        return f"Rendered({self.entry.path!r}, {len(self.content)} bytes=<redacted>)"

    def item(self) -> generations.Item:
        """What :func:`agent.generations.publish` writes for it."""
        entry = self.entry
        return generations.Item(entry.path, self.content, entry.mode, entry.uid, entry.gid,
                                f"{entry.owner}:{entry.group}")


# -- fetching ---------------------------------------------------------------------------


def _fail(label: str, exc: BaseException) -> SecretsError:
    """One line naming the secret for an AWS failure (never a value)."""
    if isinstance(exc, AgentError):
        return SecretsError(f"{label}: {exc}")
    code = error_code(exc)
    if code in _MISSING:
        return SecretsError(f"{label} not found")
    if code in _DENIED:
        return SecretsError(f"{label}: access denied ({describe(exc)})")
    return SecretsError(f"{label}: {describe(exc)}")


def _fetch_secret(aws: Aws, ref: SecretRef) -> SecretValue:
    """``GetSecretValue`` for one secret version (by stage or id)."""
    selector: dict[str, Any] = ({"VersionId": ref.version_id} if ref.version_id
                                else {"VersionStage": ref.stage})
    try:
        reply = aws.call("secretsmanager", "get_secret_value", SecretId=ref.name, **selector)
    except Exception as exc:
        raise _fail(ref.label, exc) from None
    text, binary = reply.get("SecretString"), reply.get("SecretBinary")
    if not isinstance(text, str | None) or not isinstance(binary, bytes | None):
        raise SecretsError(f"{ref.label}: GetSecretValue answered a value of the wrong type")
    return SecretValue(secret_id=ref.name, version_id=str(reply.get("VersionId", "")),
                       arn=str(reply.get("ARN", "")), text=text, binary=binary)


def _parameters(aws: Aws, names: list[str], *, decrypt: bool) -> dict[str, dict[str, Any]]:
    """``GetParameters`` in batches of 10; every name must exist."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), SSM_BATCH):
        batch = names[start:start + SSM_BATCH]
        try:
            reply = aws.call("ssm", "get_parameters", Names=batch, WithDecryption=decrypt)
        except Exception as exc:
            raise _fail(f"parameter {batch[0]!r}", exc) from None
        missing = reply.get("InvalidParameters") or []
        if missing:
            raise SecretsError(f"parameter {missing[0]!r} not found")
        found.update({p["Name"]: p for p in reply.get("Parameters", [])})
    return found


def _concurrently(work: dict[Hashable, Callable[[], Any]]) -> dict[Hashable, Any]:
    """Run the callables at once; the first failure wins (a bug is re-raised as it is)."""
    if not work:
        return {}
    workers = min(FETCH_WORKERS, len(work))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures = {ref: pool.submit(job) for ref, job in work.items()}
        failures = [exc for f in futures.values() if (exc := f.exception()) is not None]
    if failures:
        first = failures[0]
        if not isinstance(first, AgentError):
            raise first
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SecretsError(f"{first}{more}")
    return {ref: future.result() for ref, future in futures.items()}


def refs(entries: Sequence[SecretFile]) -> list[SecretRef]:
    """The distinct references of ``entries``, in order."""
    return list(dict.fromkeys(SecretRef.of(entry) for entry in entries))


def fetch_all(aws: Aws, entries: Sequence[SecretFile]) -> dict[SecretRef, SecretValue]:
    """Every distinct secret of ``entries``, fetched at once.

    One ``GetSecretValue`` per distinct secret version, all in flight together. Not
    ``BatchGetSecretValue``: its account-wide 100 TPS quota is what a fleet scaling out
    would exhaust. SSM parameters come in ``GetParameters`` batches (with decryption).
    """
    wanted = refs(entries)
    ssm = [ref for ref in wanted if ref.source == "ssm"]
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_fetch_secret, aws, ref) for ref in wanted if ref.source != "ssm"}
    if ssm:
        work["ssm"] = lambda: _parameters(aws, [r.name for r in ssm], decrypt=True)
    done = _concurrently(work)
    params = done.pop("ssm", {})
    values: dict[SecretRef, SecretValue] = {ref: done[ref] for ref in wanted
                                            if ref.source != "ssm"}
    for ref in ssm:
        param = params[ref.name]
        values[ref] = SecretValue(secret_id=ref.name, version_id=str(param.get("Version", "")),
                                  arn=str(param.get("ARN", "")), text=str(param.get("Value", "")))
    return values


def _current_version(aws: Aws, ref: SecretRef) -> str:
    """The version id a secret's stage points at now (``DescribeSecret``: no value)."""
    try:
        reply = aws.call("secretsmanager", "describe_secret", SecretId=ref.name)
    except Exception as exc:
        raise _fail(ref.label, exc) from None
    for version, stages in (reply.get("VersionIdsToStages") or {}).items():
        if ref.stage in stages:
            return str(version)
    raise SecretsError(f"{ref.label} has no version labelled {ref.stage}")


def current_versions(aws: Aws, entries: Sequence[SecretFile]) -> dict[SecretRef, str]:
    """What each secret's version is now, without fetching a value.

    ``DescribeSecret`` per staged secret (a fixed ``version_id`` never changes: no call);
    SSM versions from ``GetParameters`` without decryption.
    """
    wanted = refs(entries)
    versions = {ref: ref.version_id for ref in wanted if ref.version_id}
    staged = [ref for ref in wanted if ref.source != "ssm" and not ref.version_id]
    ssm = [ref for ref in wanted if ref.source == "ssm"]
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_current_version, aws, ref) for ref in staged}
    if ssm:
        work["ssm"] = lambda: _parameters(aws, [r.name for r in ssm], decrypt=False)
    done = _concurrently(work)
    params = done.pop("ssm", {})
    versions.update({ref: str(done[ref]) for ref in staged})
    versions.update({ref: str(params[ref.name].get("Version", "")) for ref in ssm})
    return versions


# -- rendering --------------------------------------------------------------------------


def render(entry: SecretFile, value: SecretValue, index: int) -> bytes:
    """The bytes of one file: raw (byte-exact), one key, JSON, or an env file for systemd."""
    where = f"{SecretRef.of(entry).label} (secrets.files[{index}] {entry.path})"
    try:
        return _render(entry, value, where)
    except UnicodeEncodeError:
        raise SecretsError(f"{where}: the value is not valid Unicode (it holds a lone "
                           "surrogate, as JSON's \\ud800 escape makes one)") from None


def _render(entry: SecretFile, value: SecretValue, where: str) -> bytes:
    if entry.format == "raw" and not entry.key:
        if value.binary is not None:
            return bytes(value.binary)
        return (value.text or "").encode()
    document = _json_document(value, where, entry.format)
    selected = _select(document, entry.key, where) if entry.key else document
    if entry.format == "env":
        if not isinstance(selected, dict):
            raise SecretsError(f"{where}: env format needs a JSON object")
        try:
            return envfile.render((name, _scalar(v)) for name, v in selected.items()).encode()
        except envfile.EnvFileError as exc:
            raise SecretsError(f"{where}: {exc}") from None
    if entry.format == "json":
        return (json.dumps(selected, indent=2, ensure_ascii=False) + "\n").encode()
    if isinstance(selected, str):
        return selected.encode()
    return _scalar(selected).encode()


def _json_document(value: SecretValue, where: str, fmt: str) -> Any:
    if value.text is None:
        raise SecretsError(f"{where}: a binary secret has no keys ({fmt} format or key given)")
    try:
        return json.loads(value.text)
    except (ValueError, RecursionError):
        raise SecretsError(f"{where}: the secret is not JSON, so it has no keys") from None


def _select(document: Any, key: str, where: str) -> Any:
    """A top-level key, else a JMESPath expression (jmespath ships with botocore)."""
    if isinstance(document, dict) and key in document:
        return document[key]
    import jmespath  # noqa: PLC0415 - only for nested selections
    from jmespath.exceptions import JMESPathError  # noqa: PLC0415

    try:
        found = jmespath.search(key, document)
    except (JMESPathError, ValueError, TypeError, RecursionError):
        raise SecretsError(f"{where}: key {key!r} is neither a key nor a valid JMESPath") from None
    if found is None:
        raise SecretsError(f"{where}: key {key!r} matches nothing")
    return found


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def render_all(cfg: SecretsConfig, values: dict[SecretRef, SecretValue]) -> list[Rendered]:
    """Render every configured file; the first data error fails the whole set."""
    rendered = []
    for index, entry in enumerate(cfg.files):
        value = values[SecretRef.of(entry)]
        rendered.append(Rendered(entry, value, render(entry, value, index)))
    return rendered


# -- where the files go ---------------------------------------------------------------


def check_storage(root: Path, require_memory_fs: bool) -> None:
    """Refuse a secrets directory that is (or would be created) on a disk filesystem."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        memory = is_memory_fs(probe)
    except OSError as exc:
        raise SecretsError(f"secrets.dir {root}: cannot tell its filesystem: "
                           f"{exc.strerror}") from None
    if require_memory_fs and not memory:
        raise SecretsError(
            f"secrets.dir {root} is on {fs_name(fs_type(probe))}, not tmpfs/ramfs: refusing to "
            "write secrets to disk (mount a tmpfs there, or set secrets.require_tmpfs = false)"
        )


def mount(root: Path, size: str) -> str:
    """``secrets.mount``: a private tmpfs at ``root``, unless one is there already.

    A warning ('' for none): this kernel's tmpfs has no ``noswap``.
    """
    if root.exists() and is_mount_point(root) and is_memory_fs(root):
        return ""
    try:
        noswap = mount_tmpfs(root, size)
    except OSError as exc:
        raise SecretsError(f"cannot mount a tmpfs at {root}: {exc.strerror} (the agent "
                           "needs CAP_SYS_ADMIN for secrets.mount; or use the "
                           "run-agent-secrets.mount unit)") from None
    if noswap:
        return ""
    return ("secrets: this kernel's tmpfs has no noswap (Linux < 6.4): secret pages could "
            "reach swap")


def dir_mode(files: Sequence[SecretFile]) -> int:
    """0700, or 0711 (traverse, no listing) when a non-root owner must reach its file."""
    return 0o711 if any(f.uid != 0 or f.gid != 0 for f in files) else 0o700


def records(cfg: SecretsConfig, versions: dict[str, str],
            fetched_at: dict[str, str]) -> list[dict[str, str]]:
    """What state.json keeps of each file (by path): ids, path, version, time; no value."""
    root = Path(cfg.dir)
    return [
        {"secret_id": e.name, "source": e.source, "path": str(root / e.path),
         "version_id": versions.get(e.path, ""), "fetched_at": fetched_at.get(e.path, "")}
        for e in cfg.files
    ]


# -- the published set ------------------------------------------------------------------


class Secrets:
    """The secrets of this boot: published by the boot, refreshed by the daemon."""

    def __init__(self, cfg: SecretsConfig, rec: Recorder) -> None:
        self.cfg = cfg
        self.rec = rec
        self.root = Path(cfg.dir)
        self.versions: dict[SecretRef, str] = {}  # what is published now
        self.published = False

    def publish(self, aws: Aws, *, warm: bool, warm_pool_secrets: bool
                ) -> tuple[PhaseState, str]:
        """The boot's secrets phase: fetch every secret, render, publish in one switch."""
        cfg = self.cfg
        if not cfg.files:
            return PhaseState.SKIPPED, "no secrets configured"
        if warm and not warm_pool_secrets:
            return PhaseState.SKIPPED, ("warm pool: published when the instance goes "
                                        "InService (lifecycle.warm_pool_secrets = false)")
        if cfg.mount:
            self._warn(mount(self.root, cfg.mount_size))
        check_storage(self.root, cfg.require_tmpfs)
        values = fetch_all(aws, cfg.files)
        rendered = render_all(cfg, values)
        publication = generations.publish(self.root, [r.item() for r in rendered],
                                          dir_mode(cfg.files))
        self.published = True
        self.versions = {ref: value.version_id for ref, value in values.items()}
        by_path = {r.entry.path: r.value.version_id for r in rendered}
        self.rec.update(secrets=records(cfg, by_path, dict.fromkeys(by_path, utc_now())))
        for warning in handoff.write_credentials(cfg):
            self._warn(f"secrets: {warning}")
        self._after_change(publication)
        return PhaseState.DONE, (f"{len(rendered)} files from {len(values)} secrets "
                                 f"published ({publication.generation.lstrip('.')})")

    def refresh(self, aws: Aws) -> generations.Publication | None:
        """Publish a new generation if a secret's version moved (the daemon's refresh).

        Versions are checked without fetching values; only secrets whose version changed (or
        whose file is missing) are fetched, the other files are carried over byte for byte.
        Nothing is published when no file's content would change.
        """
        cfg = self.cfg
        versions = current_versions(aws, cfg.files)
        current = generations.contents(generations.current(self.root),
                                       [e.path for e in cfg.files])
        stale = {SecretRef.of(e) for e in cfg.files
                 if self.versions.get(SecretRef.of(e)) != versions[SecretRef.of(e)]
                 or e.path not in current}
        if not stale:
            self.versions = versions
            return None
        values = fetch_all(aws, [e for e in cfg.files if SecretRef.of(e) in stale])
        rendered = []
        for index, entry in enumerate(cfg.files):
            ref = SecretRef.of(entry)
            if ref in stale:
                rendered.append(Rendered(entry, values[ref], render(entry, values[ref], index)))
            else:
                rendered.append(Rendered(entry, SecretValue(entry.name, versions[ref]),
                                         current[entry.path]))
        versions.update({ref: value.version_id for ref, value in values.items()})
        if all(current.get(r.entry.path) == r.content for r in rendered):
            self.versions = versions
            return None
        publication = generations.publish(self.root, [r.item() for r in rendered],
                                          dir_mode(cfg.files))
        self.versions = versions
        by_path = {e.path: versions.get(SecretRef.of(e), "") for e in cfg.files}
        fetched = {str(Path(r["path"]).relative_to(self.root)): r.get("fetched_at", "")
                   for r in self.rec.doc.get("secrets") or []}
        now = utc_now()
        fetched.update({path: now for path in [*publication.changed, *publication.added]})
        self.rec.update(secrets=records(cfg, by_path, fetched))
        self.rec.clear_warning(handoff.HOOK_FAILED)
        self._after_change(publication)
        return publication

    def _after_change(self, publication: generations.Publication) -> None:
        changed = set(publication.changed)
        entries = [e for e in self.cfg.files if e.path in changed]
        by_path = {e.path: self.versions.get(SecretRef.of(e), "") for e in self.cfg.files}
        for problem in handoff.after_change(self.cfg, entries, by_path):
            self._warn(f"{handoff.HOOK_FAILED} {problem}")

    def _warn(self, message: str) -> None:
        if message:
            self.rec.warn(message)
