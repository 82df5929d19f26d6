"""Instance facts: what tuning expressions read about the machine and its type.

:func:`read_facts` measures the running machine (``MemTotal`` from /proc/meminfo and the CPUs
this process may use, lowered to the cgroup v1/v2 memory limit and CPU quota of its cgroup
and every ancestor) and looks up the type's nominal size in the bundled table
(:mod:`agent.instance.types`), or through ``DescribeInstanceTypes`` for a type the table
does not know. :func:`nominal_facts` gives a type's facts as launched, without a machine
(``agent plan --instance-type``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from agent.errors import TuningError, closest
from agent.frozen import frozen
from agent.instance.types import from_describe, lookup, table

MIB = 1024 * 1024
V1_UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a huge page-rounded number

Describe = Callable[[str], Mapping[str, Any] | None]
"""A type's ``DescribeInstanceTypes`` record, None when AWS knows none."""


@frozen()
class Facts:
    """What tuning expressions may read (agent.schema.expr.FACTS names the same fields).

    ``memory_mib`` is the machine's here; inside a program's part of the memory budget
    (:mod:`agent.tuning.budget`) expressions see its share there, and the whole in
    ``machine_memory_mib``.
    """

    memory_mib: int
    machine_memory_mib: int
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
        record = describe(instance_type)
        if record is None:
            raise TuningError(f"unknown instance type {instance_type!r}: not in the bundled "
                              "table and DescribeInstanceTypes does not know it")
        nominal = from_describe(record)
    if nominal is None:  # agent plan: no AWS call
        close = closest(instance_type, table())
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TuningError(f"unknown instance type {instance_type!r}: not in the bundled table"
                          f"{hint} (DescribeInstanceTypes is asked during a boot only)")
    family, generation, size = split_type(instance_type)
    memory = nominal.memory_mib if memory_mib is None else memory_mib
    return Facts(
        memory_mib=memory, machine_memory_mib=memory,
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
    """MemTotal of ``<root>/proc/meminfo``, in MiB."""
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            words = rest.split()
            if words and words[0].isdigit():
                return int(words[0]) // 1024  # kB
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
