"""Secrets: what this launch keeps and fetches, and the published set (files and templates).

:func:`select` resolves the entries for this launch: each entry's ``when`` condition, and
the placeholders of what it fetches (:mod:`agent.instance.context`), every value needed or one line
naming the one missing, before anything is fetched. :class:`Secrets` is the published set:
the boot's secrets phase (:meth:`Secrets.publish`) and each refresh of the resident daemon
(:meth:`Secrets.refresh`). Files are rendered by :mod:`agent.secrets.render`, published all at once
as generations (:mod:`agent.secrets.generations`), handed to services by
:mod:`agent.secrets.handoff`.
Secret values live only in :class:`~agent.secrets.render.SecretValue` (redacted repr) and in the
bytes written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.cloud.aws import Aws, Role, describe, error_code, is_access_denied
from agent.errors import AgentError, SecretsError
from agent.frozen import frozen
from agent.fsutil import fs_name, fs_type, is_memory_fs, is_mount_point, mount_tmpfs
from agent.instance.context import LaunchContext
from agent.readfile import read_template
from agent.schema.entries import labelled
from agent.schema.expr import MACHINE_FACTS, Value
from agent.secrets import generations, handoff, render
from agent.secrets.render import SecretValue
from agent.state.recorder import PhaseState, utc_now

if TYPE_CHECKING:
    from agent.secrets.config import Published, SecretFile, SecretsConfig, SecretTemplate
    from agent.state.recorder import Recorder

log = logging.getLogger(__name__)

_MISSING = frozenset({"ResourceNotFoundException", "ParameterNotFound"})
INVALID_CREDENTIALS = "UnrecognizedClientException"  # refused as the caller is not known
SSM_BATCH = 10  # GetParameters takes at most 10 names
FETCH_WORKERS = 8  # concurrent fetches (each a connection: keep a listen backlog happy)
_ARN = re.compile(r"arn:aws[a-z-]*:(secretsmanager|ssm):([a-z0-9-]+):\d{12}:")


@frozen()
class SecretRef:
    """What one fetch gets, placeholders resolved; entries with the same reference share it."""

    source: Literal["secretsmanager", "ssm"]
    name: str  # the secret id or the parameter name (or ARN)
    stage: str = ""  # Secrets Manager: the staging label (AWSCURRENT by default)
    version_id: str = ""  # Secrets Manager: a fixed version
    region: str = ""  # '' : the default region (aws.region, else the instance's)
    role: Role | None = None  # None: the instance's own credentials

    @classmethod
    def of(cls, entry: SecretFile, context: LaunchContext | None = None, where: str = "",
           session: str = "instance-boot-agent") -> SecretRef:
        """The reference of an entry, its placeholders filled in from ``context``."""
        def resolve(text: str, key: str) -> str:
            return text if context is None else context.resolve(text, where, key)

        name = resolve(entry.secret_id or entry.parameter,
                       "parameter" if entry.source == "ssm" else "secret_id")
        found = _ARN.match(name)
        region = (resolve(entry.region, "region") if entry.region else "") or (
            found.group(2) if found else "")  # an empty region: as if not set
        role = Role(resolve(entry.role_arn, "role_arn"), entry.external_id, session) if (
            entry.role_arn) else None
        stage = "" if entry.version_id or entry.source == "ssm" else (
            entry.version_stage or "AWSCURRENT")
        return cls(entry.source, name, stage, entry.version_id, region, role)

    @property
    def label(self) -> str:
        """``secret 'prod/db'`` or ``parameter '/prod/db/password'``."""
        return f"{'parameter' if self.source == 'ssm' else 'secret'} {self.name!r}"

    def call(self, aws: Aws, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """An API call where this secret lives, as whom it is fetched."""
        return aws.call(service, operation, region=self.region or None, role=self.role,
                        **params)


@frozen(repr=False)
class Rendered:
    """A file's final bytes (redacted repr) and the entry it came from."""

    entry: Published
    version_id: str
    content: bytes

    def __repr__(self) -> str:
        return f"Rendered({self.entry.path!r}, {len(self.content)} bytes=<redacted>)"

    def item(self) -> generations.Item:
        """What :func:`agent.secrets.generations.publish` writes for it."""
        entry = self.entry
        return generations.Item(entry.path, self.content, entry.mode, entry.uid, entry.gid,
                                f"{entry.owner}:{entry.group}")


