"""Secrets: fetch from AWS, render, and publish all of them or none, on tmpfs only.

Layout of ``secrets.dir`` (certbot's live/archive idea, switched in one atomic step)::

    .gen-000007/            a complete generation: every file, final mode and owner
    .gen-000006/            the previous one (kept for a reader in the middle of a read)
    .current -> .gen-000007 the switch: one rename of a symlink flips the whole set
    db.json -> .current/db.json     the visible names, resolved through .current

A generation is written under ``.gen-N.tmp`` and renamed when complete, so anything named
``*.tmp`` is a half-written generation: recovery deletes it. Secret values live only in
:class:`SecretValue` (whose repr is redacted) and in the bytes written to the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from agent import envfile
from agent.aws import Aws, describe, error_code
from agent.config import SecretFile, SecretsConfig
from agent.errors import AgentError, SecretsError
from agent.fsutil import fs_name, fs_type, is_memory_fs, make_dirs, write_new

log = logging.getLogger(__name__)

CURRENT = ".current"
GEN_PREFIX = ".gen-"
TMP_SUFFIX = ".tmp"
_MISSING = frozenset({"ResourceNotFoundException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"})


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


# -- fetching ---------------------------------------------------------------------------

Ref = tuple[str, str, str, str]  # SecretFile.ref: source, name, stage, version id
SSM_BATCH = 10  # GetParameters takes at most 10 names


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


def _fetch_secret(aws: Aws, ref: Ref) -> SecretValue:
    """``GetSecretValue`` for one secret version (by stage or id)."""
    _, name, stage, version_id = ref
    selector: dict[str, Any] = {"VersionId": version_id} if version_id else {
        "VersionStage": stage}
    try:
        reply = aws.call("secretsmanager", "get_secret_value", SecretId=name, **selector)
    except Exception as exc:
        raise _fail(f"secret {name!r}", exc) from None
    return SecretValue(secret_id=name, version_id=str(reply.get("VersionId", "")),
                       arn=str(reply.get("ARN", "")), text=reply.get("SecretString"),
                       binary=reply.get("SecretBinary"))


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
    """Run the callables, all at once; the first expected failure wins, bugs keep tracebacks."""
    if not work:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(work)), thread_name_prefix="fetch") as pool:
        futures = {ref: pool.submit(job) for ref, job in work.items()}
        failures = [exc for f in futures.values() if (exc := f.exception()) is not None]
    if failures:
        first = failures[0]
        if not isinstance(first, AgentError):
            raise first
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SecretsError(f"{first}{more}")
    return {ref: future.result() for ref, future in futures.items()}


def fetch_all(aws: Aws, entries: Sequence[SecretFile]) -> dict[Ref, SecretValue]:
    """Every distinct secret of ``entries``, fetched at once.

    One ``GetSecretValue`` per distinct secret version, all in flight together. Not
    ``BatchGetSecretValue``: its account-wide 100 TPS quota is what a fleet scaling out
    would exhaust. SSM parameters come in ``GetParameters`` batches (with decryption).
    """
    refs = list(dict.fromkeys(entry.ref for entry in entries))
    ssm_refs = [ref for ref in refs if ref[0] == "ssm"]
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_fetch_secret, aws, ref) for ref in refs if ref[0] != "ssm"}
    if ssm_refs:
        work["ssm"] = lambda: _parameters(aws, [r[1] for r in ssm_refs], decrypt=True)
    done = _concurrently(work)
    params = done.pop("ssm", {})
    values: dict[Ref, SecretValue] = {ref: done[ref] for ref in refs if ref[0] != "ssm"}
    for ref in ssm_refs:
        param = params[ref[1]]
        values[ref] = SecretValue(secret_id=ref[1], version_id=str(param.get("Version", "")),
                                  arn=str(param.get("ARN", "")), text=param.get("Value", ""))
    return values


def _current_version(aws: Aws, ref: Ref) -> str:
    """The version id a secret's stage points at now (``DescribeSecret``: no value)."""
    _, name, stage, _ = ref
    try:
        reply = aws.call("secretsmanager", "describe_secret", SecretId=name)
    except Exception as exc:
        raise _fail(f"secret {name!r}", exc) from None
    for version, stages in (reply.get("VersionIdsToStages") or {}).items():
        if stage in stages:
            return str(version)
    raise SecretsError(f"secret {name!r} has no version labelled {stage}")


