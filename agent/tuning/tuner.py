"""Tuning: a plan of every value for one set of facts, and the one step that writes it.

:func:`plan` computes and renders every output (env and JSON files, profiles, systemd
drop-ins, templates, sysctls) against what is there now, reading but never writing: each
output holds a :class:`~agent.files.FilePlan` (existing, desired, change), which ``agent
plan`` shows and :func:`apply` executes; everything is computed first, so a value that
fails writes nothing. :func:`phase` is the boot's tuning phase. The facts come from
:mod:`agent.instance.facts`, the resize history from :mod:`agent.state.history`, each
program's portion of the memory from :mod:`agent.tuning.budget`; that and
:mod:`agent.tuning.profiles` are loaded only for entries that use them (a boot without
profiles, drop-ins or sysctls does not pay for their import).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import string
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from agent import files
from agent.errors import TuningError
from agent.files import Change, FilePlan
from agent.frozen import frozen
from agent.instance.facts import Facts
from agent.readfile import read_regular, read_template
from agent.schema.entries import clash, labelled
from agent.schema.expr import (
    Explanation,
    ExprError,
    Expression,
    Value,
    compile_expression,
    render_value,
    template_file_names,
    template_names,
)
from agent.service import dropins, envfile
from agent.service.dropins import DROPIN_NAME
from agent.state import history
from agent.state.recorder import PhaseState
from agent.tuning.config import HUGEPAGES_SYSCTL, variable_problem

if TYPE_CHECKING:
    from agent.cloud.imds import Metadata
    from agent.instance.context import LaunchContext
    from agent.state.recorder import Recorder
    from agent.tuning import profiles
    from agent.tuning.budget import Budget
    from agent.tuning.config import TuningConfig, TuningDropin, TuningProfile, TuningTemplate

Record = dict[str, Any]  # what state.json keeps of one output (tuned values are not secret)
SYSCTL_ROOT = "/proc/sys"
SYSCTL_LIMIT = 1 << 16  # a sysctl's current value is a line
DROPIN_HEADER = "# Written by the instance boot agent ([[tuning.dropins]]); do not edit.\n"


@frozen()
class PlannedValue:
    """One computed value: its name, expression and explanation (with the result)."""

    name: str
    expression: str
    explanation: Explanation
    written: str | None = None  # the text written, when not the plain result (drop-ins...)
    origin: str = ""  # templates: the output (or "facts") the value comes from
    note: str = ""  # profiles: what the value is for, and the range the program accepts

    @property
    def rendered(self) -> str:
        """The value as written."""
        if self.written is not None:
            return self.written
        return render_value(self.explanation.result)


@frozen()
class PlannedOutput:
    """One file to write: what kind, its plan (existing, desired, change), the values in it."""

    kind: str  # "file" | "profile" | "dropin" | "template"
    label: str  # names the output in messages and in plan
    format: str  # "env" | "json" | "dropin" | "template"
    file: FilePlan  # path "" : not written (a profile whose values only feed templates)
    values: list[PlannedValue]
    about: dict[str, str] = field(default_factory=dict)  # {"profile": "jvm"}, {"unit": ...}

    @property
    def path(self) -> str:
        """Where it is written ('' for nowhere)."""
        return self.file.path

    @property
    def content(self) -> bytes:
        """The complete content."""
        assert self.file.desired is not None
        return self.file.desired

    @property
    def mode(self) -> int:
        """Its mode."""
        return self.file.mode

    def record(self, written: bool = True) -> Record:
        """The state.json record of this output (``changed``: its content changed)."""
        changed = written and self.file.change in (Change.NEW, Change.CHANGED)
        return {"kind": self.kind, **self.about, "path": self.path, "format": self.format,
                "values": {v.name: v.rendered for v in self.values}, "changed": changed}


@frozen()
class PlannedSysctl:
    """One kernel setting: its /proc/sys file, the value to write and the one there now."""

    key: str
    path: str
    value: PlannedValue
    current: str | None  # None: no such setting on this machine

    @property
    def changed(self) -> bool:
        """Whether writing it would change it."""
        return self.current != self.value.rendered


@frozen()
class TuningPlan:
    """Every output of the tuning phase, computed for one set of facts; nothing written."""

    facts: Facts
    outputs: list[PlannedOutput]
    sysctls: list[PlannedSysctl] = field(default_factory=list)
    stale: list[FilePlan] = field(default_factory=list)  # our drop-ins no longer configured
    budget: Budget | None = None  # None: no output takes a share of the memory
    skipped: list[dict[str, str]] = field(default_factory=list)  # entries whose `when` is false


def plan(cfg: TuningConfig, facts: Facts, *, sysctl_root: str = SYSCTL_ROOT,
         context: LaunchContext | None = None) -> TuningPlan:
    """Compute and render every output; reads templates and current sysctls, writes nothing.

    Entries whose ``when`` is false here are left out (and listed). Each member of the
    memory budget sees its portion as ``memory_mib``; a profile whose values do not fit its
    portion is a TuningError naming the type and the program. ``context``: the launch (its
    facts and tags, for conditions and values that read them).
    """
    names: dict[str, Value] = {**facts.as_dict()}
    if context is not None:
        names.update(context.scope(_expressions(cfg)))
    kept, skipped = _kept(cfg, names, context)
    problem = clash([(f"tuning.{where}", path, False) for where, path, _ in cfg.outputs()
                     if where in kept], nested=False)
    if problem:  # entries with conditions may share a path, not both where both hold
        raise TuningError(f"{problem} (both of their conditions hold here)")
    claims = [claim for claim in cfg.claims() if claim.key in kept]
    shared = None
    if claims:  # profiles and the budget are loaded when the configuration has them
        from agent.tuning import budget  # noqa: PLC0415 - loaded only when used
        shared = budget.portions(claims, cfg.budget.reserve, names, [
            e.label for where, e in labelled("profiles", cfg.profiles) if not e.in_budget
            and where in kept])

    def scope(key: str) -> dict[str, Value]:
        portion = shared.portion(key) if shared else None
        return names if portion is None else {**names, "memory_mib": portion.memory_mib}

    outputs = [_plan_values_file(entry.path, "file", entry.path, entry.format, entry.mode,
                                 _explain_all(entry.path, entry.expressions, scope(where)), {})
               for where, entry in labelled("files", cfg.files) if where in kept]
    sysctls = []
    for where, entry in labelled("profiles", cfg.profiles):
        if where not in kept:
            continue
        output, values = _plan_profile(entry, scope(where))
        outputs.append(output)
        if shared:
            shared = _fit(shared, where, entry, values, facts)
        if entry.options.get("reserve_huge_pages"):
            sysctls += _hugepages(output, sysctl_root)
    units = [_plan_dropin(entry, names) for where, entry in labelled("dropins", cfg.dropins)
             if where in kept]
    dropin_plans = dropins.plan(cfg.unit_dir, DROPIN_NAME,
                                {unit.about["unit"]: content for unit, content in units})
    by_path = {item.path: item for item in dropin_plans}
    outputs += [dataclasses.replace(unit, file=by_path[cfg.dropin_path(unit.about["unit"])])
                for unit, _ in units]
    sysctls = [_plan_sysctl(key, expression, names, sysctl_root)
               for key, expression in cfg.sysctl_expressions.items()] + sysctls
    template_scope = _template_scope(names, outputs)
    outputs += [_plan_template(entry, template_scope)
                for where, entry in labelled("templates", cfg.templates) if where in kept]
    stale = [item for item in dropin_plans if item.desired is None]
    return TuningPlan(facts, outputs, sysctls, stale, shared, skipped)


def _entries(cfg: TuningConfig) -> list[tuple[str, Any]]:
    return [*labelled("files", cfg.files), *labelled("profiles", cfg.profiles),
            *labelled("dropins", cfg.dropins), *labelled("templates", cfg.templates)]


def tag_uses(cfg: TuningConfig) -> list[tuple[str, str]]:
    """(key, tag) for each tag('KEY') the section reads: what an offline plan must be given."""
    return [(where, tag) for where, expression in cfg.expressions()
            for tag in sorted(expression.tags)]


def _expressions(cfg: TuningConfig) -> list[Expression]:
    """Every expression of the section (what they read decides what the launch must give)."""
    found = [expression for _, expression in cfg.expressions()]
    if any("group" in template_file_names(e.source) for e in cfg.templates):
        found.append(compile_expression("group"))
    return found


def _kept(cfg: TuningConfig, names: Mapping[str, Value],
          context: LaunchContext | None) -> tuple[set[str], list[dict[str, str]]]:
    """The entries whose conditions hold here, and those skipped with why."""
    kept, skipped = set(), []
    for key, entry in _entries(cfg):
        if not entry.when:
            kept.add(key)
            continue
        where = f"tuning.{key}"
        try:
            holds = bool(entry.condition.evaluate(names))
        except ExprError as exc:
            raise TuningError(f"{where}: when = {entry.when!r}: {exc}") from None
        if holds:
            kept.add(key)
        else:
            skipped.append({"entry": where, "reason": f"when = {entry.when!r} is false"})
    return kept, skipped


def _fit(shared: Budget, key: str, entry: TuningProfile, values: Mapping[str, Value],
         facts: Facts) -> Budget:
    """The budget with this profile's terms filled in; TuningError when they do not fit."""
    from agent.tuning import budget, profiles  # noqa: PLC0415 - loaded only when used
    portion = shared.portion(key)
    if portion is None:
        return shared
    try:
        terms = tuple(budget.Term(part.name, mib, detail)
                      for part, mib, detail in profiles.limits(entry.use, values))
    except ExprError as exc:
        raise TuningError(f"tuning {entry.label}: {exc}") from None
    portion = dataclasses.replace(portion, terms=terms, checked=True)
    budget.check_fit(shared, portion, facts.instance_type)
    return dataclasses.replace(shared, portions=[
        portion if p.claim.key == key else p for p in shared.portions])