# -- what this launch keeps ------------------------------------------------------------------


@frozen()
class Kept:
    """A ``[[secrets.files]]`` entry this launch keeps: where it is configured, what it gets."""

    where: str  # "secrets.files[2]"
    entry: SecretFile
    ref: SecretRef

    @property
    def label(self) -> str:
        """Names it in errors: ``secret 'prod/db' (secrets.files[2] db.json)``."""
        return f"{self.ref.label} ({self.where}{' ' + self.entry.path if self.entry.path else ''})"


@frozen()
class Selection:
    """The entries of this launch: files and templates kept, the others and why not."""

    files: list[Kept]
    templates: list[tuple[str, SecretTemplate]]
    skipped: list[dict[str, str]]  # {"entry": "secrets.files[3]", "reason": "when ... is false"}

    @property
    def refs(self) -> list[SecretRef]:
        """The distinct references to fetch, in order."""
        return list(dict.fromkeys(kept.ref for kept in self.files))

    def outputs(self) -> list[Published]:
        """What is published: the kept files that publish, and the kept templates."""
        return [k.entry for k in self.files if k.entry.publish] + [t for _, t in self.templates]


def select(cfg: SecretsConfig, context: LaunchContext,
           machine: Callable[[], Mapping[str, Value]]) -> Selection:
    """The entries this launch keeps (their conditions hold), with what each fetches.

    ``machine`` gives the machine's facts, for conditions that read them. Raises
    ContextError (one line: the entry and the missing value) before anything is fetched.
    """

    facts: dict[str, Value] = {}
    skipped: list[dict[str, str]] = []

    def kept(where: str, entry: Published) -> bool:
        expression = entry.condition
        if expression is None:
            return True
        if expression.names & set(MACHINE_FACTS) and not facts:
            facts.update(machine())
        if context.holds(expression, facts, where):
            return True
        skipped.append({"entry": where, "reason": f"when = {entry.when!r} is false"})
        return False

    session = context.facts.get("instance_id") or "instance-boot-agent"
    files = [Kept(where, e, SecretRef.of(e, context, where, session))
             for where, e in labelled("secrets.files", cfg.files) if kept(where, e)]
    templates = [(where, t) for where, t in labelled("secrets.templates", cfg.templates)
                 if kept(where, t)]
    chosen = Selection(files, templates, skipped)
    named = [k for k in files if k.entry.name]
    problem = cfg.clashes([(w, e, False) for w, e in
                           [(k.where, k.entry) for k in files if k.entry.publish] + templates])
    if not problem and len({k.entry.name for k in named}) < len(named):
        problem = "two entries kept here have the same name"
    if problem:  # entries with conditions may share a path, not both where both hold
        raise SecretsError(f"secrets: {problem} (both of their conditions hold here)")
    return chosen


# -- fetching ---------------------------------------------------------------------------


def _fail(label: str, exc: BaseException, ref: SecretRef | None = None) -> SecretsError:
    """One line naming the secret for an AWS failure (never a value)."""
    if isinstance(exc, AgentError):
        return SecretsError(f"{label}: {exc}")
    if ref is not None and ref.role is not None and getattr(exc, "operation_name", "") == \
            "AssumeRole":
        return SecretsError(f"{label}: cannot assume role {ref.role.arn}: {describe(exc)} (the "
                            "instance role needs sts:AssumeRole on it, and the role's trust "
                            "policy must allow the instance role)")
    code = error_code(exc)
    if code in _MISSING:
        where = f" in {ref.region}" if ref is not None and ref.region else ""
        return SecretsError(f"{label} not found{where}")
    if is_access_denied(exc) or code == INVALID_CREDENTIALS:
        return SecretsError(f"{label}: access denied ({describe(exc)})")
    return SecretsError(f"{label}: {describe(exc)}")


