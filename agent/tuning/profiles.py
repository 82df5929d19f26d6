"""Well-known programs: the values their settings accept, and published formulas that size them.

Shared by config validation (load time, exit 78) and the tuning phase (run time, exit 1):

* the systemd ``[Service]`` keys a ``[[tuning.dropins]]`` entry may set, each with the values
  systemd accepts, and how a computed number is written (``MemoryMax`` in MiB -> ``1234M``);
* what a ``[tuning.sysctl]`` value must be (a whole number);
* the profiles of ``[[tuning.profiles]] use = "jvm"`` (``node``, ``gunicorn``, ``nginx``,
  ``postgres``, ``redis``): named values, each an expression in the tuning language over the
  facts and the profile's earlier values (so ``agent plan`` explains them like any other),
  then clamped to the range the program accepts. Any value can be overridden by name.

The formulas and their sources are documented in docs/reference/profiles.md.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Mapping

from agent.errors import closest, control_at
from agent.frozen import frozen
from agent.schema.expr import (
    ClampStep,
    Explanation,
    ExprError,
    Expression,
    Kind,
    Value,
    compile_expression,
    render_value,
    template_names,
)
from agent.service.dropins import specifiers_escaped

# --- systemd [Service] keys ------------------------------------------------------------


@frozen()
class ServiceKey:
    """What a ``[Service]`` key accepts: a number (written with ``suffix``), maybe infinity."""

    unit: str  # what a computed number means, for messages: "MiB", "percent", ...
    suffix: str  # appended to the whole number written: "M", "%", "s" or ""
    low: int
    high: int | None = None
    infinity: bool = False  # the string "infinity" is accepted too

    def render(self, value: Value) -> str:
        """The text systemd reads, or ValueError saying what the key accepts."""
        if isinstance(value, str):
            if self.infinity and value == "infinity":
                return value
            also = ' or "infinity"' if self.infinity else ""
            raise ValueError(f"needs a number ({self.unit}){also}, got {value!r}")
        number = math.floor(value)  # a fraction of a MiB, percent or second is dropped
        if number < self.low or (self.high is not None and number > self.high):
            span = f"from {self.low} to {self.high}" if self.high is not None else (
                f"at least {self.low}")
            raise ValueError(f"must be {span} ({self.unit}), got {render_value(value)}")
        return f"{number}{self.suffix}"


ENVIRONMENT = "Environment"  # a table of NAME = expression, written as one Environment= line
_MIB = ServiceKey("MiB", "M", 0, infinity=True)
_COUNT = ServiceKey("count", "", 1, infinity=True)
_WEIGHT = ServiceKey("weight", "", 1, 10000)
_SECONDS = ServiceKey("seconds", "s", 0, infinity=True)
SERVICE_KEYS: dict[str, ServiceKey] = {
    **dict.fromkeys(("MemoryMin", "MemoryLow", "MemoryHigh", "MemoryMax", "MemorySwapMax",
                     "LimitAS", "LimitCORE", "LimitDATA", "LimitFSIZE", "LimitMEMLOCK",
                     "LimitMSGQUEUE", "LimitRSS", "LimitSTACK"), _MIB),
    **dict.fromkeys(("TasksMax", "LimitNOFILE", "LimitNPROC", "LimitLOCKS",
                     "LimitSIGPENDING"), _COUNT),
    "CPUQuota": ServiceKey("percent of one CPU", "%", 1),
    **dict.fromkeys(("CPUWeight", "StartupCPUWeight", "IOWeight", "StartupIOWeight"), _WEIGHT),
    "Nice": ServiceKey("nice level", "", -20, 19),
    "OOMScoreAdjust": ServiceKey("OOM score adjustment", "", -1000, 1000),
    **dict.fromkeys(("TimeoutStartSec", "TimeoutStopSec", "RuntimeMaxSec"), _SECONDS),
}


def check_service_key(key: str) -> None:
    """Raise ValueError unless a drop-in may set ``key`` (naming the closest known key)."""
    if key == ENVIRONMENT or key in SERVICE_KEYS:
        return
    close = closest(key, [*SERVICE_KEYS, ENVIRONMENT])
    hint = f" (did you mean {close[0]!r}?)" if close else (
        f" (known: {', '.join([*SERVICE_KEYS, ENVIRONMENT])})")
    raise ValueError(f"unknown [Service] key {key!r}{hint}")


def environment_word(name: str, value: str) -> str:
    """``"NAME=value"``, quoted, C-escaped and %-escaped as systemd's Environment= reads it."""
    if control_at(value) >= 0:
        raise ValueError("value has control characters")
    escaped = specifiers_escaped(value.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{name}={escaped}"'


def sysctl_value(value: Value) -> str:
    """The text written to /proc/sys: a whole number (a fraction is dropped)."""
    if isinstance(value, str):
        raise ValueError(f"needs a number, got {value!r}")
    return str(math.floor(value))


# --- profiles ----------------------------------------------------------------------------


@frozen()
class Setting:
    """One value of a profile: its formula (or option string), and the program's range."""

    name: str
    expression: str = ""  # over the facts, the profile's options and its earlier values
    compose: str = ""  # or: a string.Template over them (an option string)
    low: float | None = None  # the range the program accepts (numbers only)
    high: float | None = None
    note: str = ""


@frozen()
class Option:
    """A switch of a profile (``[tuning.profiles.options]``): 1 or 0 in its formulas."""

    name: str
    note: str
    default: bool = False


@frozen()
class Part:
    """One term of what a profile's values add up to at the program's limits, in MiB."""

    name: str
    expression: str  # over the profile's values and options
    detail: str = ""  # a string.Template over them, shown beside the term by ``agent plan``


@frozen()
class Profile:
    """A program's well-known values, computed from the facts (``memory_mib``: its share)."""

    name: str
    source: str  # where the formula is published
    settings: tuple[Setting, ...]
    options: tuple[Option, ...] = ()
    parts: tuple[Part, ...] = ()  # the memory its values allow it at the program's limits


_OPENJ9 = ("memory_mib * 0.5 if memory_mib < 1024 else memory_mib - 512 "
           "if memory_mib <= 2048 else memory_mib * 0.75")
_PG_PROCESSES = "(PG_MAX_CONNECTIONS + PG_MAX_WORKER_PROCESSES)"
PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("jvm", "https://github.com/cloudfoundry/java-buildpack-memory-calculator; "
            "https://eclipse.dev/openj9/docs/xxusecontainersupport/", (
        Setting("JVM_THREADS", "clamp(memory_mib // 8, 32, 250)", low=1,
                note="threads: Cloud Foundry's 250, fewer where their stacks would take more "
                     "than 1/8 of the share (at least 32)"),
        Setting("JVM_LOADED_CLASSES", "15000", low=0, note="classes loaded (estimate)"),
        Setting("JVM_STACK_KB", "1024", low=256, high=1048576, note="-Xss, the JVM default"),
        Setting("JVM_CODE_CACHE_MB", "clamp(memory_mib // 8, 32, 240)", low=3, high=2048,
                note="-XX:ReservedCodeCacheSize: the JVM's 240, at most 1/8 of the share "
                     "(at least 32)"),
        Setting("JVM_DIRECT_MB", "10", low=0, note="-XX:MaxDirectMemorySize (Cloud Foundry)"),
        Setting("JVM_METASPACE_MB", "ceil((JVM_LOADED_CLASSES * 5800 + 14000000) / 1048576)",
                low=16, note="-XX:MaxMetaspaceSize: 5800 B a class + 14 MB"),
        Setting("JVM_NONHEAP_MB", "JVM_METASPACE_MB + JVM_CODE_CACHE_MB + JVM_DIRECT_MB"
                " + ceil(JVM_THREADS * JVM_STACK_KB / 1024)", low=0,
                note="what the JVM needs besides the heap"),
        Setting("JVM_HEADROOM_MB", "clamp(ceil(memory_mib * 0.1), 32, 3277)", low=0,
                note="left for the JVM's own overhead (GC, JIT, native): the calculator's "
                     "head-room, 10% of the share, at least 32, at most 10% of 32 GiB"),
        Setting("JVM_HEAP_MB", "int(min(memory_mib - JVM_NONHEAP_MB - JVM_HEADROOM_MB, "
                f"{_OPENJ9}) // 8 * 8)", low=16, high=31744,
                note="-Xmx: the share less non-heap and headroom, at most OpenJ9's container "
                     "default; a multiple of 8 (runs as is); below 32 GiB (compressed oops)"),
        Setting("JAVA_TOOL_OPTIONS", compose=(
            "-Xmx${JVM_HEAP_MB}m -Xss${JVM_STACK_KB}k -XX:MaxMetaspaceSize=${JVM_METASPACE_MB}m"
            " -XX:ReservedCodeCacheSize=${JVM_CODE_CACHE_MB}m"
            " -XX:MaxDirectMemorySize=${JVM_DIRECT_MB}m"), note="read by every JVM"),
    ), parts=(
        Part("heap", "JVM_HEAP_MB"),
        Part("non-heap", "JVM_NONHEAP_MB", "metaspace ${JVM_METASPACE_MB} + code cache "
             "${JVM_CODE_CACHE_MB} + direct ${JVM_DIRECT_MB} + ${JVM_THREADS} threads x "
             "${JVM_STACK_KB} kB"),
        Part("headroom", "JVM_HEADROOM_MB"),
    )),
    Profile("node", "https://nodejs.org/api/cli.html#--max-old-space-sizesize-in-mib", (
        Setting("NODE_MAX_OLD_SPACE_MB", "int(memory_mib * 0.75)", low=16,
                note="--max-old-space-size: 1536 on a 2 GiB machine, i.e. 75%"),
        Setting("NODE_MAX_SEMI_SPACE_MB", "16 if memory_mib >= 2048 else 8 if memory_mib >= "
                "1024 else 4 if memory_mib >= 512 else 2 if memory_mib >= 256 else 1", low=1,
                high=1024, note="--max-semi-space-size: V8's 16 on 64-bit from a 2 GiB share, "
                "less below (memory / 128 in a power of two, as V8 runs it); the young "
                "generation is 3 of them"),
        Setting("NODE_OPTIONS", compose="--max-old-space-size=${NODE_MAX_OLD_SPACE_MB}"
                " --max-semi-space-size=${NODE_MAX_SEMI_SPACE_MB}", note="read by node"),
    ), parts=(
        Part("old space", "NODE_MAX_OLD_SPACE_MB"),
        Part("young generation", "3 * NODE_MAX_SEMI_SPACE_MB",
             "3 x ${NODE_MAX_SEMI_SPACE_MB} semi-space"),
    )),
    Profile("gunicorn", "https://docs.gunicorn.org/en/stable/design.html#how-many-workers", (
        Setting("GUNICORN_WORKER_MB", "128", low=1,
                note="one worker's memory (an estimate: set it to your app's RSS)"),
        Setting("GUNICORN_MAX_WORKERS", "12", low=1,
                note="gunicorn's guidance: 4-12 workers in all serve most apps"),
        Setting("WEB_CONCURRENCY", "min(vcpus * 2 + 1, GUNICORN_MAX_WORKERS, "
                "memory_mib // GUNICORN_WORKER_MB - 1)", low=1,
                note="workers: (2 x cores) + 1, at most GUNICORN_MAX_WORKERS and what the "
                     "share holds beside the master; gunicorn reads WEB_CONCURRENCY"),
    ), parts=(
        Part("workers and master", "(WEB_CONCURRENCY + 1) * GUNICORN_WORKER_MB",
             "(${WEB_CONCURRENCY} + 1) x ${GUNICORN_WORKER_MB}"),
    )),
    Profile("nginx", "https://nginx.org/en/docs/ngx_core_module.html", (
        Setting("NGINX_WORKER_PROCESSES", "vcpus", low=1, high=1024,
                note="worker_processes: one per CPU (as 'auto', but cgroup quotas count)"),
        Setting("NGINX_WORKER_CONNECTIONS", "1024", low=1, high=524288,
                note="worker_connections: nginx.org's packaged default"),
        Setting("NGINX_WORKER_RLIMIT_NOFILE", "NGINX_WORKER_CONNECTIONS * 2", low=1,
                high=1048576, note="worker_rlimit_nofile: a proxied connection uses two"),
    )),
    Profile("postgres", "https://github.com/le0pard/pgtune (type web)", (
        Setting("PG_MAX_CONNECTIONS", "clamp(memory_mib // 16, 20, 200)", low=1, high=262143,
                note="pgtune's web default 200, from a 3200 MiB share; 1 per 16 MiB below "
                     "(at least 20)"),
        Setting("PG_SHARED_BUFFERS_KB", "memory_mib * 1024 // 4", low=128, high=8589934584,
                note="shared_buffers: 25% of memory"),
        Setting("PG_EFFECTIVE_CACHE_SIZE_KB", "memory_mib * 1024 * 3 // 4", low=8,
                high=17179869176, note="effective_cache_size: 75% of memory"),
        Setting("PG_MAINTENANCE_WORK_MEM_KB", "min(memory_mib * 1024 // 16, 2097152)",
                low=1024, high=2147483647, note="maintenance_work_mem: 1/16, at most 2 GB"),
        Setting("PG_WAL_BUFFERS_KB", "ceil((16384 if PG_SHARED_BUFFERS_KB * 3 // 100 > 14336 "
                "else max(PG_SHARED_BUFFERS_KB * 3 // 100, 32)) / 8) * 8", low=32,
                high=2097144, note="wal_buffers: 3% of shared_buffers, 16 MB from 14 MB up, at "
                "least 32 kB; in whole 8 kB pages, as PostgreSQL runs it"),
        Setting("PG_MAX_WORKER_PROCESSES", "vcpus if vcpus >= 4 else 8", low=0, high=262143,
                note="max_worker_processes: the CPUs from 4 up, else PostgreSQL's default"),
        Setting("PG_MAX_PARALLEL_WORKERS_PER_GATHER",
                "min(ceil(vcpus / 2), 4) if vcpus >= 4 else 2", low=0, high=1024,
                note="max_parallel_workers_per_gather: half the CPUs, at most 4"),
        Setting("PG_MAX_PARALLEL_WORKERS", "vcpus if vcpus >= 4 else 8", low=0, high=1024,
                note="max_parallel_workers"),
        Setting("PG_MAX_PARALLEL_MAINTENANCE_WORKERS",
                "min(ceil(vcpus / 2), 4) if vcpus >= 4 else 2", low=0, high=1024,
                note="max_parallel_maintenance_workers"),
        Setting("PG_AUTOVACUUM_MAX_WORKERS", "3", low=1, high=262143,
                note="autovacuum_max_workers: PostgreSQL's default; each may use "
                     "maintenance_work_mem"),
        Setting("PG_BACKEND_KB", "3072", low=0,
                note="a backend's own memory besides work_mem (an estimate: catalog and plan "
                     "caches)"),
        Setting("PG_SHARED_MEMORY_KB", "PG_SHARED_BUFFERS_KB + PG_SHARED_BUFFERS_KB // 40 + "
                f"PG_WAL_BUFFERS_KB + {_PG_PROCESSES} * 64 + 8192", low=0,
                note="the shared memory segment (shared_memory_size): shared_buffers + 2.5%, "
                     "wal_buffers, 64 kB a process, 8 MB (an upper estimate; not a setting)"),
        Setting("PG_WORK_MEM_KB", f"min((memory_mib * 1024 - PG_SHARED_MEMORY_KB - "
                f"PG_AUTOVACUUM_MAX_WORKERS * PG_MAINTENANCE_WORK_MEM_KB - {_PG_PROCESSES} * "
                f"PG_BACKEND_KB) // ({_PG_PROCESSES} * 3), 131072)", low=64, high=2147483647,
                note="work_mem: pgtune's (RAM - shared memory) / ((connections + workers) x 3), "
                     "less autovacuum and the backends' own memory; at most 128 MB (what "
                     "pgtune gives at the top of its stated range, 100 GB)"),
        Setting("PG_HUGE_PAGES", '"try" if memory_mib >= 32768 else "off"',
                note="huge_pages: try from 32 GiB up"),
        Setting("PG_NR_HUGEPAGES", 'ceil(PG_SHARED_MEMORY_KB / 2048) if PG_HUGE_PAGES != "off" '
                "else 0", low=0, note="vm.nr_hugepages for the shared memory in 2 MiB pages "
                "(with option reserve_huge_pages the agent sets it)"),
    ), options=(
        Option("reserve_huge_pages", "set vm.nr_hugepages to PG_NR_HUGEPAGES, so that "
               "huge_pages = try takes effect"),
    ), parts=(
        Part("shared memory", "PG_SHARED_MEMORY_KB / 1024"),
        Part("connections", f"{_PG_PROCESSES} * (PG_BACKEND_KB + 3 * PG_WORK_MEM_KB) / 1024",
             "(${PG_MAX_CONNECTIONS} + ${PG_MAX_WORKER_PROCESSES} workers) x (${PG_BACKEND_KB}"
             " + 3 x work_mem ${PG_WORK_MEM_KB}) kB"),
        Part("autovacuum", "PG_AUTOVACUUM_MAX_WORKERS * PG_MAINTENANCE_WORK_MEM_KB / 1024",
             "${PG_AUTOVACUUM_MAX_WORKERS} x ${PG_MAINTENANCE_WORK_MEM_KB} kB"),
    )),
    Profile("redis", "https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/"
            "redis-memory-management.html; https://redis.io/docs/latest/operate/oss_and_stack/"
            "management/admin/; redis.conf (io-threads)", (
        Setting("REDIS_RESERVED_PERCENT",
                "50 if memory_mib <= 1024 else 30 if memory_mib <= 2048 else 25",
                low=0, high=99, note="memory kept for buffers and fragmentation"),
        Setting("REDIS_MAXMEMORY_MB", "int(memory_mib * (100 - REDIS_RESERVED_PERCENT) / 100 / "
                "(2 if persistence else 1))", low=1,
                note="maxmemory (0 would mean no limit); half with persistence"),
        Setting("REDIS_IO_THREADS", "1 if vcpus < 4 else int(clamp(vcpus * 3 / 4, 2, 8))",
                low=1, high=128, note="io-threads: 4 cores -> 3, 8 -> 6, at most 8"),
    ), options=(
        Option("persistence", "RDB snapshots or AOF rewrites: a fork's copy-on-write can "
               "double the memory in use, so maxmemory leaves that headroom"),
    ), parts=(
        Part("maxmemory", "REDIS_MAXMEMORY_MB"),
        Part("fork copy-on-write", "REDIS_MAXMEMORY_MB if persistence else 0"),
    )),
)}


