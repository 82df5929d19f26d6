"""The ``[secrets]`` section: where the files go and which secrets they hold."""

from __future__ import annotations

import grp
import pwd
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agent.fields import (
    AbsoluteDir,
    Account,
    Commands,
    Mode,
    Section,
    Text,
    UnitName,
    check_path,
    span,
)

CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}\Z")  # systemd credential names


def _lookup(name: str, kind: Literal["owner", "group"]) -> int:
    """Resolve a user or group name (or number) to its id, now, so typos fail at load."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no such {'user' if kind == 'owner' else 'group'} {name!r}") from None


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


class SecretFile(Section):
    """One ``[[secrets.files]]`` entry: a secret rendered into one file."""

    source: Literal["secretsmanager", "ssm"] = "secretsmanager"
    secret_id: Text = ""  # Secrets Manager: name or ARN
    parameter: Text = ""  # SSM Parameter Store: a (SecureString) parameter name
    version_stage: Text = ""  # Secrets Manager: default AWSCURRENT
    version_id: Text = ""  # Secrets Manager: a fixed version instead of a stage
    path: str
    key: Text = ""
    format: Literal["raw", "env", "json"] = "raw"
    mode: Mode = 0o400
    owner: Account = "root"
    group: Account = "root"
    units: list[UnitName] = []  # systemd services that get the file as a credential
    credential: Text = ""  # its credential name; default: the file's base name
    reload_units: list[UnitName] = []  # try-reload-or-restart after the content changed
    on_change: Commands = []  # commands (argv, no shell) after the content changed
    _uid: int = PrivateAttr(default=0)
    _gid: int = PrivateAttr(default=0)

    @property
    def uid(self) -> int:
        """The owner's uid, resolved at load."""
        return self._uid

    @property
    def gid(self) -> int:
        """The group's gid, resolved at load."""
        return self._gid

    @property
    def name(self) -> str:
        """What is fetched: the secret id or the parameter name."""
        return self.secret_id or self.parameter

    @property
    def credential_name(self) -> str:
        """The systemd credential name services see in $CREDENTIALS_DIRECTORY."""
        return self.credential or PurePosixPath(self.path).name

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        return _secret_path(value)

    @model_validator(mode="after")
    def _consistent(self) -> SecretFile:
        if self.source == "secretsmanager":
            if not self.secret_id or self.parameter:
                raise ValueError("a secretsmanager entry needs secret_id (and no parameter)")
            if self.version_stage and self.version_id:
                raise ValueError("give version_stage or version_id, not both")
        elif not self.parameter or self.secret_id or self.version_stage or self.version_id:
            raise ValueError("an ssm entry needs parameter (and no secret_id or version)")
        if self.units and not CREDENTIAL_NAME.match(self.credential_name):
            raise ValueError(f"credential name {self.credential_name!r} is not valid "
                             "(letters, digits, '_', '.', '-'): set credential")
        self._uid = _lookup(self.owner, "owner")
        self._gid = _lookup(self.group, "group")
        return self


class SecretsConfig(Section):
    """``[secrets]``: where the files go and which secrets they hold."""

    dir: AbsoluteDir = "/run/agent/secrets"
    require_tmpfs: bool = True
    refresh_seconds: Annotated[float, span(1, 7 * 86400)] = 3600.0
    mount: bool = False  # mount a private tmpfs (noswap where supported) at dir
    mount_size: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,8}[kmg]?$")] = "16m"
    hook_timeout_seconds: Annotated[float, span(1, 3600)] = 30.0
    unit_dir: AbsoluteDir = "/run/systemd/system"  # where credential drop-ins go
    files: list[SecretFile] = []

    @model_validator(mode="after")
    def _distinct_paths(self) -> SecretsConfig:
        seen: dict[str, int] = {}
        credentials: dict[tuple[str, str], int] = {}
        for index, entry in enumerate(self.files):
            if entry.path in seen:
                raise ValueError(
                    f"files[{index}] and files[{seen[entry.path]}] both write {entry.path!r}"
                )
            seen[entry.path] = index
            for other in seen:
                if other != entry.path and (
                    other.startswith(entry.path + "/") or entry.path.startswith(other + "/")
                ):
                    raise ValueError(f"{entry.path!r} and {other!r} collide (file vs directory)")
            for unit in entry.units:
                key = (unit, entry.credential_name)
                if key in credentials:
                    raise ValueError(f"files[{index}] and files[{credentials[key]}] both give "
                                     f"{unit} a credential named {entry.credential_name!r}")
                credentials[key] = index
        return self