def _fetch_secret(aws: Aws, ref: SecretRef) -> SecretValue:
    """``GetSecretValue`` for one secret version (by stage or id)."""
    selector: dict[str, Any] = ({"VersionId": ref.version_id} if ref.version_id
                                else {"VersionStage": ref.stage})
    try:
        reply = ref.call(aws, "secretsmanager", "get_secret_value", SecretId=ref.name,
                         **selector)
    except Exception as exc:
        raise _fail(ref.label, exc, ref) from None
    text, binary = reply.get("SecretString"), reply.get("SecretBinary")
    if not isinstance(text, str | None) or not isinstance(binary, bytes | None):
        raise SecretsError(f"{ref.label}: GetSecretValue answered a value of the wrong type")
    if text is None and binary is None:  # botocore reads an unparsable answer as {}
        raise SecretsError(f"{ref.label}: GetSecretValue answered no value (neither "
                           "SecretString nor SecretBinary: an empty or garbled answer)")
    return SecretValue(secret_id=ref.name, version_id=str(reply.get("VersionId", "")),
                       arn=str(reply.get("ARN", "")), text=text, binary=binary)


def _parameters(aws: Aws, refs: list[SecretRef], *, decrypt: bool
                ) -> dict[SecretRef, dict[str, Any]]:
    """``GetParameters`` in batches of 10 (per region and role); every name must exist."""
    found: dict[SecretRef, dict[str, Any]] = {}
    for start in range(0, len(refs), SSM_BATCH):
        batch = refs[start:start + SSM_BATCH]
        try:
            reply = batch[0].call(aws, "ssm", "get_parameters",
                                  Names=[r.name for r in batch], WithDecryption=decrypt)
        except Exception as exc:
            raise _fail(batch[0].label, exc, batch[0]) from None
        missing = reply.get("InvalidParameters") or []
        if missing:
            raise SecretsError(f"parameter {missing[0]!r} not found")
        by_name = {p.get("Name"): p for p in reply.get("Parameters", [])}
        by_name.update({p.get("ARN"): p for p in reply.get("Parameters", [])})
        for ref in batch:
            if ref.name not in by_name:
                raise SecretsError(f"{ref.label}: GetParameters did not answer it")
            if decrypt and not isinstance(by_name[ref.name].get("Value"), str):
                raise SecretsError(f"{ref.label}: GetParameters answered it without a value "
                                   "(an empty or garbled answer)")
            found[ref] = by_name[ref.name]
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


def _by_place(refs: Sequence[SecretRef]) -> dict[tuple[str, Role | None], list[SecretRef]]:
    """SSM references grouped by where they are fetched (a batch is one region and role)."""
    groups: dict[tuple[str, Role | None], list[SecretRef]] = {}
    for ref in refs:
        if ref.source == "ssm":
            groups.setdefault((ref.region, ref.role), []).append(ref)
    return groups


def fetch_all(aws: Aws, refs: Sequence[SecretRef]) -> dict[SecretRef, SecretValue]:
    """Every distinct secret, fetched at once.

    One ``GetSecretValue`` per distinct secret version, all in flight together. Not
    ``BatchGetSecretValue``: its account-wide 100 TPS quota is what a fleet scaling out
    would exhaust. SSM parameters come in ``GetParameters`` batches (with decryption).
    """
    wanted = list(dict.fromkeys(refs))
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_fetch_secret, aws, ref) for ref in wanted if ref.source != "ssm"}
    for place, group in _by_place(wanted).items():
        work[("ssm", *place)] = partial(_parameters, aws, group, decrypt=True)
    done = _concurrently(work)
    values: dict[SecretRef, SecretValue] = {}
    for ref in wanted:
        if ref.source != "ssm":
            values[ref] = done[ref]
            continue
        param = done[("ssm", ref.region, ref.role)][ref]
        values[ref] = SecretValue(secret_id=ref.name, version_id=str(param.get("Version", "")),
                                  arn=str(param.get("ARN", "")), text=param["Value"])
    return values