@frozen()
class CompiledSetting:
    """A setting ready to evaluate: the formula or its override, checked."""

    setting: Setting
    text: str  # the expression (or option string) as shown
    expression: Expression | None  # None: an option string (``compose``)
    overridden: bool

    @property
    def name(self) -> str:
        """The value's name."""
        return self.setting.name


def check_profile(use: str) -> Profile:
    """The profile named ``use``, or ValueError naming the known ones."""
    if use in PROFILES:
        return PROFILES[use]
    close = closest(use, PROFILES)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown profile {use!r} ({hint}profiles: {', '.join(PROFILES)})")


def option_values(use: str, options: Mapping[str, bool]) -> dict[str, int]:
    """Every option of the profile, 1 or 0 (defaults filled in); ValueError for an unknown one."""
    profile = check_profile(use)
    known = [o.name for o in profile.options]
    for name in options:
        if name not in known:
            raise _no_such(use, "option", name, known)
    return {o.name: int(options.get(o.name, o.default)) for o in profile.options}


def _no_such(use: str, kind: str, name: str, known: list[str]) -> ValueError:
    """A profile's option or value that is not there: the closest, and those that are."""
    close = closest(name, known)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = f"{kind}s: {', '.join(known)}" if known else "it takes none"
    return ValueError(f"profile {use} has no {kind} {name!r} ({hint}{listed})")


