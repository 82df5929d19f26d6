"""The ``[tuning]`` section: outputs computed from the instance's size, checked at load."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from agent.errors import closest
from agent.frozen import frozen
from agent.readfile import TEMPLATE_LIMIT, Unreadable, read_regular, template_text
from agent.schema.entries import clash, labelled
from agent.schema.expr import (
    FACTS,
    ExprError,
    Expression,
    Value,
    compile_expression,
    render_value,
    template_names,
)
from agent.schema.fields import (
    SECTION,
    AbsoluteDir,
    AbsoluteFile,
    Bounds,
    Check,
    Condition,
    Mode,
    OptionalFile,
    ServiceName,
)
from agent.schema.observed import file_digest, observe
from agent.schema.placeholders import condition
from agent.service import envfile

if TYPE_CHECKING:
    from agent.tuning.budget import Claim
    from agent.tuning.profiles import CompiledSetting
else:
    CompiledSetting = object  # agent.tuning.profiles is loaded only where a profile is configured

DEFAULT_RESERVE = "clamp(memory_mib * 0.1, 256, 4096)"  # [tuning.budget] reserve_mib
HUGEPAGES_SYSCTL = "vm.nr_hugepages"  # set by a postgres profile with reserve_huge_pages


def _number(value: object) -> object:
    if isinstance(value, bool | str):
        raise ValueError("must be a number above 0 and at most 1, such as 0.5")
    return value


Share = Annotated[float, Bounds(gt=0, le=1, allow_inf_nan=False), Check(_number, before=True)]
"""A fraction of the memory budget."""


def _expressions(values: dict[str, str]) -> dict[str, str]:
    """``NAME = expression`` pairs: valid names, expressions that compile."""
    for name, text in values.items():
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"{name!r} is not a valid variable name")
        try:
            compile_expression(text)
        except ExprError as exc:
            raise ValueError(f"{name} = {text!r}: {exc}") from None
    return values


def _compiled(when: str) -> Expression | None:
    return condition(when) if when else None


def _known_profile(value: str) -> str:
    from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

    profiles.check_profile(value)
    return value


def _compiled_field() -> Any:
    """A form made once from the fields by ``__post_init__`` (not a key of the
    configuration, not compared: it follows from the keys)."""
    return dataclasses.field(init=False, default=None, repr=False, compare=False)


@frozen(kw_only=True)
class TuningFile:
    """One ``[[tuning.files]]`` entry: computed values written as an env or JSON file."""

    __pydantic_config__ = SECTION

    path: AbsoluteFile
    when: Condition = ""  # the entry is kept only where this is true
    format: Literal["env", "json"] = "env"
    mode: Mode = 0o644
    values: Annotated[dict[str, str], Check(_expressions)] = dataclasses.field(
        default_factory=dict)
    share: Share | None = None  # of the memory budget (memory_mib in its values)
    condition: Expression | None = _compiled_field()
    expressions: dict[str, Expression] = _compiled_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _compiled(self.when))
        object.__setattr__(self, "expressions", {
            name: compile_expression(text) for name, text in self.values.items()})

    @property
    def label(self) -> str:
        """How the memory budget names it."""
        return f"file {self.path}"

    @property
    def in_budget(self) -> bool:
        """Whether it takes a share of the memory budget: only when it has one (without,
        ``memory_mib`` in its values is the machine's, as everywhere outside a member)."""
        return self.share is not None


@frozen(kw_only=True)
class TuningProfile:
    """One ``[[tuning.profiles]]`` entry: a program's well-known values (agent.tuning.profiles)."""

    __pydantic_config__ = SECTION

    use: Annotated[str, Check(_known_profile)]
    when: Condition = ""  # the entry is kept only where this is true
    path: OptionalFile = ""  # "" : not written (the values are still there for templates)
    format: Literal["env", "json"] = "env"
    mode: Mode = 0o644
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)  # replacing formulas
    options: dict[str, Annotated[bool, Bounds(strict=True)]] = dataclasses.field(
        default_factory=dict)  # the profile's switches, e.g. redis persistence
    share: Share | None = None  # of the memory budget (memory_mib inside the profile)
    condition: Expression | None = _compiled_field()
    settings: list[CompiledSetting] = _compiled_field()

    def __post_init__(self) -> None:
        from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

        object.__setattr__(self, "condition", _compiled(self.when))
        object.__setattr__(self, "settings",
                           profiles.compile_profile(self.use, self.overrides, self.options))

    @property
    def label(self) -> str:
        """How messages and ``agent plan`` name it."""
        return f"profile {self.use}" + (f" -> {self.path}" if self.path else "")

    @property
    def in_budget(self) -> bool:
        """Whether it takes a share of the memory budget: some value reads memory_mib (every
        profile but nginx, as shipped), or it has one."""
        from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

        return self.share is not None or profiles.reads_memory(self.settings)


