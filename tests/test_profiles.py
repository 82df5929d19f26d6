"""Profiles against hand-computed values, their ranges and overrides; systemd/sysctl values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.expr import ExprError
from agent.facts import nominal_facts
from agent.profiles import (
    PROFILES,
    SERVICE_KEYS,
    check_profile,
    check_service_key,
    compile_profile,
    environment_word,
    evaluate,
    sysctl_value,
)

TYPES = ["t3.nano", "t3.micro", "t3.small", "t3.medium", "m5.large", "m5.xlarge", "c6g.large",
         "c7g.medium", "r5.2xlarge", "m7i.8xlarge", "r6g.16xlarge"]


def values(use: str, instance_type: str, **overrides: str) -> dict[str, int | float | str]:
    results = evaluate(compile_profile(use, overrides), nominal_facts(instance_type).as_dict())
    return {item.name: explanation.result for item, explanation in results}


# Expected numbers below are worked out by hand from the published formulas (README, "Tuning"),
# from each type's nominal memory (MiB) and vCPUs:
#   t3.nano 512/2, t3.micro 1024/2, t3.small 2048/2, t3.medium 4096/2, m5.large 8192/2,
#   m5.xlarge 16384/4, c6g.large 4096/2 (arm64), c7g.medium 2048/1 (arm64), r5.2xlarge 65536/8,
#   m7i.8xlarge 131072/32, r6g.16xlarge 524288/64 (arm64).

# JVM: non-heap = metaspace ceil((15000*5800 + 14e6)/2^20) = 97 + code cache 240 + direct 10
# + 250 threads * 1 MiB = 597 MiB. Heap = max(min(mem - 597, OpenJ9 default), 25% of mem),
# OpenJ9: < 1 GiB 50%, 1-2 GiB mem - 512, above 75%; then within 16..31744.
JVM = {
    "t3.nano": 128,  # min(512-597=-85, 256) -> raised to 25% = 128
    "t3.micro": 427,  # min(1024-597=427, 1024-512=512) = 427
    "t3.small": 1451,  # min(2048-597=1451, 1536) = 1451
    "c7g.medium": 1451,
    "t3.medium": 3072,  # min(3499, 3072)
    "c6g.large": 3072,
    "m5.large": 6144,  # min(7595, 6144)
    "m5.xlarge": 12288,  # min(15787, 12288)
    "r5.2xlarge": 31744,  # 49152 capped
    "m7i.8xlarge": 31744,
    "r6g.16xlarge": 31744,
}


@pytest.mark.parametrize("instance_type", TYPES)
def test_jvm(instance_type: str) -> None:
    got = values("jvm", instance_type)
    assert (got["JVM_METASPACE_MB"], got["JVM_NONHEAP_MB"]) == (97, 597)
    assert got["JVM_HEAP_MB"] == JVM[instance_type]
    assert got["JAVA_TOOL_OPTIONS"] == (
        f"-Xmx{JVM[instance_type]}m -Xss1024k -XX:MaxMetaspaceSize=97m "
        "-XX:ReservedCodeCacheSize=240m -XX:MaxDirectMemorySize=10m")


@pytest.mark.parametrize(("instance_type", "heap"), [
    ("t3.nano", 384), ("t3.micro", 768), ("t3.small", 1536), ("t3.medium", 3072),
    ("m5.large", 6144), ("m5.xlarge", 12288), ("c6g.large", 3072), ("c7g.medium", 1536),
    ("r5.2xlarge", 49152), ("m7i.8xlarge", 98304), ("r6g.16xlarge", 393216),
])
def test_node(instance_type: str, heap: int) -> None:  # 75% of memory
    assert values("node", instance_type) == {
        "NODE_MAX_OLD_SPACE_MB": heap, "NODE_OPTIONS": f"--max-old-space-size={heap}"}


@pytest.mark.parametrize(("instance_type", "workers"), [
    ("t3.nano", 5), ("t3.medium", 5), ("m5.large", 5), ("m5.xlarge", 9), ("c6g.large", 5),
    ("c7g.medium", 3), ("r5.2xlarge", 17), ("m7i.8xlarge", 65), ("r6g.16xlarge", 129),
])
def test_gunicorn(instance_type: str, workers: int) -> None:  # 2 * vcpus + 1
    assert values("gunicorn", instance_type) == {"WEB_CONCURRENCY": workers}


@pytest.mark.parametrize(("instance_type", "processes"), [
    ("t3.nano", 2), ("m5.large", 2), ("m5.xlarge", 4), ("c6g.large", 2), ("c7g.medium", 1),
    ("r5.2xlarge", 8), ("m7i.8xlarge", 32), ("r6g.16xlarge", 64),
])
def test_nginx(instance_type: str, processes: int) -> None:
    assert values("nginx", instance_type) == {
        "NGINX_WORKER_PROCESSES": processes, "NGINX_WORKER_CONNECTIONS": 1024,
        "NGINX_WORKER_RLIMIT_NOFILE": 2048}


# pgtune (web): kB of total = mem * 1024; shared_buffers /4, effective_cache_size *3/4,
# maintenance_work_mem /16 capped at 2097152, wal_buffers 3% of shared_buffers (16384 above
# 14336, at least 32), parallel settings only from 4 CPUs (else PostgreSQL's 8/2/8/2), work_mem
# (total - shared_buffers) // ((200 + max_worker_processes) * 3), at least 64.
POSTGRES = {
    #                sb          ecs         mwm      wal    mwp gather mpw maint work_mem huge
    "t3.nano": (131072, 393216, 32768, 3932, 8, 2, 8, 2, 630, "off"),
    # work_mem: (524288 - 131072) // 624 = 630
    "t3.micro": (262144, 786432, 65536, 7864, 8, 2, 8, 2, 1260, "off"),
    # wal: 262144 * 3 // 100 = 7864; work_mem 786432 // 624 = 1260
    "t3.small": (524288, 1572864, 131072, 16384, 8, 2, 8, 2, 2520, "off"),
    # wal: 15728 > 14336 -> 16384; work_mem 1572864 // 624 = 2520
    "m5.large": (2097152, 6291456, 524288, 16384, 8, 2, 8, 2, 10082, "off"),
    # work_mem 6291456 // 624 = 10082
    "m5.xlarge": (4194304, 12582912, 1048576, 16384, 4, 2, 4, 2, 20560, "off"),
    # work_mem 12582912 // 612 = 20560
    "c6g.large": (1048576, 3145728, 262144, 16384, 8, 2, 8, 2, 5041, "off"),
    # work_mem 3145728 // 624 = 5041
    "r5.2xlarge": (16777216, 50331648, 2097152, 16384, 8, 4, 8, 4, 80659, "try"),
    # mwm 4194304 capped; work_mem 50331648 // 624 = 80659
    "m7i.8xlarge": (33554432, 100663296, 2097152, 16384, 32, 4, 32, 4, 144631, "try"),
    # gather min(16, 4) = 4; work_mem 100663296 // ((200 + 32) * 3 = 696) = 144631
    "r6g.16xlarge": (134217728, 402653184, 2097152, 16384, 64, 4, 64, 4, 508400, "try"),
    # work_mem 402653184 // 792 = 508400
}


@pytest.mark.parametrize("instance_type", sorted(POSTGRES))
def test_postgres(instance_type: str) -> None:
    sb, ecs, mwm, wal, mwp, gather, mpw, maint, work_mem, huge = POSTGRES[instance_type]
    assert values("postgres", instance_type) == {
        "PG_MAX_CONNECTIONS": 200, "PG_SHARED_BUFFERS_KB": sb,
        "PG_EFFECTIVE_CACHE_SIZE_KB": ecs, "PG_MAINTENANCE_WORK_MEM_KB": mwm,
        "PG_WAL_BUFFERS_KB": wal, "PG_MAX_WORKER_PROCESSES": mwp,
        "PG_MAX_PARALLEL_WORKERS_PER_GATHER": gather, "PG_MAX_PARALLEL_WORKERS": mpw,
        "PG_MAX_PARALLEL_MAINTENANCE_WORKERS": maint, "PG_WORK_MEM_KB": work_mem,
        "PG_HUGE_PAGES": huge}


@pytest.mark.parametrize(("instance_type", "reserved", "maxmemory", "threads"), [
    ("t3.nano", 50, 256, 1),  # micro/nano: ElastiCache advises 50 %
    ("t3.micro", 50, 512, 1),
    ("t3.small", 30, 1433, 1),  # 2048 * 0.7 = 1433.6
    ("t3.medium", 25, 3072, 1),
    ("m5.large", 25, 6144, 1),
    ("m5.xlarge", 25, 12288, 3),  # 4 cores -> 3 I/O threads
    ("c6g.large", 25, 3072, 1),
    ("r5.2xlarge", 25, 49152, 6),  # 8 -> 6
    ("m7i.8xlarge", 25, 98304, 8),  # 24 capped at 8
    ("r6g.16xlarge", 25, 393216, 8),
])
def test_redis(instance_type: str, reserved: int, maxmemory: int, threads: int) -> None:
    assert values("redis", instance_type) == {
        "REDIS_RESERVED_PERCENT": reserved, "REDIS_MAXMEMORY_MB": maxmemory,
        "REDIS_IO_THREADS": threads}


# --- overrides and ranges ----------------------------------------------------------------


def test_override_feeds_later_values() -> None:
    got = values("jvm", "t3.small", JVM_THREADS="50", JVM_CODE_CACHE_MB="64")
    # non-heap: 97 + 64 + 10 + 50 = 221; heap min(2048 - 221 = 1827, 1536) = 1536
    assert (got["JVM_NONHEAP_MB"], got["JVM_HEAP_MB"]) == (221, 1536)
    assert "-Xmx1536m" in str(got["JAVA_TOOL_OPTIONS"])
    got = values("postgres", "m5.xlarge", PG_MAX_CONNECTIONS="400")
    assert got["PG_WORK_MEM_KB"] == 10381  # 12582912 // ((400 + 4) * 3)
    got = values("jvm", "m5.xlarge", JAVA_TOOL_OPTIONS='"-Xmx1g"')
    assert got["JAVA_TOOL_OPTIONS"] == "-Xmx1g"


def test_override_is_clamped_to_the_programs_range_and_explained() -> None:
    settings_ = compile_profile("jvm", {"JVM_STACK_KB": "64", "JVM_HEAP_MB": "memory_mib * 4"})
    results = dict((item.name, explanation) for item, explanation in
                   evaluate(settings_, nominal_facts("m5.xlarge").as_dict()))
    assert results["JVM_STACK_KB"].result == 256
    assert [str(c) for c in results["JVM_STACK_KB"].clamps] == [
        "clamp(64, 256, 1048576) = 256 (raised to lower bound)"]
    assert results["JVM_HEAP_MB"].result == 31744
    assert str(results["JVM_HEAP_MB"].clamps[-1]) == (
        "clamp(65536, 16, 31744) = 31744 (capped at upper bound)")
    assert values("gunicorn", "m5.xlarge", WEB_CONCURRENCY="vcpus - 10") == {
        "WEB_CONCURRENCY": 1}  # clamp(-6, 1, inf)


@pytest.mark.parametrize(("use", "overrides", "message"), [
    ("jvmm", {}, "unknown profile 'jvmm' (did you mean 'jvm'? profiles: jvm, node, gunicorn, "
                 "nginx, postgres, redis)"),
    ("tomcat", {}, "unknown profile 'tomcat' (profiles: jvm, node"),
    ("jvm", {"HEAP_MB": "1"}, "profile jvm has no value 'HEAP_MB' (did you mean 'JVM_HEAP_MB'?"),
    ("jvm", {"JVM_HEAP_MB": "memory_mb"},
     "JVM_HEAP_MB = 'memory_mb': unknown name 'memory_mb' (did you mean 'memory_mib'?)"),
    ("node", {"NODE_MAX_OLD_SPACE_MB": '"2g"'},
     "NODE_MAX_OLD_SPACE_MB = '\"2g\"': needs a number, not a string"),
    ("node", {"NODE_MAX_OLD_SPACE_MB": "1 / 0"}, "division by zero in 1 / 0"),
    ("redis", {"REDIS_IO_THREADS": "__import__('os')"}, "REDIS_IO_THREADS = "),
    ("nginx", {"NGINX_WORKER_PROCESSES": "2 ** 1000"}, "exponent 1000 is too large"),
])
def test_bad_profiles(use: str, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        compile_profile(use, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_value_may_not_read_a_later_one() -> None:
    with pytest.raises(ValueError) as caught:
        compile_profile("jvm", {"JVM_STACK_KB": "JVM_HEAP_MB // 100"})
    assert str(caught.value) == (
        "JVM_STACK_KB = 'JVM_HEAP_MB // 100': JVM_HEAP_MB is not before JVM_STACK_KB in "
        "profile jvm (a value reads the facts and the values before it: JVM_THREADS, "
        "JVM_LOADED_CLASSES)")


def test_runtime_failure_names_the_value() -> None:
    settings_ = compile_profile("gunicorn", {"WEB_CONCURRENCY": "16 // (vcpus - 4)"})
    with pytest.raises(ExprError, match=r"^WEB_CONCURRENCY: division by zero in 16 // \("):
        evaluate(settings_, nominal_facts("m5.xlarge").as_dict())
    assert evaluate(settings_, nominal_facts("m5.large").as_dict())[0][1].result == 1  # -8


def test_every_profile_names_a_source_and_notes_its_values() -> None:
    for profile in PROFILES.values():
        assert profile.source.startswith(("https://", "redis.conf"))
        assert all(s.note for s in profile.settings)
        assert check_profile(profile.name) is profile


@settings(max_examples=60, deadline=None)
@given(memory=st.integers(128, 24 * 1024 * 1024), vcpus=st.integers(1, 448),
       size=st.sampled_from(["nano", "micro", "small", "large", "metal"]))
def test_every_value_stays_in_its_range(memory: int, vcpus: int, size: str) -> None:
    facts = nominal_facts("m5.xlarge").as_dict() | {"memory_mib": memory, "vcpus": vcpus,
                                                    "size": size}
    for use, profile in PROFILES.items():
        ranges = {s.name: (s.low, s.high) for s in profile.settings}
        for item, explanation in evaluate(compile_profile(use, {}), facts):
            low, high = ranges[item.name]
            value = explanation.result
            if low is None and high is None:
                assert isinstance(value, str)
                continue
            assert isinstance(value, int), (item.name, value)  # whole numbers, never 1.0
            assert (low is None or value >= low) and (high is None or value <= high)


# --- systemd and sysctl values -----------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "text"), [
    ("MemoryMax", 14745.6, "14745M"),
    ("MemoryHigh", 0, "0M"),
    ("MemoryMax", "infinity", "infinity"),
    ("LimitMEMLOCK", 64, "64M"),
    ("TasksMax", 4096, "4096"),
    ("LimitNOFILE", "infinity", "infinity"),
    ("CPUQuota", 150.9, "150%"),
    ("CPUWeight", 10000, "10000"),
    ("Nice", -20, "-20"),
    ("OOMScoreAdjust", 1000, "1000"),
    ("TimeoutStartSec", 90.5, "90s"),
])
def test_service_values(key: str, value: int | float | str, text: str) -> None:
    assert SERVICE_KEYS[key].render(value) == text


@pytest.mark.parametrize(("key", "value", "message"), [
    ("MemoryMax", "lots", "needs a number (MiB) or \"infinity\", got 'lots'"),
    ("MemoryMax", -1, "must be at least 0 (MiB), got -1"),
    ("CPUQuota", "infinity", "needs a number (percent of one CPU), got 'infinity'"),
    ("CPUQuota", 0.5, "must be at least 1 (percent of one CPU), got 0.5"),
    ("CPUWeight", 0, "must be from 1 to 10000 (weight), got 0"),
    ("Nice", 20, "must be from -20 to 19 (nice level), got 20"),
    ("TasksMax", 0, "must be at least 1 (count), got 0"),
])
def test_service_values_refused(key: str, value: int | float | str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SERVICE_KEYS[key].render(value)
    assert str(caught.value) == message


def test_service_keys() -> None:
    check_service_key("MemoryMax")
    check_service_key("Environment")
    with pytest.raises(ValueError, match=r"unknown \[Service\] key 'MemoryMaxx' \(did you mean "
                                         r"'MemoryMax'\?\)"):
        check_service_key("MemoryMaxx")
    with pytest.raises(ValueError, match=r"unknown \[Service\] key 'ExecStart' \("):
        check_service_key("ExecStart")


def test_environment_words() -> None:
    assert environment_word("A", 'x "y" \\ 50% $HOME') == '"A=x \\"y\\" \\\\ 50%% $HOME"'
    with pytest.raises(ValueError, match="control characters"):
        environment_word("A", "line\nbreak")


def test_sysctl_values() -> None:
    assert sysctl_value(4096) == "4096"
    assert sysctl_value(4096.9) == "4096"
    assert sysctl_value(-1) == "-1"
    assert sysctl_value(float(2**40)) == str(2**40)
    with pytest.raises(ValueError, match="needs a number, got 'bbr'"):
        sysctl_value("bbr")
    assert math.floor(-0.5) == -1 and sysctl_value(-0.5) == "-1"