def compile_profile(use: str, overrides: Mapping[str, str],
                    options: Mapping[str, bool] | None = None) -> list[CompiledSetting]:
    """Check the profile's formulas with ``overrides`` in place; ValueError on any problem."""
    return list(_compile_profile(use, tuple(overrides.items()),
                                 tuple(sorted((options or {}).items()))))


@functools.lru_cache(maxsize=256)
def _compile_profile(use: str, overrides_items: tuple[tuple[str, str], ...],
                     options_items: tuple[tuple[str, bool], ...]
                     ) -> tuple[CompiledSetting, ...]:
    """Compiled once per configuration (load, plan and the budget all ask)."""
    overrides = dict(overrides_items)
    profile = check_profile(use)
    switches = option_values(use, dict(options_items))
    names = [s.name for s in profile.settings]
    for name in overrides:
        if name not in names:
            raise _no_such(use, "value", name, names)
    kinds: dict[str, Kind] = dict.fromkeys(switches, "number")
    compiled = []
    for setting in profile.settings:
        text = overrides.get(setting.name)
        try:
            item = _compile(setting, text, kinds)
        except ExprError as exc:
            shown = f"{setting.name} = {text!r}" if text is not None else setting.name
            later = [n for n in names[names.index(setting.name):]
                     if re.search(rf"\b{n}\b", text or "")]
            if later and str(exc).startswith("unknown name"):
                raise ValueError(f"{shown}: {later[0]} is not before {setting.name} in profile "
                                 f"{use} (a value reads the facts and the values before it: "
                                 f"{', '.join(names[:names.index(setting.name)]) or 'none'})"
                                 ) from None
            raise ValueError(f"{shown}: {exc}") from None
        kinds[setting.name] = ("string" if item.expression is None
                               else item.expression.kind)
        compiled.append(item)
    return tuple(compiled)