def _reserve(text: str) -> str:
    _constant("reserve_mib", text, _at_least_zero, number=True)
    return text


@frozen()
class TuningBudget:
    """``[tuning.budget]``: what the programs sharing the machine leave to everything else."""

    __pydantic_config__ = SECTION

    reserve_mib: Annotated[str, Check(_reserve)] = DEFAULT_RESERVE  # memory_mib: the machine
    reserve: Expression = _compiled_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reserve", compile_expression(self.reserve_mib))


def _at_least_zero(value: Value) -> None:
    if isinstance(value, str) or value < 0:
        raise ValueError(f"must be at least 0 (MiB), got {render_value(value)}")


def _service_keys(values: dict[str, str | dict[str, str]]) -> dict[str, str | dict[str, str]]:
    from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

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


@frozen(kw_only=True)
class TuningDropin:
    """One ``[[tuning.dropins]]`` entry: ``[Service]`` settings of a unit, as a drop-in."""

    __pydantic_config__ = SECTION

    unit: ServiceName
    when: Condition = ""  # the entry is kept only where this is true
    service: Annotated[dict[str, str | dict[str, str]], Check(_service_keys)] = \
        dataclasses.field(default_factory=dict)  # key -> expression; Environment: a table
    condition: Expression | None = _compiled_field()
    expressions: dict[str, Expression | dict[str, Expression]] = _compiled_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _compiled(self.when))
        object.__setattr__(self, "expressions", {
            key: ({name: compile_expression(text) for name, text in value.items()}
                  if isinstance(value, dict) else compile_expression(value))
            for key, value in self.service.items()})


def _environment_value(value: Value) -> str:
    from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

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


@frozen(kw_only=True)
class TuningTemplate:
    """One ``[[tuning.templates]]`` entry: ``${NAME}`` substitution into a runtime file."""

    __pydantic_config__ = SECTION

    source: AbsoluteFile
    when: Condition = ""  # the entry is kept only where this is true
    path: AbsoluteFile
    mode: Mode = 0o644
    condition: Expression | None = _compiled_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", _compiled(self.when))


SYSCTL_PART = r"[A-Za-z0-9_@:+/-]{1,64}\Z"


def _sysctl(values: dict[str, str]) -> dict[str, str]:
    from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

    for key, text in values.items():
        parts = key.split(".")
        if len(parts) < 2 or not all(re.match(SYSCTL_PART, p) and p.replace("/", ".") not in (
                ".", "..") and not p.startswith("/") for p in parts):
            raise ValueError(f"{key!r} is not a kernel setting name such as "
                             "\"net.core.somaxconn\"")
        _constant(key, text, profiles.sysctl_value, number=True)
    return values


