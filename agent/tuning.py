"""Tuning: facts about the machine, a plan of every value, and the one step that writes.

:func:`read_facts` measures the running machine (memory and CPUs, cgroup limits included)
and looks up the type's nominal size; :func:`plan` computes and renders every output (env and
JSON files, profiles, systemd drop-ins, templates, sysctls), reading but never writing;
:func:`apply` writes them: everything is computed first, so a value that fails writes nothing.
:func:`track_instance` keeps the type of the previous boot, to notice a resize.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from agent import envfile, profiles
from agent.config import (
    DROPIN_NAME,
    TuningConfig,
    TuningDropin,
    TuningProfile,
    TuningTemplate,
    template_problem,
)
from agent.errors import TuningError
from agent.expr import (
    Explanation,
    ExprError,
    Value,
    compile_expression,
    render_value,
    template_names,
)
from agent.fsutil import atomic_write, make_dirs, write_new
from agent.instance_types import InstanceType, lookup
from agent.service import daemon_reload, dropin_blocked
from agent.state import boot_id, utc_now

MIB = 1024 * 1024
V1_UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a huge page-rounded number

Describe = Callable[[str], InstanceType | None]


@dataclass(frozen=True)
class Facts:
    """What tuning expressions may read (agent.expr.FACTS names the same fields)."""

    memory_mib: int
    vcpus: int
    instance_type: str
    family: str
    generation: int
    size: str
    arch: str
    instance_memory_mib: int
    instance_vcpus: int

    def as_dict(self) -> dict[str, int | str]:
        """The facts by name, as expressions see them."""
        return dataclasses.asdict(self)


def split_type(instance_type: str) -> tuple[str, int, str]:
    """``"m5d.xlarge"`` -> ``("m5d", 5, "xlarge")``: family, generation (0 if none), size."""
    family, _, size = instance_type.partition(".")
    digits = re.search(r"\d+", family)
    return family, int(digits.group()) if digits else 0, size


def read_facts(instance_type: str, *, describe: Describe | None = None,
               root: str = "/") -> Facts:
    """The running machine's facts: real memory and CPUs (cgroup limits applied), type data."""
    base = Path(root)
    memory = _mem_total_mib(base)
    limit = _memory_limit_mib(base)
    vcpus = len(os.sched_getaffinity(0))
    quota = _cpu_limit(base)
    return _facts(instance_type, describe,
                  memory if limit is None else min(memory, limit),
                  vcpus if quota is None else max(1, min(vcpus, quota)))


def nominal_facts(instance_type: str, *, describe: Describe | None = None) -> Facts:
    """Facts of a type as launched, without a machine: memory and vCPUs are its nominal ones."""
    return _facts(instance_type, describe, None, None)


