"""Profiles against hand-computed values, their ranges and overrides; systemd/sysctl values."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.instance.facts import nominal_facts
from agent.schema.expr import ExprError
from agent.tuning.profiles import (
    PROFILES,
    SERVICE_KEYS,
    check_profile,
    check_service_key,
    compile_profile,
    environment_word,
    evaluate,
    limits,
    option_values,
    reads_memory,
    sysctl_value,
)

TYPES = ["t3.nano", "t3.micro", "t3.small", "t3.medium", "m5.large", "m5.xlarge", "c6g.large",
         "c7g.medium", "r5.2xlarge", "m7i.8xlarge", "r6g.16xlarge"]


def values(use: str, instance_type: str, options: dict[str, bool] | None = None,
           **overrides: str) -> dict[str, int | float | str]:
    """The profile's values with memory_mib the type's whole nominal memory (a share of 1, no
    reserve: the budget is tested in test_tuning)."""
    facts = nominal_facts(instance_type).as_dict() | option_values(use, options or {})
    results = evaluate(compile_profile(use, overrides, options), facts)
    return {item.name: explanation.result for item, explanation in results}


def added_up(use: str, instance_type: str, options: dict[str, bool] | None = None) -> float:
    """What the values add up to at the program's limits, in MiB."""
    scope = nominal_facts(instance_type).as_dict() | option_values(use, options or {})
    scope |= values(use, instance_type, options)
    return sum(mib for _, mib, _ in limits(use, scope))


# Expected numbers below are worked out by hand from the published formulas
# (docs/reference/profiles.md),
# from each type's nominal memory (MiB) and vCPUs:
#   t3.nano 512/2, t3.micro 1024/2, t3.small 2048/2, t3.medium 4096/2, m5.large 8192/2,
#   m5.xlarge 16384/4, c6g.large 4096/2 (arm64), c7g.medium 2048/1 (arm64), r5.2xlarge 65536/8,
#   m7i.8xlarge 131072/32, r6g.16xlarge 524288/64 (arm64).

# JVM: threads and code cache clamp(memory // 8, 32, 250 / 240); non-heap = metaspace
# ceil((15000*5800 + 14e6)/2^20) = 97 + code cache + direct 10 + threads * 1 MiB; headroom
# clamp(ceil(10% of memory), 32, 3277). Heap = min(memory - non-heap - headroom, OpenJ9 default)
# rounded down to a multiple of 8; OpenJ9: < 1 GiB 50%, 1-2 GiB memory - 512, above 75%; then
# within 16..31744.
JVM = {  # threads, code cache, non-heap, headroom, heap
    "t3.nano": (64, 64, 235, 52, 224),  # min(512-235-52 = 225, 256) -> 224
    "t3.micro": (128, 128, 363, 103, 512),  # min(1024-363-103 = 558, 1024-512 = 512)
    "t3.small": (250, 240, 597, 205, 1240),  # min(2048-597-205 = 1246, 1536) -> 1240
    "c7g.medium": (250, 240, 597, 205, 1240),
    "t3.medium": (250, 240, 597, 410, 3072),  # min(3089, 3072)
    "c6g.large": (250, 240, 597, 410, 3072),
    "m5.large": (250, 240, 597, 820, 6144),  # min(6775, 6144)
    "m5.xlarge": (250, 240, 597, 1639, 12288),  # min(14148, 12288)
    "r5.2xlarge": (250, 240, 597, 3277, 31744),  # 49152 capped; headroom 6554 capped
    "m7i.8xlarge": (250, 240, 597, 3277, 31744),
    "r6g.16xlarge": (250, 240, 597, 3277, 31744),
}


@pytest.mark.parametrize("instance_type", TYPES)
def test_jvm(instance_type: str) -> None:
    got = values("jvm", instance_type)
    threads, code_cache, nonheap, headroom, heap = JVM[instance_type]
    assert (got["JVM_THREADS"], got["JVM_CODE_CACHE_MB"], got["JVM_METASPACE_MB"],
            got["JVM_NONHEAP_MB"], got["JVM_HEADROOM_MB"], got["JVM_HEAP_MB"]) == (
        threads, code_cache, 97, nonheap, headroom, heap)
    assert got["JAVA_TOOL_OPTIONS"] == (
        f"-Xmx{heap}m -Xss1024k -XX:MaxMetaspaceSize=97m "
        f"-XX:ReservedCodeCacheSize={code_cache}m -XX:MaxDirectMemorySize=10m")
    memory = nominal_facts(instance_type).memory_mib
    assert added_up("jvm", instance_type) == heap + nonheap + headroom <= memory