def current_versions(aws: Aws, entries: Sequence[SecretFile]) -> dict[Ref, str]:
    """What each secret's version is now, without fetching a value.

    ``DescribeSecret`` per staged secret (a fixed ``version_id`` never changes: no call);
    SSM versions from ``GetParameters`` without decryption.
    """
    refs = list(dict.fromkeys(entry.ref for entry in entries))
    versions = {ref: ref[3] for ref in refs if ref[3]}
    staged = [ref for ref in refs if ref[0] != "ssm" and not ref[3]]
    ssm_refs = [ref for ref in refs if ref[0] == "ssm"]
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_current_version, aws, ref) for ref in staged}
    if ssm_refs:
        work["ssm"] = lambda: _parameters(aws, [r[1] for r in ssm_refs], decrypt=False)
    done = _concurrently(work)
    params = done.pop("ssm", {})
    versions.update({ref: str(done[ref]) for ref in staged})
    versions.update({ref: str(params[ref[1]].get("Version", "")) for ref in ssm_refs})
    return versions


# -- rendering --------------------------------------------------------------------------


def render(entry: SecretFile, value: SecretValue, index: int) -> bytes:
    """The bytes of one file: raw (byte-exact), one key, JSON, or an env file for systemd."""
    where = f"{entry.label} (secrets.files[{index}] {entry.path})"
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
    except ValueError:
        raise SecretsError(f"{where}: the secret is not JSON, so it has no keys") from None


def _select(document: Any, key: str, where: str) -> Any:
    """A top-level key, else a JMESPath expression (jmespath ships with botocore)."""
    if isinstance(document, dict) and key in document:
        return document[key]
    import jmespath  # noqa: PLC0415 - only for nested selections
    from jmespath.exceptions import JMESPathError  # noqa: PLC0415

    try:
        found = jmespath.search(key, document)
    except JMESPathError:
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


def render_all(cfg: SecretsConfig, values: dict[Ref, SecretValue]) -> list[Rendered]:
    """Render every configured file; the first data error fails the whole set."""
    return [
        Rendered(entry, values[entry.ref], render(entry, values[entry.ref], index))
        for index, entry in enumerate(cfg.files)
    ]


# -- publishing -------------------------------------------------------------------------


def check_storage(root: Path, require_memory_fs: bool) -> None:
    """Refuse a secrets directory that is (or would be created) on a disk filesystem."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if require_memory_fs and not is_memory_fs(probe):
        raise SecretsError(
            f"secrets.dir {root} is on {fs_name(fs_type(probe))}, not tmpfs/ramfs: refusing to "
            "write secrets to disk (mount a tmpfs there, or set secrets.require_tmpfs = false)"
        )


def _dir_mode(files: Iterable[SecretFile]) -> int:
    """0700, or 0711 (traverse, no listing) when a non-root owner must reach its file."""
    return 0o711 if any(f.uid != 0 or f.gid != 0 for f in files) else 0o700


def generations(root: Path) -> list[Path]:
    """Complete generations, oldest first."""
    found = [p for p in root.glob(GEN_PREFIX + "*") if not p.name.endswith(TMP_SUFFIX)]
    return sorted(found, key=lambda p: p.name)


def current_generation(root: Path) -> Path | None:
    """The generation ``.current`` points to, if it is complete."""
    link = root / CURRENT
    try:
        target = root / os.readlink(link)
    except OSError:
        return None
    return target if target.is_dir() and not target.name.endswith(TMP_SUFFIX) else None


def recover(root: Path) -> list[str]:
    """Delete half-written generations and stray temporary links; return what went."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if path.name.endswith(TMP_SUFFIX) and path.name.startswith("."):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
    if removed:
        log.warning("removed half-written secrets state: %s", ", ".join(sorted(removed)))
    return removed


@dataclass(frozen=True)
class Publication:
    """A generation made current: its name, and which files changed or are new."""

    generation: str
    changed: list[SecretFile]  # content differs from the previous generation's
    added: list[SecretFile]  # not in the previous generation


def contents(generation: Path | None, entries: Iterable[SecretFile]) -> dict[str, bytes]:
    """The bytes of each entry's file in ``generation`` (absent files left out)."""
    found: dict[str, bytes] = {}
    if generation is None:
        return found
    for entry in entries:
        with contextlib.suppress(OSError):
            found[entry.path] = (generation / entry.path).read_bytes()
    return found