def reads_memory(settings: list[CompiledSetting]) -> bool:
    """Whether some value reads ``memory_mib`` (then the profile takes a share of the budget)."""
    return any(item.expression is not None and "memory_mib" in item.expression.names
               for item in settings)


def limits(use: str, scope: Mapping[str, Value]) -> list[tuple[Part, float, str]]:
    """What the values add up to at the program's limits: each part, its MiB, its detail."""
    results = []
    for index, part in enumerate(check_profile(use).parts):
        try:
            value = _part(use, index).evaluate(scope)
            if isinstance(value, str):
                raise ExprError(f"needs a number, got {value!r}")
            detail = string.Template(part.detail).substitute(
                {name: render_value(v) for name, v in scope.items()})
        except (ExprError, KeyError, ValueError) as exc:
            raise ExprError(f"{part.name}: {exc}") from None
        results.append((part, value, detail))
    return results


@functools.cache
def _part(use: str, index: int) -> Expression:
    """A part's expression, compiled over the profile's options and values."""
    profile = PROFILES[use]
    names = [o.name for o in profile.options] + [s.name for s in profile.settings]
    return compile_expression(profile.parts[index].expression, dict.fromkeys(names, "any"))


def _compile(setting: Setting, text: str | None, kinds: Mapping[str, Kind]) -> CompiledSetting:
    if text is None and setting.compose:
        unknown = [n for n in template_names(setting.compose) if n not in kinds]
        if unknown:
            raise ExprError(f"unknown variable ${{{unknown[0]}}}")
        return CompiledSetting(setting, setting.compose, None, False)
    expression = compile_expression(setting.expression if text is None else text, kinds)
    if expression.kind == "string" and setting.low is not None:
        raise ExprError("needs a number, not a string")
    if not expression.names and setting.low is not None:  # a constant: check it now
        value = expression.evaluate({})
        if isinstance(value, str):
            raise ExprError(f"needs a number, got {value!r}")
    return CompiledSetting(setting, expression.text, expression, text is not None)