@pytest.mark.parametrize(("instance_type", "heap", "semi"), [
    ("t3.nano", 384, 4), ("t3.micro", 768, 8), ("t3.small", 1536, 16), ("t3.medium", 3072, 16),
    ("m5.large", 6144, 16), ("m5.xlarge", 12288, 16), ("c6g.large", 3072, 16),
    ("c7g.medium", 1536, 16), ("r5.2xlarge", 49152, 16), ("m7i.8xlarge", 98304, 16),
    ("r6g.16xlarge", 393216, 16),
])
def test_node(instance_type: str, heap: int, semi: int) -> None:
    # old space 75% of memory; semi-space memory / 128 in a power of two, at most 16; the
    # young generation is 3 of them
    assert values("node", instance_type) == {
        "NODE_MAX_OLD_SPACE_MB": heap, "NODE_MAX_SEMI_SPACE_MB": semi,
        "NODE_OPTIONS": f"--max-old-space-size={heap} --max-semi-space-size={semi}"}
    assert added_up("node", instance_type) == heap + 3 * semi


@pytest.mark.parametrize(("instance_type", "workers"), [
    ("t3.nano", 3),  # min(2 * 2 + 1, 12, 512 // 128 - 1 = 3): the memory holds 3 and the master
    ("t3.medium", 5), ("m5.large", 5), ("m5.xlarge", 9), ("c6g.large", 5),
    ("c7g.medium", 3),  # 2 * 1 + 1
    ("r5.2xlarge", 12),  # 17 capped at gunicorn's 12
    ("m7i.8xlarge", 12), ("r6g.16xlarge", 12),
])
def test_gunicorn(instance_type: str, workers: int) -> None:
    assert values("gunicorn", instance_type) == {
        "GUNICORN_WORKER_MB": 128, "GUNICORN_MAX_WORKERS": 12, "WEB_CONCURRENCY": workers}
    assert added_up("gunicorn", instance_type) == (workers + 1) * 128


def test_gunicorn_cap_is_overridable() -> None:
    assert values("gunicorn", "r6g.16xlarge", GUNICORN_MAX_WORKERS="64")[
        "WEB_CONCURRENCY"] == 64
    assert values("gunicorn", "m5.xlarge", GUNICORN_WORKER_MB="4096")[
        "WEB_CONCURRENCY"] == 3  # 16384 // 4096 - 1


@pytest.mark.parametrize(("instance_type", "processes"), [
    ("t3.nano", 2), ("m5.large", 2), ("m5.xlarge", 4), ("c6g.large", 2), ("c7g.medium", 1),
    ("r5.2xlarge", 8), ("m7i.8xlarge", 32), ("r6g.16xlarge", 64),
])
def test_nginx(instance_type: str, processes: int) -> None:
    assert values("nginx", instance_type) == {
        "NGINX_WORKER_PROCESSES": processes, "NGINX_WORKER_CONNECTIONS": 1024,
        "NGINX_WORKER_RLIMIT_NOFILE": 2048}


