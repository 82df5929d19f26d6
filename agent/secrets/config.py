"""The ``[secrets]`` section: where the files go, which secrets and templates they hold.

``secret_id``, ``parameter``, ``role_arn`` and ``region`` may hold placeholders of the
launch context (``{region}``, ``{tag:Environment|staging}``...); every entry may have a
``when`` condition. Both are checked here, at load (:mod:`agent.schema.placeholders`); they are
resolved at boot (:mod:`agent.instance.context`).
"""

from __future__ import annotations

import dataclasses
import grp
import pwd
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from agent.errors import closest
from agent.frozen import frozen
from agent.readfile import TEMPLATE_LIMIT, Unreadable, read_regular, template_text
from agent.schema import placeholders
from agent.schema.entries import clash, labelled
from agent.schema.expr import Expression, template_names
from agent.schema.fields import (
    SECTION,
    AbsoluteDir,
    AbsoluteFile,
    Account,
    Bounds,
    Check,
    Commands,
    Condition,
    Mode,
    Text,
    UnitName,
    check_path,
    span,
)
from agent.schema.observed import file_digest, observe

CREDENTIAL_NAME = r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,255}\Z"  # as systemd; not '.' or '..'
VARIABLE = r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z"  # a template variable (string.Template)
TEMPLATE_FACTS = placeholders.PLACEHOLDER_FACTS  # what a template may use besides the secrets
ROLE_ARN = r"arn:aws[a-z-]*:iam::(\d{12}|\{[^{}]+\}):role/\S+\Z"


def _lookup(name: str, kind: Literal["owner", "group"]) -> int:
    """Resolve a user or group name (or number) to its id, now, so typos fail at load."""
    if name.isdigit():
        return int(name)
    try:
        found = pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no such {'user' if kind == 'owner' else 'group'} {name!r}") from None
    observe(kind, name, found)
    return found


def _secret_path(value: str) -> str:
    """A relative file name inside secrets.dir: no '.', '..', absolute or hidden top."""
    check_path(value)
    pure = PurePosixPath(value)
    if not value or value.endswith("/") or pure.is_absolute():
        raise ValueError(f"{value!r} must be a relative file name inside secrets.dir")
    if any(part in ("..", ".") for part in pure.parts):
        raise ValueError(f"{value!r} may not contain '.' or '..' (it must stay in secrets.dir)")
    if pure.parts[0].startswith("."):
        raise ValueError(f"{value!r}: names starting with '.' are reserved for the agent")
    return str(pure)


def _placeholders(value: str) -> str:
    placeholders.placeholders(value)  # ValueError naming the placeholder or the brace
    return value


def _relative_inside(value: str) -> str:
    return value and _secret_path(value)


def _variable(value: str) -> str:
    if value and not re.match(VARIABLE, value):
        raise ValueError(f"{value!r} is not a template variable name (letters, digits, '_')")
    if value in TEMPLATE_FACTS:
        raise ValueError(f"{value!r} is a launch fact's name: templates would not know "
                         "which one is meant")
    return value


Resolvable = Annotated[Text, Check(_placeholders)]
"""Text that may hold placeholders of the launch context."""


def _condition(when: str) -> Expression | None:
    return placeholders.condition(when) if when else None


