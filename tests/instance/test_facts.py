"""Instance facts: the bundled type table, fake /proc and cgroup trees, nominal facts."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from agent.errors import TuningError
from agent.instance.facts import Facts, nominal_facts, read_facts, split_type
from agent.instance.types import InstanceType, from_describe, lookup, table
from agent.schema.expr import MACHINE_FACTS

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3


@pytest.mark.parametrize(("name", "expected"), [
    ("m5d.xlarge", ("m5d", 5, "xlarge")),
    ("m5.xlarge", ("m5", 5, "xlarge")),
    ("t3.nano", ("t3", 3, "nano")),
    ("r6g.16xlarge", ("r6g", 6, "16xlarge")),
    ("c7g.medium", ("c7g", 7, "medium")),
    ("x2iedn.24xlarge", ("x2iedn", 2, "24xlarge")),
    ("p4de.24xlarge", ("p4de", 4, "24xlarge")),
    ("hpc7g.16xlarge", ("hpc7g", 7, "16xlarge")),
    ("c8gd.metal-48xl", ("c8gd", 8, "metal-48xl")),
    ("u-6tb1.metal", ("u-6tb1", 6, "metal")),
    ("u7in-16tb.224xlarge", ("u7in-16tb", 7, "224xlarge")),
    ("mac2-m2pro.metal", ("mac2-m2pro", 2, "metal")),
    ("mac-m4.metal", ("mac-m4", 4, "metal")),
    ("m7i-flex.large", ("m7i-flex", 7, "large")),
    ("t1.micro", ("t1", 1, "micro")),
    ("weird", ("weird", 0, "")),
    ("", ("", 0, "")),
    ("a.b.c", ("a", 0, "b.c")),
])
def test_split_type(name: str, expected: tuple[str, int, str]) -> None:
    assert split_type(name) == expected


@pytest.mark.parametrize(("name", "memory", "vcpus", "arch"), [
    ("t3.nano", 512, 2, "x86_64"),
    ("t3.micro", 1024, 2, "x86_64"),
    ("t4g.small", 2048, 2, "arm64"),
    ("m5.xlarge", 16384, 4, "x86_64"),
    ("c7g.medium", 2048, 1, "arm64"),
    ("r6g.16xlarge", 524288, 64, "arm64"),
    ("mac2-m2pro.metal", 32768, 12, "arm64"),  # arm64_mac
    ("mac1.metal", 32768, 12, "x86_64"),  # x86_64_mac
    ("m1.small", 1740, 1, "x86_64"),  # listed as ["i386", "x86_64"]
])
def test_bundled_table(name: str, memory: int, vcpus: int, arch: str) -> None:
    assert lookup(name) == InstanceType(memory, vcpus, arch)


def test_table_is_complete_and_sane() -> None:
    rows = table()
    assert len(rows) > 1000
    assert lookup("x1.weird") is None
    for name, row in rows.items():
        assert "." in name
        assert row.memory_mib > 0 and row.vcpus > 0, name
        assert row.arch in ("x86_64", "arm64"), name


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_instance_types",
                                                  REPO / "scripts/gen_instance_types.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(name: str, memory: int, vcpus: int, archs: list[str]) -> dict[str, object]:
    return {"InstanceType": name, "MemoryInfo": {"SizeInMiB": memory},
            "VCpuInfo": {"DefaultVCpus": vcpus},
            "ProcessorInfo": {"SupportedArchitectures": archs}}


@pytest.mark.parametrize(("archs", "arch"), [
    (["x86_64"], "x86_64"), (["arm64"], "arm64"), (["i386", "x86_64"], "x86_64"),
    (["x86_64_mac"], "x86_64"), (["arm64_mac"], "arm64"),
])
def test_from_describe(archs: list[str], arch: str) -> None:
    assert from_describe(_record("x.large", 1024, 2, archs)) == InstanceType(1024, 2, arch)


@pytest.mark.parametrize("shape", ["merged", "pages"])
def test_generator_from_file(tmp_path: Path, shape: str) -> None:
    records = [_record("z9.large", 8192, 2, ["arm64"]), _record("a1.medium", 2048, 1, ["arm64"]),
               _record("m1.small", 1740, 1, ["i386", "x86_64"]),
               _record("mac1.metal", 32768, 12, ["x86_64_mac"]),
               {"InstanceType": "broken.large"}]
    dump: object = {"InstanceTypes": records}
    if shape == "pages":
        dump = [{"InstanceTypes": records[:2], "NextToken": "x"}, {"InstanceTypes": records[2:]}]
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    out = tmp_path / "out.json"
    gen = _generator()
    args = ["--from-file", str(tmp_path / "dump.json"), "--output", str(out)]
    assert gen.main(args) == 0
    assert out.read_text() == (
        '{\n"a1.medium":[2048,1,"arm64"],\n"m1.small":[1740,1,"x86_64"],\n'
        '"mac1.metal":[32768,12,"x86_64"],\n"z9.large":[8192,2,"arm64"]\n}\n')
    assert gen.main([*args, "--check"]) == 0
    out.write_text("{}\n")
    assert gen.main([*args, "--check"]) == 1


def test_bundled_table_is_what_the_generator_makes() -> None:
    pytest.importorskip("moto")
    assert _generator().main(["--check"]) == 0


# --- facts -------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return str(root)


MEMINFO = {"proc/meminfo": "MemTotal:       15950164 kB\nMemFree:         1000 kB"}  # 15576 MiB


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


@pytest.mark.usefixtures("four_cpus")
def test_facts_without_cgroup_limits(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO)  # no /proc/self/cgroup at all
    facts = read_facts("m5.xlarge", root=root)
    assert facts == Facts(memory_mib=15576, machine_memory_mib=15576, vcpus=4,
                          instance_type="m5.xlarge", family="m5",
                          generation=5, size="xlarge", arch="x86_64",
                          instance_memory_mib=16384, instance_vcpus=4)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v2_limits_walk_up_the_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": "0::/system.slice/app.service",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/system.slice/app.service/memory.max": "max",
        "sys/fs/cgroup/system.slice/app.service/cpu.max": "max 100000",
        "sys/fs/cgroup/system.slice/memory.max": str(2 * GIB),
        "sys/fs/cgroup/system.slice/cpu.max": "150000 100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (2048, 2)  # ceil(1.5)
    assert facts.machine_memory_mib == 2048  # the machine as this process sees it
    assert (facts.instance_memory_mib, facts.instance_vcpus) == (16384, 4)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v2_tightest_level_wins(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": "0::/a/b",
        "sys/fs/cgroup/a/b/memory.max": str(3 * GIB),
        "sys/fs/cgroup/a/memory.max": str(5 * GIB),
        "sys/fs/cgroup/a/b/cpu.max": "300000 100000",
        "sys/fs/cgroup/a/cpu.max": "100000 100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (3072, 1)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": "0::/user.slice",
        "sys/fs/cgroup/user.slice/memory.max": "max",
        "sys/fs/cgroup/user.slice/cpu.max": "max 100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (15576, 4)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v2_limit_above_memtotal_is_memtotal(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": "0::/",  # a container's own cgroup namespace: its root
        "sys/fs/cgroup/memory.max": str(64 * GIB),
        "sys/fs/cgroup/cpu.max": "800000 100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (15576, 4)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v1_limits(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": ("12:memory:/docker/abc\n5:cpu,cpuacct:/docker/abc\n"
                             "1:name=systemd:/docker/abc"),
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(GIB),
        "sys/fs/cgroup/memory/docker/memory.limit_in_bytes": "9223372036854771712",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (1024, 1)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v1_inside_a_container_reads_the_mount_root(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {  # the path names the host's view; only the root exists
        "proc/self/cgroup": "9:memory:/kubepods/pod1/c1\n3:cpu:/kubepods/pod1/c1",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": str(512 * 1024 * 1024),
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "250000",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (512, 3)


@pytest.mark.usefixtures("four_cpus")
def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    root = _tree(tmp_path, MEMINFO | {
        "proc/self/cgroup": "12:memory:/\n5:cpu,cpuacct:/",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
    })
    facts = read_facts("m5.xlarge", root=root)
    assert (facts.memory_mib, facts.vcpus) == (15576, 4)


def test_affinity_below_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3})
    root = _tree(tmp_path, MEMINFO | {"proc/self/cgroup": "0::/a",
                                      "sys/fs/cgroup/a/cpu.max": "300000 100000"})
    assert read_facts("m5.xlarge", root=root).vcpus == 2


def test_missing_meminfo_is_a_tuning_error(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="MemTotal"):
        read_facts("m5.xlarge", root=str(tmp_path))


def test_facts_of_this_machine() -> None:
    import psutil

    facts = read_facts("c7g.medium")
    assert 0 < facts.memory_mib <= psutil.virtual_memory().total // 2**20
    assert 1 <= facts.vcpus <= len(os.sched_getaffinity(0))
    assert (facts.arch, facts.instance_memory_mib, facts.instance_vcpus) == ("arm64", 2048, 1)


def test_unknown_type_without_describe(tmp_path: Path) -> None:
    with pytest.raises(TuningError) as caught:
        read_facts("x1.weird", root=_tree(tmp_path, MEMINFO))
    assert str(caught.value) == (
        "unknown instance type 'x1.weird': not in the bundled table (DescribeInstanceTypes "
        "is asked during a boot only)")
    with pytest.raises(TuningError) as caught:
        nominal_facts("m5.xlarg")
    assert str(caught.value) == (
        "unknown instance type 'm5.xlarg': not in the bundled table; did you mean "
        "'m5.xlarge'? (DescribeInstanceTypes is asked during a boot only)")


@pytest.mark.usefixtures("four_cpus")
def test_unknown_type_with_describe(tmp_path: Path) -> None:
    asked: list[str] = []

    def describe(name: str) -> dict[str, object] | None:
        asked.append(name)
        return _record(name, 65536, 8, ["arm64"]) if name == "z9g.2xlarge" else None

    root = _tree(tmp_path, MEMINFO)
    facts = read_facts("z9g.2xlarge", describe=describe, root=root)
    assert (facts.family, facts.generation, facts.size, facts.arch) == ("z9g", 9, "2xlarge",
                                                                        "arm64")
    assert (facts.instance_memory_mib, facts.instance_vcpus, facts.memory_mib) == (65536, 8,
                                                                                   15576)
    with pytest.raises(TuningError, match=r"'x1\.weird': not in the bundled table and "
                                          "DescribeInstanceTypes does not know it"):
        read_facts("x1.weird", describe=describe, root=root)
    read_facts("m5.xlarge", describe=describe, root=root)
    assert asked == ["z9g.2xlarge", "x1.weird"]  # a bundled type never asks


def test_nominal_facts() -> None:
    facts = nominal_facts("r6g.16xlarge")
    assert facts == Facts(memory_mib=524288, machine_memory_mib=524288, vcpus=64,
                          instance_type="r6g.16xlarge",
                          family="r6g", generation=6, size="16xlarge", arch="arm64",
                          instance_memory_mib=524288, instance_vcpus=64)
    with pytest.raises(TuningError, match="unknown instance type"):
        nominal_facts("nope.large")


def test_facts_match_the_expression_language() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(Facts)}
    assert fields == {name: kind.__name__ for name, kind in MACHINE_FACTS.items()}
    assert nominal_facts("t3.nano").as_dict()["family"] == "t3"