# PostgreSQL, in kB (memory * 1024 = T): connections clamp(memory // 16, 20, 200); shared_buffers
# T // 4, effective_cache_size T * 3 // 4, maintenance_work_mem T // 16 capped at 2097152,
# wal_buffers 3% of shared_buffers (16384 above 14336, at least 32) in whole 8 kB pages; parallel
# settings only from 4 CPUs (else PostgreSQL's 8/2/8/2); shared memory = shared_buffers + sb // 40
# + wal_buffers + (connections + workers) * 64 + 8192; work_mem = (T - shared memory
# - 3 * maintenance_work_mem - (connections + workers) * 3072) // ((connections + workers) * 3),
# at most 131072.
POSTGRES = {
    # conns    sb          ecs     mwm      wal    mwp gat mpw mnt  shmem    work_mem huge pages
    "t3.nano": (32, 131072, 393216, 32768, 3936, 8, 2, 8, 2, 149036, 1283, "off", 0),
    # wal: 3932 -> 3936 (492 pages); shmem 131072 + 3276 + 3936 + 40 * 64 + 8192 = 149036;
    # work_mem (524288 - 149036 - 98304 - 122880) // 120 = 1283
    "t3.small": (128, 524288, 1572864, 131072, 16384, 8, 2, 8, 2, 570675, 1753, "off", 0),
    # wal 15728 > 14336 -> 16384; shmem 524288 + 13107 + 16384 + 8704 + 8192 = 570675;
    # work_mem (2097152 - 570675 - 393216 - 417792) // 408 = 1753
    "m5.xlarge": (200, 4194304, 12582912, 1048576, 16384, 4, 2, 4, 2, 4336793, 14163, "off", 0),
    # shmem 4194304 + 104857 + 16384 + 13056 + 8192; work_mem 8668007 // 612 = 14163
    "r6g.16xlarge": (200, 134217728, 402653184, 2097152, 16384, 64, 4, 64, 4, 137614643, 131072,
                     "try", 67195),
    # mwm capped; shmem 134217728 + 3355443 + 16384 + 16896 + 8192 = 137614643; work_mem
    # 392153805 // 792 = 495143 capped at 131072; pages ceil(137614643 / 2048) = 67195
}


@pytest.mark.parametrize("instance_type", sorted(POSTGRES))
def test_postgres(instance_type: str) -> None:
    conns, sb, ecs, mwm, wal, mwp, gather, mpw, maint, shmem, work_mem, huge, pages = POSTGRES[
        instance_type]
    assert values("postgres", instance_type) == {
        "PG_MAX_CONNECTIONS": conns, "PG_SHARED_BUFFERS_KB": sb,
        "PG_EFFECTIVE_CACHE_SIZE_KB": ecs, "PG_MAINTENANCE_WORK_MEM_KB": mwm,
        "PG_WAL_BUFFERS_KB": wal, "PG_MAX_WORKER_PROCESSES": mwp,
        "PG_MAX_PARALLEL_WORKERS_PER_GATHER": gather, "PG_MAX_PARALLEL_WORKERS": mpw,
        "PG_MAX_PARALLEL_MAINTENANCE_WORKERS": maint, "PG_AUTOVACUUM_MAX_WORKERS": 3,
        "PG_BACKEND_KB": 3072, "PG_SHARED_MEMORY_KB": shmem, "PG_WORK_MEM_KB": work_mem,
        "PG_HUGE_PAGES": huge, "PG_NR_HUGEPAGES": pages}
    processes = conns + mwp
    assert added_up("postgres", instance_type) == pytest.approx(
        (shmem + processes * (3072 + 3 * work_mem) + 3 * mwm) / 1024)
    assert added_up("postgres", instance_type) <= nominal_facts(instance_type).memory_mib


@pytest.mark.parametrize(("instance_type", "reserved", "maxmemory", "threads", "persistent"), [
    ("t3.nano", 50, 256, 1, 128),  # up to 1 GiB: ElastiCache advises 50 %
    ("t3.micro", 50, 512, 1, 256),
    ("t3.small", 30, 1433, 1, 716),  # 2048 * 0.7 = 1433.6; halved 716.8
    ("t3.medium", 25, 3072, 1, 1536),
    ("m5.large", 25, 6144, 1, 3072),
    ("m5.xlarge", 25, 12288, 3, 6144),  # 4 cores -> 3 I/O threads
    ("c6g.large", 25, 3072, 1, 1536),
    ("r5.2xlarge", 25, 49152, 6, 24576),  # 8 -> 6
    ("m7i.8xlarge", 25, 98304, 8, 49152),  # 24 capped at 8
    ("r6g.16xlarge", 25, 393216, 8, 196608),
])
def test_redis(instance_type: str, reserved: int, maxmemory: int, threads: int,
               persistent: int) -> None:
    assert values("redis", instance_type) == {
        "REDIS_RESERVED_PERCENT": reserved, "REDIS_MAXMEMORY_MB": maxmemory,
        "REDIS_IO_THREADS": threads}
    assert added_up("redis", instance_type) == maxmemory
    # persistence: a fork's copy-on-write may double it, so maxmemory is half
    assert values("redis", instance_type, {"persistence": True})["REDIS_MAXMEMORY_MB"] == (
        persistent)
    assert added_up("redis", instance_type, {"persistence": True}) == 2 * persistent