def _facts(instance_type: str, describe: Describe | None, memory_mib: int | None,
           vcpus: int | None) -> Facts:
    nominal = lookup(instance_type)
    if nominal is None and describe is not None:
        nominal = describe(instance_type)
        if nominal is None:
            raise TuningError(f"unknown instance type {instance_type!r}: not in the bundled "
                              "table and DescribeInstanceTypes does not know it")
    if nominal is None:
        raise TuningError(f"unknown instance type {instance_type!r}: not in the bundled table "
                          "(run scripts/gen_instance_types.py) and DescribeInstanceTypes is "
                          "not available")
    family, generation, size = split_type(instance_type)
    return Facts(
        memory_mib=nominal.memory_mib if memory_mib is None else memory_mib,
        vcpus=nominal.vcpus if vcpus is None else vcpus,
        instance_type=instance_type, family=family, generation=generation, size=size,
        arch=nominal.arch, instance_memory_mib=nominal.memory_mib,
        instance_vcpus=nominal.vcpus,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _mem_total_mib(root: Path) -> int:
    """MemTotal: psutil on the real machine, <root>/proc/meminfo under a test root."""
    if root == Path("/"):
        import psutil  # noqa: PLC0415 - only the boot needs it, not plan

        return int(psutil.virtual_memory().total // MIB)
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            return int(rest.split()[0]) // 1024  # kB
    raise TuningError(f"cannot read MemTotal from {root / 'proc/meminfo'}")


def _cgroup_dirs(root: Path, controller: str) -> Iterator[tuple[int, Path]]:
    """(cgroup version, directory) of this process's cgroup for ``controller``, then of
    each ancestor up to the hierarchy's root (limits apply from every level)."""
    mount = root / "sys/fs/cgroup"
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            version, bases = 2, [mount]
        elif controller in controllers.split(","):
            version, bases = 1, [mount / controllers, mount / controller]
        else:
            continue
        base = next((b for b in bases if b.is_dir()), None)
        parts = [p for p in PurePosixPath(path).parts if p not in ("/", "..", ".")]
        for depth in range(len(parts), -1, -1):
            if base is not None:
                yield version, base.joinpath(*parts[:depth])


def _memory_limit_mib(root: Path) -> int | None:
    """The tightest cgroup memory limit over this process's cgroup and its ancestors."""
    limits = []
    for version, directory in _cgroup_dirs(root, "memory"):
        text = _read(directory / ("memory.max" if version == 2 else "memory.limit_in_bytes"))
        if text and text.isdigit() and (version == 2 or int(text) < V1_UNLIMITED):
            limits.append(int(text) // MIB)
    return min(limits) if limits else None


def _cpu_limit(root: Path) -> int | None:
    """The tightest cgroup CPU quota, in whole CPUs (rounded up), or None."""
    limits = []
    for version, directory in _cgroup_dirs(root, "cpu"):
        if version == 2:
            quota, _, period = (_read(directory / "cpu.max") or "").partition(" ")
        else:
            quota = _read(directory / "cpu.cfs_quota_us") or ""
            period = _read(directory / "cpu.cfs_period_us") or ""
        if quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
            limits.append(math.ceil(int(quota) / int(period)))
    return min(limits) if limits else None


Record = dict[str, Any]  # what state.json keeps of one output (tuned values are not secret)
SYSCTL_ROOT = "/proc/sys"
DROPIN_HEADER = "# Written by the instance boot agent ([[tuning.dropins]]); do not edit.\n"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class PlannedOutput:
    """One file to write: what kind, where, how, its complete content and the values in it."""

    kind: str  # "file" | "profile" | "dropin" | "template"
    label: str  # names the output in messages and in plan
    path: str  # "" : not written (a profile whose values only feed templates)
    format: str  # "env" | "json" | "dropin" | "template"
    mode: int
    content: bytes
    values: list[PlannedValue]
    about: dict[str, str] = field(default_factory=dict)  # {"profile": "jvm"}, {"unit": ...}

    def current(self) -> bytes | None:
        """What the file holds now (None when absent or unreadable)."""
        try:
            return Path(self.path).read_bytes() if self.path else None
        except OSError:
            return None

    def record(self, changed: bool) -> Record:
        """The state.json record of this output."""
        return {"kind": self.kind, **self.about, "path": self.path, "format": self.format,
                "values": {v.name: v.rendered for v in self.values}, "changed": changed}


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class TuningPlan:
    """Every output of the tuning phase, computed for one set of facts; nothing written."""

    facts: Facts
    outputs: list[PlannedOutput]
    sysctls: list[PlannedSysctl] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # drop-ins of ours no longer configured


def plan(cfg: TuningConfig, facts: Facts, *, sysctl_root: str = SYSCTL_ROOT) -> TuningPlan:
    """Compute and render every output; reads templates and current sysctls, writes nothing."""
    names = facts.as_dict()
    outputs = [_plan_values_file(entry.path, "file", entry.path, entry.format, entry.mode,
                                 _explain_all(entry.path, entry.values, names), {})
               for entry in cfg.files]
    outputs += [_plan_profile(entry, names) for entry in cfg.profiles]
    outputs += [_plan_dropin(cfg, entry, names) for entry in cfg.dropins]
    sysctls = [_plan_sysctl(key, text, names, sysctl_root) for key, text in cfg.sysctl.items()]
    scope = _template_scope(names, outputs)
    outputs += [_plan_template(entry, scope) for entry in cfg.templates]
    return TuningPlan(facts, outputs, sysctls, _stale_dropins(cfg))


def _explain_all(label: str, values: Mapping[str, str],
                 facts: Mapping[str, Value]) -> list[PlannedValue]:
    planned = []
    for name, text in values.items():
        try:
            explanation = compile_expression(text).explain(facts)
        except ExprError as exc:
            raise TuningError(f"tuning {label}: {name}: {exc}") from None
        planned.append(PlannedValue(name, text, explanation))
    return planned


def _plan_values_file(label: str, kind: str, path: str, fmt: str, mode: int,
                      values: list[PlannedValue], about: dict[str, str]) -> PlannedOutput:
    try:
        content = _render(fmt, values)
    except envfile.EnvFileError as exc:
        raise TuningError(f"tuning {label}: {exc}") from None
    return PlannedOutput(kind, label, path, fmt, mode, content, values, about)


def _plan_profile(entry: TuningProfile, facts: Mapping[str, Value]) -> PlannedOutput:
    label = f"profile {entry.use}" + (f" -> {entry.path}" if entry.path else "")
    try:
        results = profiles.evaluate(profiles.compile_profile(entry.use, entry.overrides), facts)
    except (ExprError, ValueError) as exc:
        raise TuningError(f"tuning {label}: {exc}") from None
    values = [PlannedValue(item.name, item.text, explanation, note=_note(item))
              for item, explanation in results]
    return _plan_values_file(label, "profile", entry.path, entry.format, entry.mode, values,
                             {"profile": entry.use})


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


def _plan_dropin(cfg: TuningConfig, entry: TuningDropin,
                 facts: Mapping[str, Value]) -> PlannedOutput:
    label = f"drop-in {entry.unit}"
    lines = [DROPIN_HEADER, "[Service]\n"]
    values = []
    for key, text in entry.service.items():
        try:
            if isinstance(text, dict):
                words = []
                for name, expression in text.items():
                    value = _explain_one(f"{key}.{name}", expression, facts)
                    try:
                        words.append(profiles.environment_word(name, value.rendered))
                    except ValueError as exc:
                        raise ValueError(f"{key}.{name}: {exc}") from None
                    values.append(value)
                lines.append(f"{key}={' '.join(words)}\n")
                continue
            value = _explain_one(key, text, facts)
            written = _service_value(key, value.explanation.result)
        except (ExprError, ValueError) as exc:
            raise TuningError(f"tuning {label}: {exc}") from None
        values.append(dataclasses.replace(value, written=written))
        lines.append(f"{key}={written}\n")
    return PlannedOutput("dropin", label, cfg.dropin_path(entry.unit), "dropin", 0o644,
                         "".join(lines).encode(), values, {"unit": entry.unit})


def _service_value(key: str, value: Value) -> str:
    try:
        return profiles.SERVICE_KEYS[key].render(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _explain_one(name: str, text: str, facts: Mapping[str, Value]) -> PlannedValue:
    """One value explained; ExprError naming it."""
    try:
        return PlannedValue(name, text, compile_expression(text).explain(facts))
    except ExprError as exc:
        raise ExprError(f"{name}: {exc}") from None


def sysctl_path(key: str, root: str = SYSCTL_ROOT) -> str:
    """``net.core.somaxconn`` -> ``/proc/sys/net/core/somaxconn`` (``/`` in a name is ``.``,
    as sysctl(8) writes VLAN interfaces: ``net.ipv4.conf.eth0/100.rp_filter``)."""
    return os.path.join(root, *(part.replace("/", ".") for part in key.split(".")))


def _plan_sysctl(key: str, text: str, facts: Mapping[str, Value], root: str) -> PlannedSysctl:
    path = sysctl_path(key, root)
    try:
        value = _explain_one(key, text, facts)
        written = profiles.sysctl_value(value.explanation.result)
    except ExprError as exc:
        raise TuningError(f"tuning sysctl {exc}") from None
    except ValueError as exc:
        raise TuningError(f"tuning sysctl {key}: {exc}") from None
    try:
        current: str | None = Path(path).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
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
        text = Path(entry.source).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise TuningError(f"tuning {label}: cannot read {entry.source}: {reason}") from None
    try:
        names = template_names(text)
    except ExprError as exc:
        raise TuningError(f"tuning {label}: {exc}") from None
    distinct = {name: {v.rendered for v in values} for name, values in scope.items()}
    used = []
    for name in names:
        problem = template_problem(name, distinct)
        if problem:
            raise TuningError(f"tuning {label}: {problem}")
        used.append(scope[name][0])
    content = string.Template(text).substitute({v.name: v.rendered for v in used})
    return PlannedOutput("template", label, entry.path, "template", entry.mode,
                         content.encode("utf-8"), used, {"source": entry.source})


def _stale_dropins(cfg: TuningConfig) -> list[str]:
    """Our drop-ins in unit_dir for units no longer configured (to be removed)."""
    wanted = {cfg.dropin_path(entry.unit) for entry in cfg.dropins}
    try:
        found = sorted(str(p) for p in Path(cfg.unit_dir).glob(f"*.d/{DROPIN_NAME}"))
    except OSError:
        return []
    return [path for path in found if path not in wanted]


def _render(fmt: str, values: list[PlannedValue]) -> bytes:
    if fmt == "env":
        return envfile.render([(v.name, v.rendered) for v in values]).encode("utf-8")
    data = {v.name: _json_value(v.explanation.result) for v in values}
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _json_value(value: Value) -> Value:
    """Numbers stay numbers; a whole float is written as an integer (12288.0 -> 12288)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class Applied:
    """What :func:`apply` did: a record per output for state.json, and any warnings."""

    records: list[Record]
    warnings: list[str]


def apply(tuning_plan: TuningPlan, *, previous: list[Record] | None = None) -> Applied:
    """Write every planned output, all or nothing as far as the system allows.

    Files (env, JSON, profiles, drop-ins, templates) are first written in full next to their
    targets, then sysctls are set (undone if one fails), then the files are renamed into
    place. A file whose content and mode are already right is left untouched (``changed``
    false). ``previous``: the ``tuning`` records of an earlier run of this boot, so that a
    sysctl's ``previous`` stays the value from before the agent first set it.
    """
    for sysctl in tuning_plan.sysctls:
        if sysctl.current is None:
            raise TuningError(f"tuning sysctl {sysctl.key}: no such kernel setting here "
                              f"({sysctl.path})")
    held = [o for o in tuning_plan.outputs if o.kind == "dropin" and dropin_blocked(o.path)]
    writer = _Writer()
    try:
        writer.write(dataclasses.replace(
            tuning_plan, outputs=[o for o in tuning_plan.outputs if o not in held]))
    except TuningError:
        writer.undo()
        raise
    applied = _finish(tuning_plan, writer.changed, previous if isinstance(previous, list) else [])
    applied.warnings[:0] = [f"{o.label} not written: systemd is not running" for o in held]
    return applied


class _Writer:
    """Stages files, sets sysctls, switches files; remembers enough to undo until the end."""

    def __init__(self) -> None:
        self.changed: set[int] = set()  # id() of the outputs whose content changes
        self.staged: list[tuple[PlannedOutput, Path]] = []
        self.created: list[Path] = []  # directories made for the outputs
        self.done: list[PlannedSysctl] = []

    def write(self, tuning_plan: TuningPlan) -> None:
        """Everything, in the order that keeps a failure undoable."""
        for output in tuning_plan.outputs:
            if not output.path:
                continue
            if output.current() != output.content:
                self.changed.add(id(output))
            if id(output) in self.changed or not _has_mode(output.path, output.mode):
                self.staged.append((output, self.stage(output)))
        for sysctl in tuning_plan.sysctls:
            if sysctl.changed:
                _write_sysctl(sysctl, sysctl.value.rendered)
                self.done.append(sysctl)
        for output, temp in self.staged:
            _switch(output, temp)
        self.staged, self.created = [], []  # all in place: nothing left to undo

    def stage(self, output: PlannedOutput) -> Path:
        """The complete new file, with its final mode, beside the target (not yet in place)."""
        target = Path(output.path)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.make_parents(target.parent)
            write_new(temp, output.content, output.mode)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise TuningError(f"tuning {output.label}: cannot write {output.path}: "
                              f"{exc.strerror or exc}") from None
        return temp

    def make_parents(self, directory: Path) -> None:
        """Missing directories, 0755 whatever the umask: tuned values are for every user."""
        self.created += make_dirs(directory, 0o755)

    def undo(self) -> None:
        """Sysctls back to what they were, staged files and new directories gone."""
        for sysctl in reversed(self.done):
            with contextlib.suppress(TuningError):
                _write_sysctl(sysctl, sysctl.current or "")
        for _, temp in self.staged:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        for path in reversed(self.created):
            with contextlib.suppress(OSError):
                path.rmdir()


def _switch(output: PlannedOutput, temp: Path) -> None:
    try:
        os.replace(temp, output.path)
    except OSError as exc:
        raise TuningError(f"tuning {output.label}: cannot write {output.path}: "
                          f"{exc.strerror or exc}") from None


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


def _has_mode(path: str, mode: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000 and (st.st_mode & 0o7777) == mode


def _finish(tuning_plan: TuningPlan, changed: set[int], previous: list[Record]) -> Applied:
    """Remove stale drop-ins, reload systemd if a drop-in changed; the records."""
    warnings: list[str] = []
    records = [output.record(id(output) in changed) for output in tuning_plan.outputs]
    reload = any(o.kind == "dropin" and id(o) in changed for o in tuning_plan.outputs)
    for path in tuning_plan.stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            warnings.append(f"cannot remove the stale drop-in {path}: {exc.strerror}")
            continue
        records.append({"kind": "dropin", "unit": Path(path).parent.name.removesuffix(".d"),
                        "path": path, "format": "dropin", "values": {}, "changed": True,
                        "removed": True})
        reload = True
    earlier = {r.get("key"): r for r in previous
               if isinstance(r, dict) and r.get("kind") == "sysctl"}
    for sysctl in tuning_plan.sysctls:
        before = sysctl.current
        record = earlier.get(sysctl.key) or {}
        if record.get("value") == sysctl.current and isinstance(record.get("previous"), str):
            before = record["previous"]  # set by an earlier run of this boot: keep the original
        records.append({"kind": "sysctl", "key": sysctl.key, "previous": before,
                        "value": sysctl.value.rendered, "changed": sysctl.changed})
    if reload:
        problem = daemon_reload()
        if problem:
            warnings.append(f"drop-ins written but {problem}")
    return Applied(records, warnings)


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


# --- resize awareness --------------------------------------------------------------------


def track_instance(path: str, instance_id: str, instance_type: str, *,
                   boot: str | None = None, now: str | None = None) -> tuple[Record | None, str]:
    """Compare this boot's instance type with the previous boot's; record this boot's.

    ``path`` (``tuning.history_file``) must survive reboots (/run does not). Returns the
    resize (``{"from", "to", "previous_boot_at"}``) or None, and a problem ('' when none):
    a history that cannot be written is a warning, never a failure. Another instance's
    history (one baked into the image) is not a previous boot of this one.
    """
    if not path:
        return None, ""
    boot = boot_id() if boot is None else boot
    old = _read_json(path)
    previous = None
    if old.get("instance_id") == instance_id:
        if old.get("boot_id") == boot:  # an earlier run during this boot
            previous = old.get("previous") if isinstance(old.get("previous"), dict) else None
        else:
            previous = {k: old.get(k) for k in ("instance_type", "boot_id", "recorded_at")}
    same_boot = old.get("instance_id") == instance_id and old.get("boot_id") == boot
    doc = {"version": 1, "instance_id": instance_id, "instance_type": instance_type,
           "boot_id": boot,
           "recorded_at": old.get("recorded_at") if same_boot else (now or utc_now()),
           "previous": previous}
    resize = None
    if previous and previous.get("instance_type") not in (None, instance_type):
        resize = {"from": str(previous["instance_type"]), "to": instance_type,
                  "previous_boot_at": str(previous.get("recorded_at") or "")}
    if doc == old:
        return resize, ""
    try:
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    except OSError as exc:
        return resize, (f"cannot record the instance type in {path}: {exc.strerror or exc} "
                        "(needed to notice a resize at the next boot)")
    return resize, ""


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
