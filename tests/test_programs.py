"""The tuned values fed to the real programs: each takes them, runs with them, and they fit.

For a spread of instance types (the smallest to the largest in the bundled table) the agent's
plan is applied into a temporary directory: each profile's env file, and through
``[[tuning.templates]]`` the config files of the programs that read no environment. Then each
program is given what was written and asked what it runs with: ``java -XX:+PrintFlagsFinal
-version`` under ``JAVA_TOOL_OPTIONS``, V8's heap limit under ``NODE_OPTIONS``, ``gunicorn
--print-config`` under ``WEB_CONCURRENCY``, ``nginx -t``/``-T`` with the rendered include,
``postgres -C`` (as the postgres user, against a fresh cluster) and ``CONFIG GET`` from a
``redis-server`` started on a private unix socket. What the program reports must be what the
plan says, and what that adds up to at the program's limits must fit its portion of the memory
budget (and all of them together the budget). A type's memory is nominal: the programs check
and take the values, they do not allocate them (``-version`` with a 31 GiB ``-Xmx``, ``-C``).

Marked ``programs``: ``make programs`` installs the Debian packages (``scripts/ensure-deps
programs``) and runs these, where a missing program fails (elsewhere it skips); gunicorn comes
with the dev extra.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import TuningError
from agent.instance.facts import nominal_facts
from agent.instance.types import table
from agent.service import envfile
from agent.tuning.budget import Budget
from agent.tuning.config import TuningConfig, TuningProfile, TuningTemplate
from agent.tuning.tuner import apply, plan

pytestmark = pytest.mark.programs

MIB = 1024 * 1024
LARGEST = max(table(), key=lambda name: (table()[name].memory_mib, table()[name].vcpus))
TYPES = ["t3.nano", "t3.small", "m5.xlarge", "r6g.16xlarge", LARGEST]
TIMEOUT = 120  # seconds: a bound on a hung program, never a measure

# What the programs read from files, rendered by [[tuning.templates]] (also examples to copy).
TEMPLATES = {
    "postgres": """\
max_connections = ${PG_MAX_CONNECTIONS}
shared_buffers = ${PG_SHARED_BUFFERS_KB}kB
effective_cache_size = ${PG_EFFECTIVE_CACHE_SIZE_KB}kB
maintenance_work_mem = ${PG_MAINTENANCE_WORK_MEM_KB}kB
wal_buffers = ${PG_WAL_BUFFERS_KB}kB
max_worker_processes = ${PG_MAX_WORKER_PROCESSES}
max_parallel_workers_per_gather = ${PG_MAX_PARALLEL_WORKERS_PER_GATHER}
max_parallel_workers = ${PG_MAX_PARALLEL_WORKERS}
max_parallel_maintenance_workers = ${PG_MAX_PARALLEL_MAINTENANCE_WORKERS}
autovacuum_max_workers = ${PG_AUTOVACUUM_MAX_WORKERS}
work_mem = ${PG_WORK_MEM_KB}kB
huge_pages = ${PG_HUGE_PAGES}
""",
    "redis": "maxmemory ${REDIS_MAXMEMORY_MB}mb\nio-threads ${REDIS_IO_THREADS}\n",
    "nginx": """\