# --- overrides and ranges ----------------------------------------------------------------


def test_override_feeds_later_values() -> None:
    got = values("jvm", "t3.small", JVM_THREADS="50", JVM_CODE_CACHE_MB="64")
    # non-heap: 97 + 64 + 10 + 50 = 221; heap min(2048 - 221 - 205 = 1622, 1536) = 1536
    assert (got["JVM_NONHEAP_MB"], got["JVM_HEAP_MB"]) == (221, 1536)
    assert "-Xmx1536m" in str(got["JAVA_TOOL_OPTIONS"])
    got = values("postgres", "m5.xlarge", PG_MAX_CONNECTIONS="400")
    # shared memory 4194304 + 104857 + 16384 + 404 * 64 + 8192 = 4349593; work_mem
    # (16777216 - 4349593 - 3 * 1048576 - 404 * 3072) // (404 * 3) = 6634
    assert got["PG_WORK_MEM_KB"] == 6634
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
    assert values("gunicorn", "m5.xlarge", WEB_CONCURRENCY="vcpus - 10")[
        "WEB_CONCURRENCY"] == 1  # clamp(-6, 1, inf)


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
    assert evaluate(settings_, nominal_facts("m5.large").as_dict())[-1][1].result == 1  # -8


def test_every_profile_names_a_source_and_notes_its_values() -> None:
    for profile in PROFILES.values():
        assert profile.source.startswith(("https://", "redis.conf"))
        assert all(s.note for s in profile.settings) and all(o.note for o in profile.options)
        assert check_profile(profile.name) is profile


def test_which_profiles_size_memory() -> None:
    """Every profile but nginx reads memory_mib (so it takes a share of the budget)."""
    assert {use for use in PROFILES if reads_memory(compile_profile(use, {}))} == {
        "jvm", "node", "gunicorn", "postgres", "redis"}
    assert reads_memory(compile_profile("nginx", {"NGINX_WORKER_CONNECTIONS": "memory_mib"}))
    assert not reads_memory(compile_profile("jvm", {
        "JVM_THREADS": "250", "JVM_CODE_CACHE_MB": "240", "JVM_HEADROOM_MB": "64",
        "JVM_HEAP_MB": "machine_memory_mib // 2"}))


@pytest.mark.parametrize(("use", "options", "message"), [
    ("redis", {"persistance": True}, "profile redis has no option 'persistance' (did you mean "
                                     "'persistence'? options: persistence)"),
    ("jvm", {"persistence": True}, "profile jvm has no option 'persistence' (it takes none)"),
])
def test_unknown_option(use: str, options: dict[str, bool], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        compile_profile(use, {}, options)
    assert str(caught.value) == message


def test_options_are_names_in_the_formulas() -> None:
    assert option_values("redis", {}) == {"persistence": 0}
    assert option_values("redis", {"persistence": True}) == {"persistence": 1}
    got = values("redis", "m5.xlarge", {"persistence": True},
                 REDIS_IO_THREADS="8 if persistence else 1")
    assert got["REDIS_IO_THREADS"] == 8


@settings(max_examples=60, deadline=None)
@given(memory=st.integers(128, 24 * 1024 * 1024), vcpus=st.integers(1, 448),
       size=st.sampled_from(["nano", "micro", "small", "large", "metal"]))
def test_every_value_stays_in_its_range(memory: int, vcpus: int, size: str) -> None:
    facts = nominal_facts("m5.xlarge").as_dict() | {"memory_mib": memory, "vcpus": vcpus,
                                                    "size": size}
    for (use, profile), switch in itertools.product(PROFILES.items(), (False, True)):
        ranges = {s.name: (s.low, s.high) for s in profile.settings}
        options = {o.name: switch for o in profile.options}
        for item, explanation in evaluate(compile_profile(use, {}, options),
                                          facts | option_values(use, options)):
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