def _hugepages(output: PlannedOutput, root: str) -> list[PlannedSysctl]:
    """vm.nr_hugepages from a postgres profile's PG_NR_HUGEPAGES (none when it is 0)."""
    from agent.tuning import profiles  # noqa: PLC0415 - loaded only when used
    value = next(v for v in output.values if v.name == "PG_NR_HUGEPAGES")
    if not value.explanation.result:
        return []
    path = sysctl_path(HUGEPAGES_SYSCTL, root)
    try:
        current: str | None = read_regular(path, SYSCTL_LIMIT).decode().strip()
    except (OSError, ValueError):  # absent, Unreadable, not UTF-8
        current = None
    result = value.explanation.result
    planned = PlannedValue(HUGEPAGES_SYSCTL, "PG_NR_HUGEPAGES",
                           Explanation(result, render_value(result), ()),
                           written=profiles.sysctl_value(result),
                           note=f"PG_NR_HUGEPAGES of {output.label} (reserve_huge_pages)")
    return [PlannedSysctl(HUGEPAGES_SYSCTL, path, planned, current)]


def _explain_all(label: str, values: Mapping[str, Expression],
                 facts: Mapping[str, Value]) -> list[PlannedValue]:
    planned = []
    for name, expression in values.items():
        try:
            explanation = expression.explain(facts)
        except ExprError as exc:
            raise TuningError(f"tuning {label}: {name}: {exc}") from None
        planned.append(PlannedValue(name, expression.text, explanation))
    return planned