@frozen()
class TuningConfig:
    """``[tuning]``: outputs computed from the instance's size."""

    __pydantic_config__ = SECTION

    files: list[TuningFile] = dataclasses.field(default_factory=list)
    profiles: list[TuningProfile] = dataclasses.field(default_factory=list)
    dropins: list[TuningDropin] = dataclasses.field(default_factory=list)
    templates: list[TuningTemplate] = dataclasses.field(default_factory=list)
    sysctl: Annotated[dict[str, str], Check(_sysctl)] = dataclasses.field(
        default_factory=dict)  # "net.core.somaxconn" -> expression
    budget: TuningBudget = dataclasses.field(default_factory=TuningBudget)
    unit_dir: AbsoluteDir = "/run/systemd/system"  # where drop-ins go
    history_file: OptionalFile = "/var/lib/agent/instance.json"  # the previous boot's type
    sysctl_expressions: dict[str, Expression] = _compiled_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sysctl_expressions", {
            key: compile_expression(text) for key, text in self.sysctl.items()})
        claims = self.claims()
        if claims:  # agent.tuning.budget is loaded only when some entry takes a share
            from agent.tuning.budget import split  # noqa: PLC0415

            split(claims)
        reserving = [where for where, e in labelled("profiles", self.profiles)
                     if e.options.get("reserve_huge_pages")]
        if len(reserving) > 1:
            raise ValueError(f"{reserving[1]}: {reserving[0]} already sets {HUGEPAGES_SYSCTL} "
                             "(reserve_huge_pages): one profile may")
        if reserving and HUGEPAGES_SYSCTL in self.sysctl:
            raise ValueError(f"{reserving[0]}: reserve_huge_pages sets {HUGEPAGES_SYSCTL}, "
                             "which [tuning.sysctl] sets too")
        outputs = self.outputs()
        problem = clash([(where, path, bool(entry.when)) for where, path, entry in outputs],
                        nested=False)
        if problem:
            raise ValueError(problem)
        seen = {path: where for where, path, _ in outputs}
        for where, template in labelled("templates", self.templates):
            if template.source in seen:
                raise ValueError(f"{where} reads {template.source!r}, which "
                                 f"{seen[template.source]} writes")
            self._check_template(where, template)

    @property
    def has_outputs(self) -> bool:
        """Whether anything is configured to be written."""
        return bool(self.files or self.profiles or self.dropins or self.templates or self.sysctl)

    def dropin_path(self, unit: str) -> str:
        """Where the drop-in of ``unit`` goes."""
        from agent.service.dropins import DROPIN_NAME  # noqa: PLC0415 - only where drop-ins are

        return os.path.join(self.unit_dir, f"{unit}.d", DROPIN_NAME)

    def outputs(self) -> list[tuple[str, str, Any]]:
        """Every file the section writes: ``(where, path, entry)``."""
        found: list[tuple[str, str, Any]] = [
            (where, e.path, e) for where, e in labelled("files", self.files)]
        found += [(where, e.path, e) for where, e in labelled("profiles", self.profiles)
                  if e.path]
        found += [(where, e.path, e) for where, e in labelled("templates", self.templates)]
        return found + [(where, self.dropin_path(e.unit), e)
                        for where, e in labelled("dropins", self.dropins)]

    def claims(self) -> list[Claim]:
        """The members of the memory budget (``agent.tuning.budget.Claim``), in configuration order
        (profiles, then files)."""
        entries: list[tuple[str, TuningProfile | TuningFile]] = [
            *labelled("profiles", self.profiles), *labelled("files", self.files)]
        members = [(key, entry) for key, entry in entries if entry.in_budget]
        if not members:
            return []
        from agent.tuning.budget import Claim  # noqa: PLC0415

        return [Claim(key, e.label, e.share) for key, e in members]

    def expressions(self) -> list[tuple[str, Expression]]:
        """Every expression of the section, compiled, with its key
        (``tuning.files[0].values.HEAP_MB``)."""
        entries: list[tuple[str, Any]] = [
            *labelled("files", self.files), *labelled("profiles", self.profiles),
            *labelled("dropins", self.dropins), *labelled("templates", self.templates)]
        found = [(f"tuning.{key}.when", e.condition) for key, e in entries
                 if e.condition is not None]
        found += [(f"tuning.files[{i}].values.{name}", expression)
                  for i, e in enumerate(self.files) for name, expression in e.expressions.items()]
        found += [(f"tuning.profiles[{i}].overrides.{item.name}", item.expression)
                  for i, e in enumerate(self.profiles) for item in e.settings
                  if item.overridden and item.expression is not None]
        found += [(f"tuning.dropins[{i}].service.{key}", expression)
                  for i, e in enumerate(self.dropins) for key, value in e.expressions.items()
                  for expression in (value.values() if isinstance(value, dict) else [value])]
        found += [(f"tuning.sysctl.{key}", e) for key, e in self.sysctl_expressions.items()]
        return [*found, ("tuning.budget.reserve_mib", self.budget.reserve)]

    def definitions(self) -> dict[str, set[str]]:
        """Every name a template may use (facts, file and profile values): its definitions."""
        found: dict[str, set[str]] = {name: {"fact"} for name in FACTS}
        for file in self.files:
            for name, text in file.values.items():
                found.setdefault(name, set()).add(f"expression {text}")
        for profile in self.profiles:
            from agent.tuning import profiles  # noqa: PLC0415 - only for its entries

            key = f"profile {profile.use} {sorted(profile.overrides.items())}"
            for setting in profiles.PROFILES[profile.use].settings:
                found.setdefault(setting.name, set()).add(key)
        return found

    def _check_template(self, where: str, template: TuningTemplate) -> None:
        """A template whose source exists now is checked now: every variable known."""
        try:
            raw = read_regular(template.source, TEMPLATE_LIMIT)
        except FileNotFoundError:
            observe("file", template.source, None)
            return  # checked when the boot renders it
        except Unreadable as exc:  # a FIFO, a device, too large: never opened for long
            raise ValueError(f"{where} {template.source}: {exc}") from None
        observe("file", template.source, file_digest(raw))
        try:
            names = template_names(template_text(raw))
        except ValueError as exc:  # not UTF-8, or an invalid placeholder
            raise ValueError(f"{where} {template.source}: {exc}") from None
        known = self.definitions()
        for name in names:
            problem = variable_problem(name, known)
            if problem:
                raise ValueError(f"{where} {template.source}: {problem}")


def variable_problem(name: str, known: dict[str, set[str]]) -> str:
    """Why a tuning template may not use ``${name}`` ('' when it may): unknown, or defined
    differently by two outputs."""
    if name not in known:
        close = closest(name, known)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown variable ${{{name}}}{hint}"
    if len(known[name]) > 1:
        return (f"${{{name}}} is ambiguous: {len(known[name])} outputs define it "
                "differently")
    return ""