def _current_version(aws: Aws, ref: SecretRef) -> str:
    """The version id a secret's stage points at now (``DescribeSecret``: no value)."""
    try:
        reply = ref.call(aws, "secretsmanager", "describe_secret", SecretId=ref.name)
    except Exception as exc:
        raise _fail(ref.label, exc, ref) from None
    stages = reply.get("VersionIdsToStages")
    for version, labels in (stages if isinstance(stages, dict) else {}).items():
        if isinstance(labels, list) and ref.stage in labels:
            return str(version)
    raise SecretsError(f"{ref.label} has no version labelled {ref.stage}")


def current_versions(aws: Aws, refs: Sequence[SecretRef]) -> dict[SecretRef, str]:
    """What each secret's version is now, without fetching a value.

    ``DescribeSecret`` per staged secret (a fixed ``version_id`` never changes: no call);
    SSM versions from ``GetParameters`` without decryption.
    """
    wanted = list(dict.fromkeys(refs))
    versions = {ref: ref.version_id for ref in wanted if ref.version_id}
    staged = [ref for ref in wanted if ref.source != "ssm" and not ref.version_id]
    work: dict[Hashable, Callable[[], Any]] = {
        ref: partial(_current_version, aws, ref) for ref in staged}
    for place, group in _by_place(wanted).items():
        work[("ssm", *place)] = partial(_parameters, aws, group, decrypt=False)
    done = _concurrently(work)
    versions.update({ref: str(done[ref]) for ref in staged})
    versions.update({ref: str(done[("ssm", ref.region, ref.role)][ref].get("Version", ""))
                     for ref in wanted if ref.source == "ssm"})
    return versions


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


def dir_mode(outputs: Sequence[Published]) -> int:
    """0700, or 0711 (traverse, no listing) when a non-root owner must reach its file."""
    return 0o711 if any(f.uid != 0 or f.gid != 0 for f in outputs) else 0o700


# -- the published set ------------------------------------------------------------------


def _index(where: str) -> int:
    """The position in its list of ``secrets.files[3]``."""
    return int(where.rpartition("[")[2].rstrip("]"))