def _plan_values_file(label: str, kind: str, path: str, fmt: str, mode: int,
                      values: list[PlannedValue], about: dict[str, str]) -> PlannedOutput:
    try:
        content = _render(fmt, values)
    except envfile.EnvFileError as exc:
        raise TuningError(f"tuning {label}: {exc}") from None
    return PlannedOutput(kind, label, fmt, FilePlan.of(path, content, mode), values, about)


def _plan_profile(entry: TuningProfile,
                  facts: Mapping[str, Value]) -> tuple[PlannedOutput, dict[str, Value]]:
    """The profile's output, and every name its values saw (facts, options) with the values."""
    from agent.tuning import profiles  # noqa: PLC0415 - loaded only when used
    label = entry.label
    scope: dict[str, Value] = {**facts, **profiles.option_values(entry.use, entry.options)}
    try:
        results = profiles.evaluate(entry.settings, scope)
    except (ExprError, ValueError) as exc:
        raise TuningError(f"tuning {label}: {exc}") from None
    values = [PlannedValue(item.name, item.text, explanation, note=_note(item))
              for item, explanation in results]
    scope.update((item.name, explanation.result) for item, explanation in results)
    return _plan_values_file(label, "profile", entry.path, entry.format, entry.mode, values,
                             {"profile": entry.use}), scope