@frozen(kw_only=True)
class Published:
    """What a published file has, whether it holds one secret or a rendered template."""

    __pydantic_config__ = SECTION

    path: Annotated[str, Check(_relative_inside)] = ""  # inside secrets.dir
    mode: Mode = 0o400
    owner: Account = "root"
    group: Account = "root"
    units: list[UnitName] = dataclasses.field(default_factory=list)  # get it as a credential
    credential: Text = ""  # its credential name; default: the file's base name
    reload_units: list[UnitName] = dataclasses.field(default_factory=list)  # after a change
    on_change: Commands = dataclasses.field(default_factory=list)  # argv, after a change
    when: Condition = ""  # the entry is kept only where this is true
    uid: int = dataclasses.field(init=False, default=0)  # the owner's, resolved at load
    gid: int = dataclasses.field(init=False, default=0)  # the group's, resolved at load
    condition: Expression | None = dataclasses.field(
        init=False, default=None, repr=False, compare=False)  # ``when``, compiled

    @property
    def credential_name(self) -> str:
        """The systemd credential name services see in $CREDENTIALS_DIRECTORY."""
        return self.credential or PurePosixPath(self.path).name

    def _published(self, needs_path: bool = True) -> None:
        if needs_path and not self.path:
            raise ValueError("path: the file name inside secrets.dir is required")
        if self.units and self.path.endswith((" ", "\\")):
            raise ValueError(f"path {self.path!r} ends with {self.path[-1]!r}, which systemd "
                             "would drop from LoadCredential=: rename it")
        if self.units and not re.match(CREDENTIAL_NAME, self.credential_name):
            raise ValueError(f"credential name {self.credential_name!r} is not valid "
                             "(1 to 255 letters, digits, '_', '.', '-'; not '.' or '..'): "
                             "set credential")
        object.__setattr__(self, "uid", _lookup(self.owner, "owner"))
        object.__setattr__(self, "gid", _lookup(self.group, "group"))
        object.__setattr__(self, "condition", _condition(self.when))


@frozen(kw_only=True)
class SecretFile(Published):
    """One ``[[secrets.files]]`` entry: a secret rendered into one file (or a template's)."""

    source: Literal["secretsmanager", "ssm"] = "secretsmanager"
    secret_id: Resolvable = ""  # Secrets Manager: name or ARN; placeholders allowed
    parameter: Resolvable = ""  # SSM Parameter Store: a (SecureString) parameter name or ARN
    version_stage: Text = ""  # Secrets Manager: default AWSCURRENT
    version_id: Text = ""  # Secrets Manager: a fixed version instead of a stage
    key: Text = ""
    format: Literal["raw", "env", "json"] = "raw"
    name: Annotated[str, Check(_variable)] = ""  # a template variable: the rendered value
    publish: bool = True  # false: the entry only feeds templates
    role_arn: Resolvable = ""  # fetch with credentials of this role (sts:AssumeRole)
    external_id: Text = ""  # with role_arn: the ExternalId its trust policy asks for
    region: Resolvable = ""  # the region to fetch from (default: an ARN's, else aws.region's)

    def __post_init__(self) -> None:
        if self.source == "secretsmanager":
            if not self.secret_id or self.parameter:
                raise ValueError("a secretsmanager entry needs secret_id (and no parameter)")
            if self.version_stage and self.version_id:
                raise ValueError("give version_stage or version_id, not both")
        elif not self.parameter or self.secret_id or self.version_stage or self.version_id:
            raise ValueError("an ssm entry needs parameter (and no secret_id or version)")
        if self.role_arn and not re.match(ROLE_ARN, self.role_arn):
            raise ValueError(f"role_arn {self.role_arn!r} is not a role ARN such as "
                             "arn:aws:iam::123456789012:role/name")
        if self.external_id and not self.role_arn:
            raise ValueError("external_id goes with role_arn")
        if not self.publish:
            if not self.name:
                raise ValueError("publish = false: give the entry a name (a template variable)")
            if self.path or self.units or self.on_change or self.reload_units:
                raise ValueError("publish = false: no path, units or hooks (it only feeds "
                                 "templates)")
        self._published(needs_path=self.publish)

    @property
    def label(self) -> str:
        """What it fetches, as written: ``secret '{tag:Environment}/db'``."""
        kind = "parameter" if self.source == "ssm" else "secret"
        return f"{kind} {self.secret_id or self.parameter!r}"


@frozen(kw_only=True)
class SecretTemplate(Published):
    """One ``[[secrets.templates]]`` entry: a file combining secrets and launch facts."""

    source: AbsoluteFile  # in the image: ${NAME} of a secrets entry or a launch fact; $$ is $

    def __post_init__(self) -> None:
        self._published()


