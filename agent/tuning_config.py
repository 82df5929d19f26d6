"""The ``[tuning]`` section: outputs computed from the instance's size, checked at load."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from agent import envfile, profiles
from agent.budget import DEFAULT_RESERVE, split
from agent.expr import (
    FACTS,
    ExprError,
    Value,
    compile_expression,
    render_value,
    template_names,
)
from agent.fields import (
    AbsoluteDir,
    AbsoluteFile,
    Condition,
    Mode,
    OptionalFile,
    Section,
    ServiceName,
)
from agent.readfile import TEMPLATE_LIMIT, Unreadable, read_regular, template_text
from agent.sections import (
    HUGEPAGES_SYSCTL,
    TuningFileRules,
    TuningProfileRules,
    TuningRules,
    clash,
    file_digest,
    labelled,
    observe,
    template_problem,
)


def _number(value: object) -> object:
    if isinstance(value, bool | str):
        raise ValueError("must be a number above 0 and at most 1, such as 0.5")
    return value


Share = Annotated[float, BeforeValidator(_number), Field(gt=0, le=1, allow_inf_nan=False)]
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


class TuningFile(TuningFileRules, Section):
    """One ``[[tuning.files]]`` entry: computed values written as an env or JSON file."""

    path: AbsoluteFile
    when: Condition = ""  # the entry is kept only where this is true
    format: Literal["env", "json"] = "env"
    mode: Mode = 0o644
    values: dict[str, str] = {}
    share: Share | None = None  # of the memory budget (memory_mib in its values)

    @field_validator("values")
    @classmethod
    def _values(cls, values: dict[str, str]) -> dict[str, str]:
        return _expressions(values)


class TuningProfile(TuningProfileRules, Section):
    """One ``[[tuning.profiles]]`` entry: a program's well-known values (agent.profiles)."""

    use: str
    when: Condition = ""  # the entry is kept only where this is true
    path: OptionalFile = ""  # "" : not written (the values are still there for templates)
    format: Literal["env", "json"] = "env"
    mode: Mode = 0o644
    overrides: dict[str, str] = {}  # value name -> expression replacing the profile's formula
    options: dict[str, StrictBool] = {}  # the profile's switches, e.g. redis persistence
    share: Share | None = None  # of the memory budget (memory_mib inside the profile)

    @field_validator("use")
    @classmethod
    def _known(cls, value: str) -> str:
        profiles.check_profile(value)
        return value

    @model_validator(mode="after")
    def _overrides(self) -> TuningProfile:
        profiles.compile_profile(self.use, self.overrides, self.options)
        return self


class TuningBudget(Section):
    """``[tuning.budget]``: what the programs sharing the machine leave to everything else."""

    reserve_mib: str = DEFAULT_RESERVE  # over the facts (memory_mib: the machine)

    @field_validator("reserve_mib")
    @classmethod
    def _reserve(cls, text: str) -> str:
        _constant("reserve_mib", text, _at_least_zero, number=True)
        return text


def _at_least_zero(value: Value) -> None:
    if isinstance(value, str) or value < 0:
        raise ValueError(f"must be at least 0 (MiB), got {render_value(value)}")


class TuningDropin(Section):
    """One ``[[tuning.dropins]]`` entry: ``[Service]`` settings of a unit, as a drop-in."""

    unit: ServiceName
    when: Condition = ""  # the entry is kept only where this is true
    service: dict[str, str | dict[str, str]] = {}  # key -> expression; Environment: a table

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


class TuningTemplate(Section):
    """One ``[[tuning.templates]]`` entry: ``${NAME}`` substitution into a runtime file."""

    source: AbsoluteFile
    when: Condition = ""  # the entry is kept only where this is true
    path: AbsoluteFile
    mode: Mode = 0o644


SYSCTL_PART = re.compile(r"[A-Za-z0-9_@:+/-]{1,64}\Z")


class TuningConfig(TuningRules, Section):
    """``[tuning]``: outputs computed from the instance's size."""

    files: list[TuningFile] = []
    profiles: list[TuningProfile] = []
    dropins: list[TuningDropin] = []
    templates: list[TuningTemplate] = []
    sysctl: dict[str, str] = {}  # "net.core.somaxconn" -> expression
    budget: TuningBudget = TuningBudget()
    unit_dir: AbsoluteDir = "/run/systemd/system"  # where drop-ins go
    history_file: OptionalFile = "/var/lib/agent/instance.json"  # the previous boot's type

    @model_validator(mode="after")
    def _budget(self) -> TuningConfig:
        split(self.claims())
        reserving = [where for where, e in labelled("profiles", self.profiles)
                     if e.options.get("reserve_huge_pages")]
        if len(reserving) > 1:
            raise ValueError(f"{reserving[1]}: {reserving[0]} already sets {HUGEPAGES_SYSCTL} "
                             "(reserve_huge_pages): one profile may")
        if reserving and HUGEPAGES_SYSCTL in self.sysctl:
            raise ValueError(f"{reserving[0]}: reserve_huge_pages sets {HUGEPAGES_SYSCTL}, "
                             "which [tuning.sysctl] sets too")
        return self

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
        outputs = self.outputs()
        problem = clash([(where, path, bool(entry.when)) for where, path, entry in outputs],
                        nested=False)
        if problem:
            raise ValueError(problem)
        seen = {path: where for where, path, _ in outputs}
        for where, entry in labelled("templates", self.templates):
            if entry.source in seen:
                raise ValueError(f"{where} reads {entry.source!r}, which "
                                 f"{seen[entry.source]} writes")
            self._check_template(where, entry)
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

    def _check_template(self, where: str, entry: TuningTemplate) -> None:
        """A template whose source exists now is checked now: every variable known."""
        try:
            raw = read_regular(entry.source, TEMPLATE_LIMIT)
        except FileNotFoundError:
            observe("file", entry.source, None)
            return  # checked when the boot renders it
        except Unreadable as exc:  # a FIFO, a device, too large: never opened for long
            raise ValueError(f"{where} {entry.source}: {exc}") from None
        observe("file", entry.source, file_digest(raw))
        try:
            names = template_names(template_text(raw))
        except ValueError as exc:  # not UTF-8, or an invalid placeholder
            raise ValueError(f"{where} {entry.source}: {exc}") from None
        known = self.definitions()
        for name in names:
            problem = template_problem(name, known)
            if problem:
                raise ValueError(f"{where} {entry.source}: {problem}")