def _note(item: profiles.CompiledSetting) -> str:
    setting = item.setting
    low, high = setting.low, setting.high
    note = ("overridden; " if item.overridden else "") + setting.note
    if low is None and high is None:
        return note
    if low is not None and high is not None:
        span = f"{render_value(low)}..{render_value(high)}"
    else:
        span = f">= {render_value(low)}" if low is not None else f"<= {render_value(high or 0)}"
    return f"{note} (accepted: {span})"


def _plan_dropin(entry: TuningDropin,
                 facts: Mapping[str, Value]) -> tuple[PlannedOutput, bytes]:
    """The drop-in's output (its file planned by :func:`agent.service.dropins.plan`) and content."""
    from agent.tuning import profiles  # noqa: PLC0415 - loaded only when used
    label = f"drop-in {entry.unit}"
    lines = [DROPIN_HEADER, "[Service]\n"]
    values = []
    for key, compiled in entry.expressions.items():
        try:
            if isinstance(compiled, dict):
                words = []
                for name, expression in compiled.items():
                    value = _explain_one(f"{key}.{name}", expression, facts)
                    try:
                        words.append(profiles.environment_word(name, value.rendered))
                    except ValueError as exc:
                        raise ValueError(f"{key}.{name}: {exc}") from None
                    values.append(value)
                lines.append(f"{key}={' '.join(words)}\n")
                continue
            value = _explain_one(key, compiled, facts)
            written = _service_value(profiles.SERVICE_KEYS, key, value.explanation.result)
        except (ExprError, ValueError) as exc:
            raise TuningError(f"tuning {label}: {exc}") from None
        values.append(dataclasses.replace(value, written=written))
        lines.append(f"{key}={written}\n")
    content = "".join(lines).encode()
    return PlannedOutput("dropin", label, "dropin", FilePlan("", content, dropins.MODE),
                         values, {"unit": entry.unit}), content