def publish(root: Path, rendered: Sequence[Rendered]) -> Publication:
    """Write a complete new generation, then switch to it in one rename.

    On any error before the switch nothing visible changes and the partial generation is
    removed.
    """
    entries = [r.entry for r in rendered]
    mode = _dir_mode(entries)
    tops = sorted({PurePosixPath(e.path).parts[0] for e in entries})
    make_dirs(root, mode)
    os.chmod(root, mode)  # also when it existed (e.g. a tmpfs mounted 0700)
    recover(root)
    for top in tops:
        visible = root / top
        ours = visible.is_symlink() and os.readlink(visible).startswith(CURRENT + "/")
        if (visible.exists() or visible.is_symlink()) and not ours:
            raise SecretsError(f"{visible} exists and is not managed by the agent; move it away")

    before = contents(current_generation(root), entries)
    existing = generations(root)
    number = int(existing[-1].name[len(GEN_PREFIX):]) + 1 if existing else 1
    name = f"{GEN_PREFIX}{number:06d}"
    staging = root / (name + TMP_SUFFIX)
    make_dirs(staging, mode)
    euid, egid = os.geteuid(), os.getegid()
    try:
        for item in rendered:
            target = staging / item.entry.path
            make_dirs(target.parent, mode)
            uid = item.entry.uid if item.entry.uid != euid else -1
            gid = item.entry.gid if item.entry.gid != egid else -1
            try:
                write_new(target, item.content, item.entry.mode, uid, gid)
            except PermissionError:
                if uid == -1 and gid == -1:
                    raise
                raise SecretsError(
                    f"{item.entry.path}: cannot give it to {item.entry.owner}:"
                    f"{item.entry.group}: the agent runs as uid {euid}, and only root can "
                    "give files away") from None
        _fsync_dir(staging)
        os.rename(staging, root / name)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise SecretsError(f"cannot publish to {root}: {exc.strerror or exc}") from None
        raise

    previous = current_generation(root)
    _symlink_atomically(root / CURRENT, name)
    for top in tops:
        _symlink_atomically(root / top, f"{CURRENT}/{top}")
    _fsync_dir(root)
    _remove_stale(root, set(tops), keep={name, previous.name if previous else ""})
    return Publication(
        name,
        changed=[r.entry for r in rendered if before.get(r.entry.path, r.content) != r.content],
        added=[r.entry for r in rendered if r.entry.path not in before],
    )


def refresh(aws: Aws, cfg: SecretsConfig, known: dict[Ref, str]
            ) -> tuple[Publication | None, dict[Ref, str]]:
    """Publish a new generation if a secret's version moved; the versions now current.

    Versions are checked without fetching values; only secrets whose version changed (or
    whose file is missing) are fetched, the other files are carried over byte for byte.
    Nothing is published when no file's content would change.
    """
    root = Path(cfg.dir)
    versions = current_versions(aws, cfg.files)
    current = contents(current_generation(root), cfg.files)
    stale = {e.ref for e in cfg.files if known.get(e.ref) != versions[e.ref]
             or e.path not in current}
    if not stale:
        return None, versions
    values = fetch_all(aws, [e for e in cfg.files if e.ref in stale])
    rendered = [
        Rendered(e, values[e.ref], render(e, values[e.ref], i)) if e.ref in stale
        else Rendered(e, SecretValue(e.name, versions[e.ref]), current[e.path])
        for i, e in enumerate(cfg.files)
    ]
    versions.update({ref: value.version_id for ref, value in values.items()})
    if all(current.get(r.entry.path) == r.content for r in rendered):
        return None, versions
    return publish(root, rendered), versions


def _symlink_atomically(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one step: a new link renamed over the old one."""
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    temp = link.with_name(f"{link.name}.{os.getpid()}{TMP_SUFFIX}")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    os.rename(temp, link)


def _remove_stale(root: Path, tops: set[str], keep: set[str]) -> None:
    """Prune generations but the current and previous; drop links no entry names."""
    for gen in generations(root):
        if gen.name not in keep:
            shutil.rmtree(gen, ignore_errors=True)
    for path in root.iterdir():
        if (path.is_symlink() and path.name != CURRENT and path.name not in tops
                and os.readlink(path).startswith(CURRENT + "/")):
            path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def records(cfg: SecretsConfig, versions: dict[str, str],
            fetched_at: dict[str, str]) -> list[dict[str, str]]:
    """What state.json keeps of each file (by path): ids, path, version, time; no value."""
    root = Path(cfg.dir)
    return [
        {"secret_id": e.name, "source": e.source, "path": str(root / e.path),
         "version_id": versions.get(e.path, ""), "fetched_at": fetched_at.get(e.path, "")}
        for e in cfg.files
    ]
