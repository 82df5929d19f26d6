"""Configuration: a TOML file, overridden per key by ``AGENT_*`` environment variables.

The file is ``--config PATH``, else ``$AGENT_CONFIG``, else ``/etc/agent/agent.toml`` (which
may be absent: defaults apply). Unknown keys are errors; every error becomes one
:class:`~agent.errors.ConfigError` line naming the file (or variable) and the key.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import re
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent import envfile, profiles
from agent.errors import ConfigError
from agent.expr import FACTS, ExprError, Value, compile_expression, render_value, template_names

DEFAULT_PATH = "/etc/agent/agent.toml"
ENV_PREFIX = "AGENT_"

PositiveSeconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImdsConfig(_Section):
    """``[imds]``: where and how patiently to read instance metadata."""

    endpoint: str = "http://169.254.169.254"
    token_ttl_seconds: Annotated[int, Field(ge=1, le=21600)] = 21600
    timeout_seconds: PositiveSeconds = 2.0
    max_wait_seconds: PositiveSeconds = 120.0

    @field_validator("endpoint")
    @classmethod
    def _http_only(cls, value: str) -> str:
        if not value.startswith("http://") or len(value) <= len("http://"):
            raise ValueError("must be an http:// URL (IMDS speaks plain HTTP)")
        return value.rstrip("/")


class AwsConfig(_Section):
    """``[aws]``: region, endpoint and the retry budget of each call."""

    region: str = ""
    endpoint_url: str = ""
    max_wait_seconds: PositiveSeconds = 300.0


def _parse_mode(value: object) -> int:
    """Accept ``"0400"``, ``"400"`` or a TOML integer (``0o400``); refuse world-writable."""
    if isinstance(value, bool):
        raise ValueError("must be an octal mode such as \"0400\"")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and value.removeprefix("0o").isdigit() and all(
        c in "01234567" for c in value.removeprefix("0o")
    ):
        mode = int(value.removeprefix("0o"), 8)
    else:
        raise ValueError("must be an octal mode such as \"0400\"")
    if mode > 0o777:
        raise ValueError(f"{oct(mode)} has bits beyond 0777 (no setuid, setgid or sticky)")
    if mode & 0o002:
        raise ValueError(f"{mode:04o} lets any user write the secret")
    return mode


def _lookup(name: str | int, kind: Literal["owner", "group"]) -> int:
    """Resolve a user or group name (or number) to its id, now, so typos fail at load."""
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if kind == "owner" else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no such {'user' if kind == 'owner' else 'group'} {name!r}") from None


UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(service|socket|target|timer|path|mount)\Z")
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}\Z")  # systemd credential names


def _unit_names(value: list[str]) -> list[str]:
    """Every entry a unit name such as ``app.service``."""
    for unit in value:
        if not UNIT_NAME.match(unit):
            raise ValueError(f"{unit!r} is not a unit name such as \"app.service\"")
    return value


def _argv(value: list[str], what: str) -> list[str]:
    """An argv list starting with an absolute path (run without a shell); [] allowed."""
    if value and not value[0].startswith("/"):
        raise ValueError(f"{value!r}: {what} is an argv list starting with an absolute path "
                         "(no shell)")
    return value


def _commands(value: list[list[str]], what: str) -> list[list[str]]:
    """Several argv lists, none empty."""
    for argv in value:
        if not argv:
            raise ValueError(f"{what}: an empty command")
        _argv(argv, what)
    return value


class SecretFile(_Section):
    """One ``[[secrets.files]]`` entry: a secret rendered into one file."""

    source: Literal["secretsmanager", "ssm"] = "secretsmanager"
    secret_id: str = ""  # Secrets Manager: name or ARN
    parameter: str = ""  # SSM Parameter Store: a (SecureString) parameter name
    version_stage: str = ""  # Secrets Manager: default AWSCURRENT
    version_id: str = ""  # Secrets Manager: a fixed version instead of a stage
    path: str
    key: str = ""
    format: Literal["raw", "env", "json"] = "raw"
    mode: int = 0o400
    owner: str = "root"
    group: str = "root"
    units: list[str] = []  # systemd services that get the file as a credential
    credential: str = ""  # its credential name; default: the file's base name
    reload_units: list[str] = []  # try-reload-or-restart after the content changed
    on_change: list[list[str]] = []  # commands (argv, no shell) after the content changed
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
    def ref(self) -> tuple[str, str, str, str]:
        """Entries with the same ref share one fetch."""
        stage = "" if self.version_id or self.source == "ssm" else (
            self.version_stage or "AWSCURRENT")
        return (self.source, self.name, stage, self.version_id)

    @property
    def label(self) -> str:
        """``secret 'prod/db'`` or ``parameter '/prod/db/password'``."""
        return f"{'parameter' if self.source == 'ssm' else 'secret'} {self.name!r}"

    @property
    def credential_name(self) -> str:
        """The systemd credential name services see in $CREDENTIALS_DIRECTORY."""
        return self.credential or PurePosixPath(self.path).name

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if not value or value.endswith("/") or pure.is_absolute():
            raise ValueError(f"{value!r} must be a relative file name inside secrets.dir")
        if any(part in ("..", ".") for part in pure.parts) or "\0" in value:
            raise ValueError(f"{value!r} may not contain '.' or '..' (it must stay in secrets.dir)")
        if pure.parts[0].startswith("."):
            raise ValueError(f"{value!r}: names starting with '.' are reserved for the agent")
        return str(pure)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> int:
        return _parse_mode(value)

    @field_validator("units", "reload_units")
    @classmethod
    def _units(cls, value: list[str]) -> list[str]:
        return _unit_names(value)

    @field_validator("on_change")
    @classmethod
    def _on_change(cls, value: list[list[str]]) -> list[list[str]]:
        return _commands(value, "an on_change command")

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


class SecretsConfig(_Section):
    """``[secrets]``: where the files go and which secrets they hold."""

    dir: str = "/run/agent/secrets"
    require_tmpfs: bool = True
    refresh_seconds: PositiveSeconds = 3600.0
    mount: bool = False  # mount a private tmpfs (noswap where supported) at dir
    mount_size: Annotated[str, Field(pattern=r"^[0-9]+[kmg]?$")] = "16m"
    hook_timeout_seconds: PositiveSeconds = 30.0
    unit_dir: str = "/run/systemd/system"  # where credential drop-ins go
    files: list[SecretFile] = []

    @field_validator("dir", "unit_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return os.path.normpath(value)

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


class TuningFile(_Section):
    """One ``[[tuning.files]]`` entry: computed values written as an env or JSON file."""

    path: str
    format: Literal["env", "json"] = "env"
    mode: int = 0o644
    values: dict[str, str] = {}

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError("must be an absolute file path")
        return os.path.normpath(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> int:
        return _parse_mode(value)

    @field_validator("values")
    @classmethod
    def _expressions(cls, values: dict[str, str]) -> dict[str, str]:
        for name, text in values.items():
            if not name.isidentifier() or not name.isascii():
                raise ValueError(f"{name!r} is not a valid variable name")
            try:
                compile_expression(text)
            except ExprError as exc:
                raise ValueError(f"{name} = {text!r}: {exc}") from None
        return values


DROPIN_NAME = "60-agent-tuning.conf"  # [[tuning.dropins]]: <unit_dir>/<unit>.d/<this>


def _output_path(value: str) -> str:
    if not value.startswith("/") or value.endswith("/"):
        raise ValueError("must be an absolute file path")
    return os.path.normpath(value)


class TuningProfile(_Section):
    """One ``[[tuning.profiles]]`` entry: a program's well-known values (agent.profiles)."""

    use: str
    path: str = ""  # "" : not written (the values are still there for templates and plan)
    format: Literal["env", "json"] = "env"
    mode: int = 0o644
    overrides: dict[str, str] = {}  # value name -> expression replacing the profile's formula

    @field_validator("use")
    @classmethod
    def _known(cls, value: str) -> str:
        profiles.check_profile(value)
        return value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return value and _output_path(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> int:
        return _parse_mode(value)

    @model_validator(mode="after")
    def _overrides(self) -> TuningProfile:
        profiles.compile_profile(self.use, self.overrides)
        return self


class TuningDropin(_Section):
    """One ``[[tuning.dropins]]`` entry: ``[Service]`` settings of a unit, as a drop-in."""

    unit: str
    service: dict[str, str | dict[str, str]] = {}  # key -> expression; Environment: a table

    @field_validator("unit")
    @classmethod
    def _service(cls, value: str) -> str:
        if not UNIT_NAME.match(value) or not value.endswith(".service"):
            raise ValueError(f"{value!r} is not a service name such as \"app.service\"")
        return value

    @field_validator("service")
    @classmethod
    def _keys(cls, values: dict[str, str | dict[str, str]]) -> dict[str, str | dict[str, str]]:
        for key, text in values.items():
            profiles.check_service_key(key)
            if key == profiles.ENVIRONMENT:
                if not isinstance(text, dict):
                    raise ValueError(f"{key} is a table of NAME = expression, as in "
                                     f"[tuning.dropins.service.{key}]")
                for name, expr in text.items():
                    if not envfile.NAME.match(name):
                        raise ValueError(f"{key}: {name!r} is not a valid variable name")
                    _constant(f"{key}.{name}", expr, _environment_value)
            elif isinstance(text, dict):
                raise ValueError(f"{key} takes an expression, not a table")
            else:
                _constant(key, text, profiles.SERVICE_KEYS[key].render,
                          number=not profiles.SERVICE_KEYS[key].infinity)
        return values


def _environment_value(value: Value) -> str:
    return profiles.environment_word("X", render_value(value))


def _constant(name: str, text: str, check: Callable[[Value], object], *,
              number: bool = False) -> None:
    """Compile; a value that needs a number must not be a string; check a constant now."""
    try:
        expression = compile_expression(text)
        if number and expression.kind == "string":
            raise ExprError("needs a number, not a string")
        if not expression.names:
            check(expression.evaluate({}))
    except (ExprError, ValueError) as exc:
        raise ValueError(f"{name} = {text!r}: {exc}") from None


class TuningTemplate(_Section):
    """One ``[[tuning.templates]]`` entry: ``${NAME}`` substitution into a runtime file."""

    source: str
    path: str
    mode: int = 0o644

    @field_validator("source", "path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _output_path(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> int:
        return _parse_mode(value)


SYSCTL_PART = re.compile(r"[A-Za-z0-9_@:+/-]+\Z")


class TuningConfig(_Section):
    """``[tuning]``: outputs computed from the instance's size."""

    files: list[TuningFile] = []
    profiles: list[TuningProfile] = []
    dropins: list[TuningDropin] = []
    templates: list[TuningTemplate] = []
    sysctl: dict[str, str] = {}  # "net.core.somaxconn" -> expression
    unit_dir: str = "/run/systemd/system"  # where drop-ins go
    history_file: str = "/var/lib/agent/instance.json"  # the type at the previous boot; "": off

    @property
    def has_outputs(self) -> bool:
        """Whether anything is configured to be written."""
        return bool(self.files or self.profiles or self.dropins or self.templates or self.sysctl)

    def dropin_path(self, unit: str) -> str:
        """Where the drop-in of ``unit`` goes."""
        return os.path.join(self.unit_dir, f"{unit}.d", DROPIN_NAME)

    @field_validator("unit_dir")
    @classmethod
    def _unit_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return os.path.normpath(value)

    @field_validator("history_file")
    @classmethod
    def _history(cls, value: str) -> str:
        return value and _output_path(value)

    @field_validator("sysctl")
    @classmethod
    def _sysctl(cls, values: dict[str, str]) -> dict[str, str]:
        for key, text in values.items():
            parts = key.split(".")
            if len(parts) < 2 or not all(SYSCTL_PART.match(p) and p.replace("/", ".") not in (
                    ".", "..") and not p.startswith("/") for p in parts):
                raise ValueError(f"{key!r} is not a kernel setting name such as "
                                 "\"net.core.somaxconn\"")
            _constant(key, text, profiles.sysctl_value, number=True)
        return values

    @model_validator(mode="after")
    def _distinct_paths(self) -> TuningConfig:
        seen: dict[str, str] = {}
        outputs = [(f"files[{i}]", e.path) for i, e in enumerate(self.files)]
        outputs += [(f"profiles[{i}]", e.path) for i, e in enumerate(self.profiles) if e.path]
        outputs += [(f"templates[{i}]", e.path) for i, e in enumerate(self.templates)]
        outputs += [(f"dropins[{i}]", self.dropin_path(e.unit))
                    for i, e in enumerate(self.dropins)]
        for where, path in outputs:
            if path in seen:
                raise ValueError(f"{where} and {seen[path]} both write {path!r}")
            seen[path] = where
        for index, entry in enumerate(self.templates):
            if entry.source in seen:
                raise ValueError(f"templates[{index}] reads {entry.source!r}, which "
                                 f"{seen[entry.source]} writes")
            self._check_template(index, entry)
        return self

    def definitions(self) -> dict[str, set[str]]:
        """Every name a template may use (facts, file and profile values): its definitions."""
        found: dict[str, set[str]] = {name: {"fact"} for name in FACTS}
        for entry in self.files:
            for name, text in entry.values.items():
                found.setdefault(name, set()).add(f"expression {text}")
        for profile in self.profiles:
            key = f"profile {profile.use} {sorted(profile.overrides.items())}"
            for setting in profiles.PROFILES[profile.use].settings:
                found.setdefault(setting.name, set()).add(key)
        return found

    def _check_template(self, index: int, entry: TuningTemplate) -> None:
        """A template whose source exists now is checked now: every variable known."""
        try:
            text = Path(entry.source).read_text("utf-8")
        except FileNotFoundError:
            return  # checked when the boot renders it
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"templates[{index}] {entry.source}: cannot read: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            names = template_names(text)
        except ExprError as exc:
            raise ValueError(f"templates[{index}] {entry.source}: {exc}") from None
        known = self.definitions()
        for name in names:
            problem = template_problem(name, known)
            if problem:
                raise ValueError(f"templates[{index}] {entry.source}: {problem}")


def template_problem(name: str, known: dict[str, set[str]]) -> str:
    """Why a template may not use ``${name}`` ('' when it may)."""
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown variable ${{{name}}}{hint}"
    if len(known[name]) > 1:
        return (f"${{{name}}} is ambiguous: {len(known[name])} outputs define it "
                "differently")
    return ""


class LifecycleConfig(_Section):
    """``[lifecycle]``: the Auto Scaling launch hook."""

    enabled: bool = True
    hook_name: str = ""
    on_failure: Literal["abandon", "continue", "none"] = "abandon"
    heartbeat_seconds: Annotated[float, Field(ge=0)] = 0.0
    warm_pool_secrets: bool = False  # publish secrets in a warm-pool boot too


class TerminationConfig(_Section):
    """``[termination]``: watching for the instance's end, and draining before it."""

    enabled: bool = True
    poll_seconds: Annotated[float, Field(ge=1)] = 5.0  # IMDS notices, daemon mode
    hook_name: str = ""  # default: the group's only EC2_INSTANCE_TERMINATING hook
    deadline_seconds: PositiveSeconds = 90.0  # the whole drain
    commands: list[list[str]] = []  # run in order (argv, no shell)
    stop_units: list[str] = []  # systemctl stop, in order
    wipe_secrets: bool = True  # remove the published secrets once drained
    rebalance_command: list[str] = []  # on a rebalance recommendation (nothing else)

    @field_validator("commands")
    @classmethod
    def _commands(cls, value: list[list[str]]) -> list[list[str]]:
        return _commands(value, "a drain command")

    @field_validator("rebalance_command")
    @classmethod
    def _rebalance(cls, value: list[str]) -> list[str]:
        return _argv(value, "rebalance_command")

    @field_validator("stop_units")
    @classmethod
    def _units(cls, value: list[str]) -> list[str]:
        return _unit_names(value)


class ImageConfig(_Section):
    """``[image]``: the baked image's manifest, its age, user-data hygiene."""

    manifest: str = "/etc/agent/image.json"  # written by `agent bake-check`
    max_age_days: Annotated[float, Field(ge=0)] = 0.0  # 0: never flag the image's age
    check_user_data: bool = True  # flag user-data that looks like it holds a credential


class SignalConfig(_Section):
    """``[signal]``: readiness signals besides systemd and the lifecycle hook."""

    cloudformation_stack: str = ""  # SignalResource, as cfn-signal does
    cloudformation_resource: str = ""
    marker_file: str = ""  # written when ready, removed when the boot fails

    @field_validator("marker_file")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @model_validator(mode="after")
    def _pair(self) -> SignalConfig:
        if bool(self.cloudformation_stack) != bool(self.cloudformation_resource):
            raise ValueError("set both cloudformation_stack and cloudformation_resource")
        return self


class Config(BaseSettings):
    """The whole configuration (DESIGN.md, "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    state_dir: str = "/run/agent"
    mode: Literal["daemon", "oneshot"] = "daemon"
    imds: ImdsConfig = ImdsConfig()
    aws: AwsConfig = AwsConfig()
    secrets: SecretsConfig = SecretsConfig()
    tuning: TuningConfig = TuningConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    termination: TerminationConfig = TerminationConfig()
    signal: SignalConfig = SignalConfig()
    image: ImageConfig = ImageConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed in as init arguments).
        return (_KnownEnvSource(settings_cls), init_settings)


class _KnownEnvSource(EnvSettingsSource):
    """``AGENT_*`` variables, keeping only those that name a key (others are ignored)."""

    def __call__(self) -> dict[str, Any]:
        return _prune(super().__call__(), self.settings_cls)


def _prune(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            kept[name] = _prune(value, sub)
        else:
            kept[name] = value
    return kept


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get("AGENT_CONFIG")
    if from_env:
        return Path(from_env), True
    return Path(DEFAULT_PATH), False


def read_toml(path: Path, *, must_exist: bool) -> dict[str, Any]:
    """The file's table, or ``{}`` for an absent default file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"config {path}: no such file") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror}") from None


def load(explicit: str | None = None) -> Config:
    """Read, merge and validate; raise ConfigError with one line on any problem."""
    path, must_exist = config_path(explicit)
    data = read_toml(path, must_exist=must_exist)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None


def _one_line(path: Path, exc: ValidationError) -> str:
    """Name the source (file or environment variable), the key and the problem."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    key = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    source = f"config {path}"
    env_name = _env_source(first["loc"])
    if env_name:
        source = f"environment {env_name}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {key}: {message}{more}"


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _env_source(loc: tuple[int | str, ...]) -> str | None:
    """The AGENT_* variable that supplied the failing key, if one did."""
    names = {name.upper() for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    parts = [str(part) for part in loc if isinstance(part, str)]
    for length in range(len(parts), 0, -1):
        candidate = ENV_PREFIX + "__".join(parts[:length]).upper()
        if candidate in names:
            return candidate
    return None