def _service_value(keys: Mapping[str, profiles.ServiceKey], key: str, value: Value) -> str:
    try:
        return keys[key].render(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _explain_one(name: str, expression: Expression, facts: Mapping[str, Value]) -> PlannedValue:
    """One value explained; ExprError naming it."""
    try:
        return PlannedValue(name, expression.text, expression.explain(facts))
    except ExprError as exc:
        raise ExprError(f"{name}: {exc}") from None


def sysctl_path(key: str, root: str = SYSCTL_ROOT) -> str:
    """``net.core.somaxconn`` -> ``/proc/sys/net/core/somaxconn`` (``/`` in a name is ``.``,
    as sysctl(8) writes VLAN interfaces: ``net.ipv4.conf.eth0/100.rp_filter``)."""
    return os.path.join(root, *(part.replace("/", ".") for part in key.split(".")))


def _plan_sysctl(key: str, expression: Expression, facts: Mapping[str, Value],
                 root: str) -> PlannedSysctl:
    from agent.tuning import profiles  # noqa: PLC0415 - loaded only when used
    path = sysctl_path(key, root)
    try:
        value = _explain_one(key, expression, facts)
        written = profiles.sysctl_value(value.explanation.result)
    except ExprError as exc:
        raise TuningError(f"tuning sysctl {exc}") from None
    except ValueError as exc:
        raise TuningError(f"tuning sysctl {key}: {exc}") from None
    try:
        current: str | None = read_regular(path, SYSCTL_LIMIT).decode().strip()
    except (OSError, ValueError):  # absent, Unreadable, not UTF-8
        current = None
    return PlannedSysctl(key, path, dataclasses.replace(value, written=written), current)


def _template_scope(facts: Mapping[str, Value],
                    outputs: list[PlannedOutput]) -> dict[str, list[PlannedValue]]:
    """Every name a template may use: the facts, then each file's and profile's values."""
    scope: dict[str, list[PlannedValue]] = {
        name: [PlannedValue(name, name, Explanation(value, render_value(value), ()),
                            origin="facts")]
        for name, value in facts.items()}
    for output in outputs:
        if output.kind in ("file", "profile"):
            for value in output.values:
                scope.setdefault(value.name, []).append(
                    dataclasses.replace(value, origin=output.label))
    return scope


def _plan_template(entry: TuningTemplate,
                   scope: dict[str, list[PlannedValue]]) -> PlannedOutput:
    label = f"template {entry.source} -> {entry.path}"
    try:
        text = read_template(entry.source)
        names = template_names(text)
    except ValueError as exc:  # unreadable, or an invalid placeholder
        raise TuningError(f"tuning {label}: {exc}") from None
    distinct = {name: {v.rendered for v in values} for name, values in scope.items()}
    used = []
    for name in names:
        problem = variable_problem(name, distinct)
        if problem:
            raise TuningError(f"tuning {label}: {problem}")
        used.append(scope[name][0])
    content = string.Template(text).substitute({v.name: v.rendered for v in used})
    return PlannedOutput("template", label, "template",
                         FilePlan.of(entry.path, content.encode("utf-8"), entry.mode), used,
                         {"source": entry.source})


def _render(fmt: str, values: list[PlannedValue]) -> bytes:
    if fmt == "env":
        return envfile.render([(v.name, v.rendered) for v in values]).encode("utf-8")
    data = {v.name: _json_value(v.explanation.result) for v in values}
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _json_value(value: Value) -> Value:
    """Numbers stay numbers; a whole float is written as an integer (12288.0 -> 12288)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@frozen()
class Applied:
    """What :func:`apply` did: a record per output for state.json, and any warnings."""

    records: list[Record]
    warnings: list[str]


def apply(tuning_plan: TuningPlan, *, previous: list[Record] | None = None) -> Applied:
    """Carry out the plan's changes, all or nothing as far as the system allows.

    Every file that changes (env, JSON, profiles, drop-ins, templates) is first written in
    full next to its target, then sysctls are set (undone if one fails), then the files are
    renamed into place, then stale drop-ins are removed and systemd reloaded if a drop-in
    changed. ``previous``: the ``tuning`` records of an earlier run of this boot, so that a
    sysctl's ``previous`` stays the value from before the agent first set it.
    """
    for sysctl in tuning_plan.sysctls:
        if sysctl.current is None:
            raise TuningError(f"tuning sysctl {sysctl.key}: no such kernel setting here "
                              f"({sysctl.path})")
    ready, warnings = dropins.held([o.file for o in tuning_plan.outputs])
    writing = [o for o in tuning_plan.outputs if o.file in ready]
    writer = files.Writer()
    done: list[PlannedSysctl] = []
    try:
        for output in writing:
            try:
                writer.stage([output.file])
            except OSError as exc:
                raise _write_error(output, exc) from None
        for sysctl in tuning_plan.sysctls:
            if sysctl.changed:
                _write_sysctl(sysctl, sysctl.value.rendered)
                done.append(sysctl)
        try:
            writer.switch()
        except OSError as exc:
            output = next(o for o in writing if o.file is writer.staged[0][0])
            raise _write_error(output, exc) from None
    except TuningError:
        writer.undo()
        for sysctl in reversed(done):
            with contextlib.suppress(TuningError):
                _write_sysctl(sysctl, sysctl.current or "")
        raise
    records = [o.record(written=o in writing) for o in tuning_plan.outputs]
    written = any(o.kind == "dropin" and o.file.writes for o in writing)
    removed, problems = dropins.finish(tuning_plan.stale, written)
    records += [{"kind": "dropin", "unit": dropins.unit_of(item.path), "path": item.path,
                 "format": "dropin", "values": {}, "changed": True, "removed": True}
                for item in removed]
    records += _sysctl_records(tuning_plan.sysctls,
                               previous if isinstance(previous, list) else [])
    return Applied(records, warnings + problems)


def _write_error(output: PlannedOutput, exc: OSError) -> TuningError:
    return TuningError(f"tuning {output.label}: cannot write {output.path}: "
                       f"{exc.strerror or exc}")


def _write_sysctl(sysctl: PlannedSysctl, text: str) -> None:
    try:
        fd = os.open(sysctl.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise TuningError(f"tuning sysctl {sysctl.key}: cannot write {text}: "
                          f"{exc.strerror or exc}") from None


def _sysctl_records(sysctls: list[PlannedSysctl], previous: list[Record]) -> list[Record]:
    """Each sysctl's record; ``previous`` is the value from before the agent first set it."""
    earlier = {r.get("key"): r for r in previous
               if isinstance(r, dict) and r.get("kind") == "sysctl"}
    records = []
    for sysctl in sysctls:
        before = sysctl.current
        record = earlier.get(sysctl.key) or {}
        if record.get("value") == sysctl.current and isinstance(record.get("previous"), str):
            before = record["previous"]  # set by an earlier run of this boot: keep the original
        records.append({"kind": "sysctl", "key": sysctl.key, "previous": before,
                        "value": sysctl.value.rendered, "changed": sysctl.changed})
    return records


def summary(records: list[Record]) -> str:
    """``"14 values in 2 files, 1 drop-in, 1 sysctl"`` (for the phase's detail)."""
    live = [r for r in records if not r.get("removed")]
    count = sum(1 if r["kind"] == "sysctl" else len(r["values"]) for r in live
                if r["kind"] != "template")
    parts = []
    for kind, word in (("file", "file"), ("profile", "profile"), ("dropin", "drop-in"),
                       ("template", "template"), ("sysctl", "sysctl")):
        number = sum(1 for r in live if r["kind"] == kind)
        if number:
            parts.append(f"{number} {word}{'s' if number != 1 else ''}")
    return f"{count} value{'s' if count != 1 else ''} in {', '.join(parts) or 'no outputs'}"


def phase(cfg: TuningConfig, meta: Metadata, rec: Recorder,
          machine: Callable[[], Facts], context: LaunchContext) -> tuple[PhaseState, str]:
    """The boot's tuning phase: a resize noted (this boot recorded in the history, with its
    Auto Scaling target state); facts of this machine and type, every value computed, then
    the outputs written (none of them when a value fails)."""
    identity, target_state = meta.identity, meta.target_state
    resize, problem = history.track_instance(cfg.history_file, identity.instance_id,
                                             identity.instance_type, target_state=target_state)
    if problem:
        rec.warn(f"tuning: {problem}")
    if resize:
        rec.update(resize=resize)
    resized = f"; resized from {resize['from']}" if resize else ""
    if not cfg.has_outputs:
        return PhaseState.SKIPPED, f"no tuning configured{resized}"
    facts = machine()
    tuned = plan(cfg, facts, context=context)
    rec.skipped("tuning", tuned.skipped)
    applied = apply(tuned, previous=(rec.previous or {}).get("tuning"))
    rec.update(tuning=applied.records)
    for warning in applied.warnings:
        rec.warn(f"tuning: {warning}")
    return PhaseState.DONE, (f"{summary(applied.records)} for {facts.memory_mib} MiB, "
                             f"{facts.vcpus} vCPUs{resized}")
