"""The bundled instance type table and DescribeInstanceTypes records."""

from __future__ import annotations

import pytest

from agent.instance.types import InstanceType, from_describe, image_arch, lookup, table


def test_known_types_have_their_nominal_figures() -> None:
    assert lookup("m5.xlarge") == InstanceType(16384, 4, "x86_64")
    assert lookup("t3.nano") == InstanceType(512, 2, "x86_64")
    assert lookup("m7g.large") == InstanceType(8192, 2, "arm64")


def test_an_unknown_type_is_none_not_an_error() -> None:
    assert lookup("z99.mega") is None
    assert lookup("") is None


def test_the_table_is_large_and_sane() -> None:
    every = table()
    assert len(every) > 500
    assert {t.arch for t in every.values()} <= {"x86_64", "arm64"}
    assert all(t.memory_mib > 0 and t.vcpus > 0 for t in every.values())
    assert every["c6i.2xlarge"] == lookup("c6i.2xlarge")


@pytest.mark.parametrize(("supported", "arch"), [
    (["x86_64"], "x86_64"),
    (["i386", "x86_64"], "x86_64"),
    (["arm64"], "arm64"),
    (["arm64_mac"], "arm64"),
    (["x86_64_mac"], "x86_64"),
    (["i386"], "i386"),  # no 64-bit one: the first listed
])
def test_image_arch_is_the_first_64_bit_architecture(supported: list[str], arch: str) -> None:
    assert image_arch(supported) == arch


def test_a_describe_record() -> None:
    record = {"InstanceType": "mac2.metal", "MemoryInfo": {"SizeInMiB": 16384},
              "VCpuInfo": {"DefaultVCpus": 8},
              "ProcessorInfo": {"SupportedArchitectures": ["arm64_mac"]}}
    assert from_describe(record) == InstanceType(16384, 8, "arm64")
    del record["VCpuInfo"]
    with pytest.raises(KeyError):
        from_describe(record)