@frozen()
class SecretsConfig:
    """``[secrets]``: where the files go and which secrets and templates they hold."""

    __pydantic_config__ = SECTION

    dir: AbsoluteDir = "/run/agent/secrets"
    require_tmpfs: bool = True
    refresh_seconds: Annotated[float, span(1, 7 * 86400)] = 3600.0
    mount: bool = False  # mount a private tmpfs (noswap where supported) at dir
    mount_size: Annotated[str, Bounds(pattern=r"^[1-9][0-9]{0,8}[kmg]?$")] = "16m"
    hook_timeout_seconds: Annotated[float, span(1, 3600)] = 30.0
    unit_dir: AbsoluteDir = "/run/systemd/system"  # where credential drop-ins go
    files: list[SecretFile] = dataclasses.field(default_factory=list)
    templates: list[SecretTemplate] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        problem = self.clashes([(w, e, bool(e.when)) for w, e in self.outputs()])
        if problem:
            raise ValueError(problem)
        names: dict[str, tuple[str, bool]] = {}
        for where, entry in labelled("files", self.files):
            first = names.get(entry.name)
            if entry.name and first is not None and not (entry.when and first[1]):
                raise ValueError(f"{where} and {first[0]} are both named {entry.name!r}")
            names.setdefault(entry.name, (where, bool(entry.when)))
        for where, template in labelled("templates", self.templates):
            problem = source_problem(template.source, set(names) - {""})
            if problem:
                raise ValueError(f"{where} {template.source}: {problem}")

    def outputs(self) -> list[tuple[str, Published]]:
        """Every published entry with where it is configured (``files[2]``, ``templates[0]``)."""
        found: list[tuple[str, Published]] = [
            (where, e) for where, e in labelled("files", self.files) if e.publish]
        return found + labelled("templates", self.templates)

    @staticmethod
    def clashes(outputs: list[tuple[str, Any, bool]]) -> str:
        """Why these published entries ``(where, entry, conditional)`` cannot all be: one path
        written twice, a file where a directory is, one credential name given twice."""
        problem = clash([(where, entry.path, conditional) for where, entry, conditional in
                         outputs])
        if problem:
            return problem
        return clash([(where, f"{unit} a credential named {entry.credential_name!r}",
                       conditional) for where, entry, conditional in outputs
                      for unit in entry.units], nested=False, given=True)

    def tag_uses(self) -> list[tuple[str, str]]:
        """(key, tag) for each tag a placeholder or a ``when`` of the section reads."""
        found = [(f"secrets.files[{i}].{key}", p.key) for i, e in enumerate(self.files)
                 for key in ("secret_id", "parameter", "role_arn", "region")
                 for p in placeholders.placeholders(getattr(e, key)) if p.is_tag]
        entries: list[tuple[str, Published]] = [
            *((f"files[{i}]", e) for i, e in enumerate(self.files)),
            *((f"templates[{i}]", e) for i, e in enumerate(self.templates))]
        return found + [(f"secrets.{where}.when", tag) for where, e in entries
                        if e.condition is not None for tag in sorted(e.condition.tags)]


def source_problem(source: str, names: set[str]) -> str:
    """Why a secrets template's source cannot render with these entry names ('' when it can,
    or when its source is absent: then the boot checks it)."""
    try:
        raw = read_regular(source, TEMPLATE_LIMIT)
    except FileNotFoundError:
        observe("file", source, None)
        return ""
    except Unreadable as exc:  # a FIFO, a device, too large: never opened for long
        return str(exc)
    observe("file", source, file_digest(raw))
    try:
        used = template_names(template_text(raw))
    except ValueError as exc:  # not UTF-8, or an invalid placeholder
        return str(exc)
    known = names | set(TEMPLATE_FACTS)
    for name in used:
        if name not in known:
            close = closest(name, known)
            hint = f" (did you mean ${{{close[0]}}}?)" if close else ""
            return (f"unknown variable ${{{name}}}{hint}: a template uses the names of "
                    f"secrets entries and {', '.join(TEMPLATE_FACTS)}")
    return ""
