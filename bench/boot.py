#!/usr/bin/env python3
"""Benchmark: `agent run --oneshot` against a hand-written sequential boto3 script.

Both are installed as they ship, not editable: a virtual environment of their own
(.cache/bench/venv, rebuilt when the sources change) holding the agent (`pip install .`)
and boto3, its byte code compiled; PYTHONDONTWRITEBYTECODE is dropped from the children's
environment. Both run as fresh processes against the same simulated cloud (IMDS + moto, a
latency added to every AWS call), interleaved pair by pair (the order alternating), each
with a fresh pending launch action and an empty state directory (a first boot; the
validated-configuration cache stays, as baked into an image).

The baseline does only what a user-data script would: IMDS token + identity document, one
GetSecretValue per secret (written to files), CompleteLifecycleAction. The agent does its
whole boot besides (tuning, state.json, checks).

Reported: wall time (median [min - max]) of each, the ratio agent/boto3 pair by pair (median
[min - max]), by secret count and latency; peak RSS of each (ru_maxrss of the child); and
`agent status` against a bare `python -c pass` of the same interpreter.

Run: make bench   (or .venv/bin/python bench/boot.py --runs 7 --counts 1,4,10 ...)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conditions import machine

from agent.sim import World

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".cache" / "bench" / "venv"
HEADLINE = (4, 0.010)  # the figure: 4 secrets, 10 ms per AWS call
TUNING = """
[[tuning.files]]
path = "{root}/tuning/app.env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"
"""

BASELINE = '''
import json, os, sys, urllib.request
import boto3

imds = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
token = urllib.request.urlopen(urllib.request.Request(
    imds + "/latest/api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})).read().decode()
doc = json.loads(urllib.request.urlopen(urllib.request.Request(
    imds + "/latest/dynamic/instance-identity/document",
    headers={"X-aws-ec2-metadata-token": token})).read())
session = boto3.session.Session(region_name=doc["region"])
sm = session.client("secretsmanager")
out = sys.argv[1]
for name in sys.argv[4:]:
    reply = sm.get_secret_value(SecretId=name)
    data = reply.get("SecretBinary") or reply["SecretString"].encode()
    fd = os.open(os.path.join(out, name.replace("/", "_")), os.O_WRONLY | os.O_CREAT, 0o400)
    os.write(fd, data)
    os.close(fd)
session.client("autoscaling").complete_lifecycle_action(
    AutoScalingGroupName=sys.argv[2], LifecycleHookName=sys.argv[3],
    InstanceId=doc["instanceId"], LifecycleActionResult="CONTINUE")
'''

# The child is started by a tiny launcher: Linux reports as a child's ru_maxrss at least the
# memory of the process it was forked from, and this benchmark process holds moto (~200 MiB).
LAUNCHER = """
import json, os, sys, time
argv = json.loads(sys.argv[1])
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(json.dumps([wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def secret_value(i: int) -> str | bytes:
    """The i-th made-up secret: JSON, plain text and binary in turn."""
    kind = i % 3
    if kind == 0:
        return json.dumps({"username": f"app{i}", "password": f"pw-{i:04d}", "port": 5432})
    return f"tok_{i:04d}_0123456789abcdef" if kind == 1 else bytes(range(256))


def bench_venv() -> Path:
    """The python of a non-editable install of this checkout and boto3, byte code compiled;
    rebuilt when the agent's sources or pyproject change."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("agent/**/*"), REPO / "pyproject.toml", REPO / "setup.py",
                        REPO / "packaging" / "bin" / "agent"]):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    stamp = VENV / "sources.sha256"
    python = VENV / "bin" / "python"
    if stamp.exists() and stamp.read_text() == digest.hexdigest() and python.exists():
        return python
    env = {**os.environ, "PIP_CACHE_DIR": str(REPO / ".cache" / "pip"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def quietly(*argv: str) -> None:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")

    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        quietly(base, "-m", "venv", str(VENV))
        quietly(str(python), "-m", "pip", "install", "--quiet", "boto3")
    # a fresh copy of the tree: a build from the checkout would leave build/ behind in it
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".cache", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "tests"))
        quietly(str(python), "-m", "pip", "install", "--quiet", "--no-compile",
                "--force-reinstall", "--no-deps", str(src))
        quietly(str(python), "-m", "pip", "install", "--quiet", str(src))  # new dependencies
    quietly(str(python), "-m", "compileall", "-q", "-j0", str(VENV / "lib"))
    stamp.write_text(digest.hexdigest())
    return python


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, json.dumps(argv)], env=env,
                          capture_output=True, text=True, check=False)
    try:
        wall, rss, code = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        code = -1
    if proc.returncode != 0 or code != 0:
        raise SystemExit(f"{argv[:3]} failed ({code}):\n{proc.stdout}{proc.stderr}")
    return float(wall), float(rss)


@dataclass
class Series:
    """One command's runs: wall seconds and peak RSS (MiB)."""

    walls: list[float]
    rss: list[float]

    def spread(self, scale: float = 1000.0, unit: str = "ms") -> str:
        """``median [min - max]``."""
        w = sorted(self.walls)
        return (f"{statistics.median(w) * scale:.0f} [{w[0] * scale:.0f}-{w[-1] * scale:.0f}] "
                f"{unit}")


def ratio_text(values: list[float]) -> str:
    """``median [min - max]`` of pairwise ratios."""
    v = sorted(values)
    return f"{statistics.median(v):.2f}x [{v[0]:.2f}-{v[-1]:.2f}]"


def clean_env() -> dict[str, str]:
    """The children's environment: no AWS or agent settings, byte code written and used."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "AGENT_")) and k != "PYTHONDONTWRITEBYTECODE"}


def bench_boot(python: Path, runs: int, latency: float, counts: list[int]
               ) -> list[dict[str, object]]:
    """Interleaved pairs of the agent and the baseline at each secret count."""
    names = [f"bench/s{i:02d}" for i in range(max(counts))]
    rows: list[dict[str, object]] = []
    with World(aws_latency=latency) as world, \
            tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp)
        instance = world.seed(secrets={name: secret_value(i) for i, name in enumerate(names)})
        assert world.group and world.hook
        script = root / "baseline.py"
        script.write_text(BASELINE)
        env = clean_env()
        env.update(world.env())
        env["AGENT_CONFIG_CACHE"] = str(root / "config-cache.json")
        agent_bin = str(python.with_name("agent"))
        for count in counts:
            config = root / f"agent-{count}.toml"
            files = [{"secret_id": name, "path": name.split("/")[1]} for name in names[:count]]
            config.write_text(world.agent_config(root / "secrets", root / "state", files)
                              + TUNING.format(root=root))
            commands = {
                "agent": [agent_bin, "run", "--oneshot", "--config", str(config)],
                "boto3": [str(python), str(script), str(root / "out"), world.group, world.hook,
                          *names[:count]]}
            series = {name: Series([], []) for name in commands}
            for i in range(runs + 1):  # the first pair warms caches (and the config cache)
                order = list(commands) if i % 2 else list(commands)[::-1]
                for name in order:
                    for scratch in ("state", "secrets", "tuning", "out"):
                        shutil.rmtree(root / scratch, ignore_errors=True)
                    (root / "out").mkdir()
                    world.cloud.launch(world.group, instance)  # a fresh pending action
                    wall, rss = timed(commands[name], env)
                    if i:
                        series[name].walls.append(wall)
                        series[name].rss.append(rss)
            agent, boto = series["agent"], series["boto3"]
            rows.append({
                "latency_ms": round(latency * 1000), "secrets": count,
                "agent": agent, "boto3": boto,
                "time_ratios": [a / b for a, b in zip(agent.walls, boto.walls, strict=True)],
                "rss_ratios": [a / b for a, b in zip(agent.rss, boto.rss, strict=True)]})
        results = [a.result for a in world.cloud.actions(instance)]
        assert results.count("CONTINUE") == 2 * (runs + 1) * len(counts), results
    return rows


def bench_status(python: Path, runs: int) -> tuple[Series, Series, list[float]]:
    """`agent status` (the installed launcher) against `python -c pass`, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        state = {"version": 1, "state": "ready", "condition": "healthy", "phases": [],
                 "instance": {"instance_id": "i-1"}, "updated_at": "2026-11-26T12:00:00Z"}
        Path(tmp, "state.json").write_text(json.dumps(state))
        env = {**clean_env(), "AGENT_STATE_DIR": tmp}
        commands = {"status": [str(python.with_name("agent")), "status"],
                    "pass": [str(python), "-c", "pass"]}
        series = {name: Series([], []) for name in commands}
        for i in range(runs + 1):
            for name in list(commands)[:: 1 if i % 2 else -1]:
                wall, peak = timed(commands[name], env)
                if i:
                    series[name].walls.append(wall)
                    series[name].rss.append(peak)
    status, bare = series["status"], series["pass"]
    return status, bare, [a / b for a, b in zip(status.walls, bare.walls, strict=True)]


def main() -> None:
    """Run the matrix and the status benchmark; print tables (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="interleaved pairs per cell")
    parser.add_argument("--counts", default="1,4,10,25,50", help="secret counts")
    parser.add_argument("--latencies", default="0,10,50", help="ms added to each AWS call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    latencies = [float(ms) / 1000 for ms in args.latencies.split(",")]
    python = bench_venv()
    start = machine()
    rows = [row for latency in latencies for row in bench_boot(python, args.runs, latency,
                                                               counts)]
    status, bare, status_ratios = bench_status(python, args.runs * 3)
    end = machine()
    if args.json:
        print(json.dumps({
            "runs": args.runs, "machine_at_start": start, "machine_at_end": end,
            "boot": [{**row, "agent": vars(row["agent"]), "boto3": vars(row["boto3"])}
                     for row in rows],
            "status": {"status": vars(status), "pass": vars(bare), "ratios": status_ratios}},
            indent=2))
        return
    print(f"{args.runs} interleaved pairs per cell; non-editable install, compiled byte code "
          f"({VENV})\nmachine at start: {start}\nmachine at end:   {end}\n")
    print(f"{'latency':>7} {'secrets':>7}  {'agent run --oneshot':<22} {'boto3 script':<22} "
          f"{'agent/boto3 time':<20} {'peak RSS agent, boto3':<22}")
    for row in rows:
        agent, boto = row["agent"], row["boto3"]
        assert isinstance(agent, Series) and isinstance(boto, Series)
        time_ratios = row["time_ratios"]
        assert isinstance(time_ratios, list)
        print(f"{row['latency_ms']:>4} ms {row['secrets']:>7}  {agent.spread():<22} "
              f"{boto.spread():<22} {ratio_text(time_ratios):<20} "
              f"{statistics.median(agent.rss):.1f}, {statistics.median(boto.rss):.1f} MiB")
    head = next((r for r in rows if (r["secrets"], r["latency_ms"] / 1000) == HEADLINE), None)
    print()
    if head is not None:
        time_ratios, rss_ratios = head["time_ratios"], head["rss_ratios"]
        assert isinstance(time_ratios, list) and isinstance(rss_ratios, list)
        print(f"boot time  agent/boto3 at 4 secrets, 10 ms: {ratio_text(time_ratios)}  "
              "(target <= 0.7x; below 1x in every cell)")
        print(f"peak RSS   agent/boto3 at 4 secrets, 10 ms: {ratio_text(rss_ratios)}  "
              "(target <= 1.0x)")
    print(f"agent status {status.spread()}, python -c pass {bare.spread()}: "
          f"{ratio_text(status_ratios)}  (target <= 1.5x)")


if __name__ == "__main__":
    main()