class Secrets:
    """The secrets of this boot: published by the boot, refreshed by the daemon."""

    def __init__(self, cfg: SecretsConfig, rec: Recorder) -> None:
        self.cfg = cfg
        self.rec = rec
        self.root = Path(cfg.dir)
        self.selection: Selection | None = None  # what this launch keeps
        self.context: LaunchContext | None = None
        self.versions: dict[SecretRef, str] = {}  # what is published now
        self.published = False
        # after a refresh that reloaded units: called with its (secret, unit) pairs
        self.on_reload: Callable[[list[tuple[str, str]]], None] | None = None

    def carried(self) -> dict[str, Any] | None:
        """What a later process needs to refresh this published set (:meth:`resume`): the
        entries kept and what each fetches, the versions published. No value; None when
        nothing is published."""
        if not self.published or self.selection is None:
            return None
        files = []
        for kept in self.selection.files:
            ref = kept.ref
            role = None if ref.role is None else [ref.role.arn, ref.role.external_id,
                                                  ref.role.session_name]
            files.append({"index": _index(kept.where),
                          "ref": [ref.source, ref.name, ref.stage, ref.version_id, ref.region,
                                  role],
                          "version": self.versions.get(ref, "")})
        return {"files": files, "skipped": self.selection.skipped,
                "templates": [_index(w) for w, _ in self.selection.templates]}

    @classmethod
    def resume(cls, cfg: SecretsConfig, rec: Recorder, carried: dict[str, Any],
               context: LaunchContext) -> Secrets:
        """The published set :meth:`carried` described, ready to :meth:`refresh`."""
        secrets = cls(cfg, rec)
        kept: list[Kept] = []
        for item in carried["files"]:
            source, name, stage, version_id, region, role = item["ref"]
            ref = SecretRef(source, name, stage, version_id, region,
                            None if role is None else Role(*role))
            where = f"secrets.files[{item['index']}]"
            kept.append(Kept(where, cfg.files[item["index"]], ref))
            secrets.versions[ref] = item["version"]
        templates = [(f"secrets.templates[{i}]", cfg.templates[i]) for i in carried["templates"]]
        secrets.selection = Selection(kept, templates, list(carried["skipped"]))
        secrets.context = context
        secrets.published = True
        return secrets

    def publish(self, aws: Aws, context: LaunchContext,
                machine: Callable[[], Mapping[str, Value]], *, warm: bool,
                warm_pool_secrets: bool) -> tuple[PhaseState, str]:
        """The boot's secrets phase: select, fetch every secret, render, publish in one switch."""
        cfg = self.cfg
        if not cfg.files and not cfg.templates:
            return PhaseState.SKIPPED, "no secrets configured"
        if warm and not warm_pool_secrets:
            return PhaseState.SKIPPED, ("warm pool: published when the instance goes "
                                        "InService (lifecycle.warm_pool_secrets = false)")
        self.context = context
        self.selection = selection = select(cfg, context, machine)
        self.rec.skipped("secrets", selection.skipped)
        if cfg.mount:
            self._warn(mount(self.root, cfg.mount_size))
        check_storage(self.root, cfg.require_tmpfs)
        values = fetch_all(aws, selection.refs)
        rendered = self._render(selection, values, {})
        publication = generations.publish(self.root, [r.item() for r in rendered],
                                          dir_mode(selection.outputs()))
        self.published = True
        self.versions = {ref: value.version_id for ref, value in values.items()}
        now = utc_now()
        self.rec.update(secrets=self._records(dict.fromkeys(
            [k.where for k in selection.files] + [w for w, _ in selection.templates], now)))
        for warning in handoff.write_credentials(cfg, selection.outputs()):
            self._warn(f"secrets: {warning}")
        self._after_change(publication)
        kept = len(selection.files) + len(selection.templates)
        skipped = f", {len(selection.skipped)} skipped" if selection.skipped else ""
        return PhaseState.DONE, (f"{len(rendered)} files from {len(values)} secrets published "
                                 f"({publication.generation.lstrip('.')}; {kept} entries"
                                 f"{skipped})")

    def refresh(self, aws: Aws) -> generations.Publication | None:
        """Publish a new generation if a secret's version moved (the daemon's refresh).

        Versions are checked without fetching values; only secrets whose version changed (or
        whose file is missing), and the unpublished ones a changed template needs, are
        fetched; the other files are carried over byte for byte. Nothing is published when
        no file's content would change.
        """
        selection = self.selection
        assert selection is not None
        versions = current_versions(aws, selection.refs)
        current = generations.contents(generations.current(self.root),
                                       [e.path for e in selection.outputs()])
        stale = {k.ref for k in selection.files if self.versions.get(k.ref) != versions[k.ref]
                 or (k.entry.publish and k.entry.path not in current)}
        if not stale:
            self.versions = versions
            return None
        stale |= {k.ref for k in selection.files if not k.entry.publish}  # templates need them
        values = fetch_all(aws, [ref for ref in selection.refs if ref in stale])
        carried = {k.entry.path: current[k.entry.path] for k in selection.files
                   if k.ref not in stale and k.entry.publish and k.entry.path in current}
        rendered = self._render(selection, values, carried, versions)
        versions.update({ref: value.version_id for ref, value in values.items()})
        if all(current.get(r.entry.path) == r.content for r in rendered):
            self.versions = versions
            return None
        publication = generations.publish(self.root, [r.item() for r in rendered],
                                          dir_mode(selection.outputs()))
        self.versions = versions
        changed = set(publication.changed) | set(publication.added)
        fetched = {r.get("entry", ""): r.get("fetched_at", "")
                   for r in self.rec.doc.get("secrets") or []}
        now = utc_now()
        fetched.update({w: now for w, e in self._entries() if e.path in changed})
        self.rec.update(secrets=self._records(fetched))
        self.rec.clear_warning(handoff.HOOK_FAILED)
        reloaded = self._after_change(publication)
        if reloaded and self.on_reload is not None:
            self.on_reload(reloaded)  # the readiness gate again, for those units
        return publication

    def _render(self, selection: Selection, values: Mapping[SecretRef, SecretValue],
                carried: Mapping[str, bytes],
                versions: Mapping[SecretRef, str] | None = None) -> list[Rendered]:
        """Every published file: the kept files (or their bytes carried over), the templates."""
        rendered: list[Rendered] = []
        variables: dict[str, bytes | str] = {}
        for kept in selection.files:
            entry = kept.entry
            if entry.path in carried and kept.ref not in values:
                content = carried[entry.path]
                version = (versions or {}).get(kept.ref, "")
            else:
                content = render.render(entry, values[kept.ref], kept.label)
                version = values[kept.ref].version_id
            if entry.name:
                variables[entry.name] = content
            if entry.publish:
                rendered.append(Rendered(entry, version, content))
        for where, template in selection.templates:
            rendered.append(Rendered(template, "", self._template(where, template, variables)))
        return rendered

    def _template(self, where: str, template: SecretTemplate,
                  variables: Mapping[str, bytes | str]) -> bytes:
        label = f"{where} {template.source}"
        try:
            text = read_template(template.source)
        except ValueError as exc:
            raise SecretsError(f"{label}: {exc}") from None
        facts: dict[str, bytes | str] = dict(self.context.facts if self.context else {})
        if "group" in render.template_variables(text, label) and self.context is not None:
            facts["group"] = self.context.group()
        return render.render_template(text, {**facts, **variables}, label)

    def _entries(self) -> list[tuple[str, Published]]:
        assert self.selection is not None
        return [(k.where, k.entry) for k in self.selection.files] + list(
            self.selection.templates)

    def _records(self, fetched_at: Mapping[str, str]) -> list[dict[str, Any]]:
        """What state.json keeps of each kept entry: ids resolved, path, version; no value."""
        assert self.selection is not None
        records: list[dict[str, Any]] = []
        for kept in self.selection.files:
            entry, ref = kept.entry, kept.ref
            records.append({
                "entry": kept.where, "secret_id": ref.name, "source": ref.source,
                "configured": entry.secret_id or entry.parameter,
                "path": str(self.root / entry.path) if entry.publish else "",
                "version_id": self.versions.get(ref, ""),
                "region": ref.region or "", "role": ref.role.arn if ref.role else "",
                "fetched_at": fetched_at.get(kept.where, "")})
        records += [{"entry": where, "template": template.source,
                     "path": str(self.root / template.path),
                     "fetched_at": fetched_at.get(where, "")}
                    for where, template in self.selection.templates]
        return records

    def _after_change(self, publication: generations.Publication) -> list[tuple[str, str]]:
        """Reloads and hooks for the changed files; the (secret, unit) pairs reloaded."""
        assert self.selection is not None
        changed = set(publication.changed)
        about = {k.entry.path: handoff.About(k.ref.name, k.ref.source,
                                             self.versions.get(k.ref, ""))
                 for k in self.selection.files if k.entry.publish}
        about.update({t.path: handoff.About(t.source, "template", "")
                      for _, t in self.selection.templates})
        outputs = [e for e in self.selection.outputs() if e.path in changed]
        for problem in handoff.after_change(self.cfg, outputs, about):
            self._warn(f"{handoff.HOOK_FAILED} {problem}")
        return [(about[e.path].secret_id, unit) for e in outputs for unit in e.reload_units]

    def _warn(self, message: str) -> None:
        if message:
            self.rec.warn(message)