def evaluate(settings: list[CompiledSetting],
             facts: Mapping[str, Value]) -> list[tuple[CompiledSetting, Explanation]]:
    """Every value, explained, in order; ExprError (prefixed with the value's name)."""
    scope: dict[str, Value] = dict(facts)
    results = []
    for item in settings:
        try:
            if item.expression is None:
                text = string.Template(item.text).substitute(
                    {name: render_value(value) for name, value in scope.items()})
                explanation = Explanation(text, text, ())
            else:
                explanation = _in_range(item.setting, item.expression.explain(scope))
        except (ExprError, KeyError, ValueError) as exc:
            raise ExprError(f"{item.name}: {exc}") from None
        scope[item.name] = explanation.result
        results.append((item, explanation))
    return results


def _in_range(setting: Setting, explanation: Explanation) -> Explanation:
    """Clamp a number to the range the program accepts, recorded as one more clamp step."""
    value = explanation.result
    if setting.low is None and setting.high is None:
        return explanation
    if isinstance(value, str):
        raise ExprError(f"needs a number, got {value!r}")
    low = -math.inf if setting.low is None else setting.low
    high = math.inf if setting.high is None else setting.high
    result = min(max(value, low), high)
    if result == value:
        return explanation
    step = ClampStep("clamp", value, (low, high), result, "lower" if value < low else "upper")
    return Explanation(result, explanation.substituted, (*explanation.clamps, step))