worker_processes ${NGINX_WORKER_PROCESSES};
worker_rlimit_nofile ${NGINX_WORKER_RLIMIT_NOFILE};
events { worker_connections ${NGINX_WORKER_CONNECTIONS}; }
""",
}


@dataclass(frozen=True)
class Applied:
    """A configuration planned and written for one type."""

    dir: Path
    values: dict[str, dict[str, str]]  # profile -> its values as written
    budget: Budget | None  # None: no program takes a share (nginx alone)
    persistence: bool


def _apply(profiles: list[TuningProfile], instance_type: str, work: list[Path]) -> Applied:
    """Plan and write ``profiles`` (with the templates of those that need them) for the type
    into a new directory (listed in ``work``, to be removed)."""
    out = Path(tempfile.mkdtemp(prefix="agent-programs-"))
    work.append(out)
    out.chmod(0o755)  # postgres, as its own user, reads the rendered include
    (out / "sys/vm").mkdir(parents=True)
    (out / "sys/vm/nr_hugepages").write_text("0\n")
    entries, templates = [], []
    for entry in profiles:
        entries.append(dataclasses.replace(entry, path=str(out / f"{entry.use}.env")))
        if entry.use in TEMPLATES:
            source = out / f"{entry.use}.conf.in"
            source.write_text(TEMPLATES[entry.use])
            templates.append(TuningTemplate(source=str(source),
                                            path=str(out / f"{entry.use}.conf")))
    cfg = TuningConfig(profiles=entries, templates=templates, history_file="")
    result = plan(cfg, nominal_facts(instance_type), sysctl_root=str(out / "sys"))
    apply(result)
    values = {e.use: envfile.parse((out / f"{e.use}.env").read_text()) for e in entries}
    persistence = any(e.options.get("persistence") for e in entries)
    return Applied(out, values, result.budget, persistence)


@pytest.fixture(scope="module")
def work() -> Iterator[list[Path]]:
    """The directories written, removed at the end."""
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _missing(what: str) -> None:
    """Skip, or fail under ``make programs`` (PROGRAMS_REQUIRED=1), which installs them."""
    if os.environ.get("PROGRAMS_REQUIRED") == "1":
        pytest.fail(f"{what} (scripts/ensure-deps programs installs it)")
    pytest.skip(f"{what} (make programs installs it)")


def _need(program: str) -> str:
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        _missing(f"{program} is not installed")
    assert found is not None
    return found


def _run(argv: list[str], env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd,
                          env={**os.environ, **(env or {})}, check=False)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


# --- each program: what it runs with, and what that adds up to (MiB) ----------------------


def _java(applied: Applied) -> float:
    values = applied.values["jvm"]
    proc = _run([_need("java"), "-XX:+PrintFlagsFinal", "-version"],
                env={"JAVA_TOOL_OPTIONS": values["JAVA_TOOL_OPTIONS"]})
    assert f"Picked up JAVA_TOOL_OPTIONS: {values['JAVA_TOOL_OPTIONS']}" in proc.stderr
    flags = dict(re.findall(r"^\s*\S+\s+(\w+)\s+:?=\s+(\d+)", proc.stdout, re.MULTILINE))
    runs = {name: int(flags[name]) for name in ("MaxHeapSize", "MaxMetaspaceSize",
                                                 "ReservedCodeCacheSize", "MaxDirectMemorySize",
                                                 "ThreadStackSize")}
    assert runs == {"MaxHeapSize": int(values["JVM_HEAP_MB"]) * MIB,
                    "MaxMetaspaceSize": int(values["JVM_METASPACE_MB"]) * MIB,
                    "ReservedCodeCacheSize": int(values["JVM_CODE_CACHE_MB"]) * MIB,
                    "MaxDirectMemorySize": int(values["JVM_DIRECT_MB"]) * MIB,
                    "ThreadStackSize": int(values["JVM_STACK_KB"])}  # in kB
    stacks = int(values["JVM_THREADS"]) * runs["ThreadStackSize"] * 1024
    used = (runs["MaxHeapSize"] + runs["MaxMetaspaceSize"] + runs["ReservedCodeCacheSize"]
            + runs["MaxDirectMemorySize"] + stacks) / MIB
    return used + int(values["JVM_HEADROOM_MB"])


def _node(applied: Applied) -> float:
    values = applied.values["node"]
    proc = _run([_need("node"), "-e",
                 "console.log(require('v8').getHeapStatistics().heap_size_limit)"],
                env={"NODE_OPTIONS": values["NODE_OPTIONS"]})
    limit = int(proc.stdout) / MIB
    old, semi = int(values["NODE_MAX_OLD_SPACE_MB"]), int(values["NODE_MAX_SEMI_SPACE_MB"])
    # V8's heap limit: the old space and a young generation of 3 semi-spaces (Node's docs)
    assert limit == old + 3 * semi, (limit, old, semi)
    return limit


def _gunicorn(applied: Applied) -> float:
    values = applied.values["gunicorn"]
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        _missing("gunicorn is not installed (it is in the dev extra)")
    (applied.dir / "app.py").write_text(  # --print-config loads the app, then prints
        "def app(environ, start_response):\n    start_response('200 OK', [])\n"
        "    return [b'']\n")
    proc = _run([sys.executable, "-m", "gunicorn", "--print-config", "app:app"],
                env={"WEB_CONCURRENCY": values["WEB_CONCURRENCY"]}, cwd=applied.dir)
    workers = int(re.search(r"^workers\s+= (\d+)$", proc.stdout, re.MULTILINE)[1])  # type: ignore[index]
    assert workers == int(values["WEB_CONCURRENCY"])
    return (workers + 1) * int(values["GUNICORN_WORKER_MB"])


def _nginx(applied: Applied) -> float:
    values = applied.values["nginx"]
    rendered = applied.dir / "nginx.conf"  # the template's output: an include
    main = applied.dir / "main.conf"
    main.write_text(f"include {rendered};\npid {applied.dir}/nginx.pid;\nerror_log stderr;\n"
                    "http { access_log off; }\n")
    argv = [_need("nginx"), "-e", "stderr", "-p", str(applied.dir), "-c", str(main)]
    assert "test is successful" in _run([*argv, "-t"]).stderr
    dump = _run([*argv, "-T"]).stdout
    for line in (f"worker_processes {values['NGINX_WORKER_PROCESSES']};",
                 f"worker_rlimit_nofile {values['NGINX_WORKER_RLIMIT_NOFILE']};",
                 f"events {{ worker_connections {values['NGINX_WORKER_CONNECTIONS']}; }}"):
        assert line in dump.splitlines()
    return 0.0  # nginx takes no share: none of its values is sized from memory


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[list[str], Path]]:
    """A fresh PostgreSQL cluster (initdb) whose postgresql.conf includes agent.conf."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]))
    binary = found[-1] if found else shutil.which("postgres")
    if binary is None:
        _missing("postgres is not installed")
    assert binary is not None
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="agent-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _missing("no postgres user to run postgres as")
            raise
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--init-groups"]
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    _run([*as_user, str(Path(binary).parent / "initdb"), "--no-sync", "-A", "trust", "-U",
          "postgres", "-D", str(data)], cwd=root)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'agent.conf'\n")
    try:
        yield [*as_user, binary, "-D", str(data)], data
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _postgres(applied: Applied, cluster: tuple[list[str], Path]) -> float:
    values = applied.values["postgres"]
    argv, data = cluster
    shutil.copyfile(applied.dir / "postgres.conf", data / "agent.conf")

    def show(name: str) -> int:
        return int(_run([*argv, "-C", name], cwd=data).stdout)

    kb, pages = (lambda name: int(values[name])), (lambda name: int(values[name]) // 8)
    expected = {  # postgres -C answers in the setting's own unit: kB, or 8 kB pages
        "max_connections": kb("PG_MAX_CONNECTIONS"),
        "shared_buffers": pages("PG_SHARED_BUFFERS_KB"),
        "effective_cache_size": pages("PG_EFFECTIVE_CACHE_SIZE_KB"),
        "maintenance_work_mem": kb("PG_MAINTENANCE_WORK_MEM_KB"),
        "wal_buffers": pages("PG_WAL_BUFFERS_KB"),  # what the plan states is what runs
        "max_worker_processes": kb("PG_MAX_WORKER_PROCESSES"),
        "max_parallel_workers_per_gather": kb("PG_MAX_PARALLEL_WORKERS_PER_GATHER"),
        "max_parallel_workers": kb("PG_MAX_PARALLEL_WORKERS"),
        "max_parallel_maintenance_workers": kb("PG_MAX_PARALLEL_MAINTENANCE_WORKERS"),
        "autovacuum_max_workers": kb("PG_AUTOVACUUM_MAX_WORKERS"),
        "work_mem": kb("PG_WORK_MEM_KB"),
    }
    assert {name: show(name) for name in expected} == expected
    assert int(values["PG_WAL_BUFFERS_KB"]) % 8 == 0
    huge = _run([*argv, "-C", "huge_pages"], cwd=data).stdout.strip()
    assert huge == values["PG_HUGE_PAGES"]
    shared_mb = show("shared_memory_size")  # computed by postgres from the settings
    assert shared_mb <= int(values["PG_SHARED_MEMORY_KB"]) / 1024, "the estimate is too low"
    if huge != "off":
        needed = show("shared_memory_size_in_huge_pages")  # -1: no huge pages on this kernel
        assert needed <= int(values["PG_NR_HUGEPAGES"])
    processes = expected["max_connections"] + expected["max_worker_processes"]
    per_process = int(values["PG_BACKEND_KB"]) + 3 * expected["work_mem"]
    autovacuum = expected["autovacuum_max_workers"] * expected["maintenance_work_mem"]
    return shared_mb + (processes * per_process + autovacuum) / 1024


def _redis(applied: Applied) -> float:
    values = applied.values["redis"]
    sock = applied.dir / "redis.sock"
    conf = applied.dir / "redis-main.conf"
    save = "save 3600 1\nappendonly yes\n" if applied.persistence else 'save ""\n'
    conf.write_text(f"include {applied.dir / 'redis.conf'}\nport 0\nunixsocket {sock}\n"
                    f"daemonize no\nlogfile \"\"\ndir {applied.dir}\n{save}")
    server = subprocess.Popen([_need("redis-server"), str(conf)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        _ready(server)
        answers = _redis_ask(sock, [b"CONFIG", b"GET", b"maxmemory"],
                             [b"CONFIG", b"GET", b"io-threads"])
        assert answers == [["maxmemory", str(int(values["REDIS_MAXMEMORY_MB"]) * MIB)],
                           ["io-threads", values["REDIS_IO_THREADS"]]]
        _redis_ask(sock, [b"SHUTDOWN", b"NOSAVE"], reply=False)
        assert server.wait(timeout=TIMEOUT) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    maxmemory = int(values["REDIS_MAXMEMORY_MB"])
    return maxmemory * 2 if applied.persistence else maxmemory  # a fork's copy-on-write


def _ready(server: subprocess.Popen[bytes]) -> None:
    """Read the server's log until it accepts connections (it says so), or fail."""
    assert server.stdout is not None
    fd = server.stdout.fileno()
    deadline = time.monotonic() + TIMEOUT
    seen = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 65536) if readable else b""
        if not chunk:
            break  # exited, or the bound on a hung program
        seen += chunk
        if b"ready to accept connections" in seen.lower():
            return
    raise AssertionError(f"redis-server did not get ready: {seen[-2000:].decode()}")


def _redis_ask(sock: Path, *commands: list[bytes], reply: bool = True) -> list[list[str]]:
    """Send RESP commands over the unix socket; each reply as a list of strings."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(str(sock))
        for command in commands:
            conn.sendall(b"*%d\r\n" % len(command) + b"".join(
                b"$%d\r\n%s\r\n" % (len(word), word) for word in command))
        if not reply:
            return []
        reader = conn.makefile("rb")
        return [_resp(reader) for _ in commands]


def _resp(reader: object) -> list[str]:
    readline = reader.readline  # type: ignore[attr-defined]
    head = readline().rstrip(b"\r\n")
    assert head.startswith(b"*"), head
    items = []
    for _ in range(int(head[1:])):
        size = int(readline().rstrip(b"\r\n")[1:])
        items.append(readline().rstrip(b"\r\n")[:size].decode())
    return items


CHECKS = {"jvm": _java, "node": _node, "gunicorn": _gunicorn, "nginx": _nginx,
          "redis": _redis}


def _check(use: str, applied: Applied, cluster: tuple[list[str], Path] | None) -> float:
    if use == "postgres":
        assert cluster is not None
        return _postgres(applied, cluster)
    return CHECKS[use](applied)


# --- the tests ---------------------------------------------------------------------------


ALONE = [
    TuningProfile(use="jvm"), TuningProfile(use="node"), TuningProfile(use="gunicorn"),
    TuningProfile(use="nginx"), TuningProfile(use="postgres"),
    TuningProfile(use="redis", options={"persistence": True}), TuningProfile(use="redis"),
]


@pytest.mark.parametrize("instance_type", TYPES)
@pytest.mark.parametrize("entry", ALONE, ids=lambda e: e.use + (
    "-persistence" if e.options else ""))
def test_each_program_alone(request: pytest.FixtureRequest, work: list[Path],
                            entry: TuningProfile, instance_type: str) -> None:
    """One program owns the budget (the machine less the reserve): its values run, and fit."""
    cluster = request.getfixturevalue("cluster") if entry.use == "postgres" else None
    applied = _apply([entry], instance_type, work)
    used = _check(entry.use, applied, cluster)
    if entry.use == "nginx":
        assert applied.budget is None and used == 0  # nginx takes no share
        return
    assert applied.budget is not None
    (portion,) = applied.budget.portions
    assert portion.memory_mib == applied.budget.available_mib
    assert used <= portion.memory_mib, (used, portion)
    if entry.use == "postgres":  # the plan's shared memory is an upper estimate of postgres's
        assert used <= portion.total_mib
    else:  # the plan says what runs
        assert used == pytest.approx(portion.total_mib, abs=1)


TOGETHER = [
    TuningProfile(use="jvm", share=0.3),
    TuningProfile(use="postgres", share=0.25, options={"reserve_huge_pages": True}),
    TuningProfile(use="redis", share=0.15, options={"persistence": True}),
    TuningProfile(use="gunicorn", share=0.15), TuningProfile(use="node"),
    TuningProfile(use="nginx"),
]


@pytest.mark.parametrize("instance_type", TYPES)
def test_all_programs_on_one_machine(request: pytest.FixtureRequest, work: list[Path],
                                     instance_type: str) -> None:
    """Six programs in one configuration: each within its portion, all within the budget."""
    if nominal_facts(instance_type).memory_mib < 2048:
        with pytest.raises(TuningError) as caught:
            _apply(TOGETHER, instance_type, work)
        assert str(caught.value).startswith(
            f"tuning: {instance_type} is too small for profile jvm -> ")
        assert "\n" not in str(caught.value)
        return
    applied = _apply(TOGETHER, instance_type, work)
    assert applied.budget is not None
    cluster = request.getfixturevalue("cluster")
    total = 0.0
    for entry in TOGETHER:
        used = _check(entry.use, applied, cluster)
        portion = next((p for p in applied.budget.portions
                        if p.claim.label.startswith(f"profile {entry.use} ")), None)
        if portion is None:
            assert entry.use == "nginx" and used == 0
            continue
        assert used <= portion.memory_mib, (entry.use, used, portion)
        total += used
    assert total <= applied.budget.available_mib
    assert applied.budget.available_mib + applied.budget.reserve_mib == nominal_facts(
        instance_type).memory_mib
    pages = (applied.dir / "sys/vm/nr_hugepages").read_text()
    assert pages == (applied.values["postgres"]["PG_NR_HUGEPAGES"]
                     if applied.values["postgres"]["PG_HUGE_PAGES"] == "try" else "0\n")
