#!/usr/bin/env python3
"""Benchmark: boot-to-ready of `agent run --oneshot` against a plain sequential boto3 script.

Both run as fresh processes against the same simulated cloud (IMDS + moto, 10 ms added to
every AWS call), interleaved, each with a fresh pending launch action. The baseline does the
same essential calls a hand-written user-data script would: IMDS token + identity document,
one GetSecretValue per secret (written to files), CompleteLifecycleAction. Reported: median
wall time and peak RSS (ru_maxrss of the child), and their ratios. Then `agent status`
against a bare `python -c pass`.

Run: make bench   (or .venv/bin/python bench/boot.py --runs 15)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.sim import World

SECRETS: dict[str, str | bytes] = {
    "bench/db": json.dumps({"username": "app", "password": "pw", "host": "db", "port": 5432}),
    "bench/token": "tok_0123456789",
    "bench/key": bytes(range(256)),
}
AGENT_FILES = [
    {"secret_id": "bench/db", "path": "db.json"},
    {"secret_id": "bench/token", "path": "token"},
    {"secret_id": "bench/key", "path": "tls.key"},
]
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


def summary(name: str, walls: list[float], rss: list[float]) -> dict[str, float]:
    """Median, min and p90 of one series."""
    walls = sorted(walls)
    return {"name": name, "median_s": statistics.median(walls), "min_s": walls[0],  # type: ignore[dict-item]
            "p90_s": walls[int(0.9 * (len(walls) - 1))], "rss_mib": statistics.median(rss)}


def bench_boot(runs: int, latency: float, count: int = 3
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Interleaved runs of the agent and the baseline; their summaries."""
    secrets = dict(SECRETS)
    secrets.update({f"bench/extra{i:02d}": f"extra-{i}" for i in range(count - len(SECRETS))})
    files = AGENT_FILES + [{"secret_id": name, "path": name.split("/")[1]}
                           for name in secrets if name.startswith("bench/extra")]
    with World(aws_latency=latency) as world, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp)
        instance = world.seed(secrets=secrets)
        assert world.group and world.hook
        config = root / "agent.toml"
        config.write_text(world.agent_config(root / "secrets", root / "state", files)
                          + TUNING.format(root=root))
        script = root / "baseline.py"
        script.write_text(BASELINE)
        (root / "out").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(world.env())
        agent = [sys.executable, "-m", "agent", "run", "--oneshot", "--config", str(config)]
        baseline = [sys.executable, str(script), str(root / "out"), world.group, world.hook,
                    *secrets]
        series: dict[str, tuple[list[float], list[float]]] = {"agent": ([], []),
                                                              "boto3": ([], [])}
        for i in range(runs + 1):  # the first round warms the page cache; not counted
            for name, argv in (("agent", agent), ("boto3", baseline))[:: 1 if i % 2 else -1]:
                world.cloud.launch(world.group, instance)  # a fresh pending launch action
                for path in (root / "out").iterdir():
                    path.unlink()
                shutil.rmtree(root / "state", ignore_errors=True)  # a fresh instance's boot
                wall, rss = timed(argv, env)
                if i:
                    series[name][0].append(wall)
                    series[name][1].append(rss)
        results = [a.result for a in world.cloud.actions(instance)]
        assert results.count("CONTINUE") == 2 * (runs + 1), results
    return summary("agent", *series["agent"]), summary("boto3", *series["boto3"])


def bench_status(runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """`agent status` (console script) against a bare interpreter start."""
    agent_bin = str(Path(sys.executable).with_name("agent"))
    with tempfile.TemporaryDirectory() as tmp:
        state = {"version": 1, "state": "ready", "condition": "healthy", "phases": [],
                 "instance": {"instance_id": "i-1"}, "updated_at": "2026-11-26T12:00:00Z"}
        Path(tmp, "state.json").write_text(json.dumps(state))
        env = {**os.environ, "AGENT_STATE_DIR": tmp}
        walls: dict[str, list[float]] = {"status": [], "pass": []}
        rss: dict[str, list[float]] = {"status": [], "pass": []}
        for i in range(runs + 1):
            for name, argv in (("status", [agent_bin, "status"]),
                               ("pass", [sys.executable, "-c", "pass"])):
                wall, peak = timed(argv, env)
                if i:
                    walls[name].append(wall)
                    rss[name].append(peak)
    return (summary("agent status", walls["status"], rss["status"]),
            summary("python -c pass", walls["pass"], rss["pass"]))


def main() -> None:
    """Run both benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.010, help="added to each AWS call")
    parser.add_argument("--secrets", type=int, default=3, help="secrets fetched (>= 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    agent, boto = bench_boot(args.runs, args.latency, max(3, args.secrets))
    status, bare = bench_status(args.runs * 3)
    rows = [agent, boto, status, bare]
    ratios = {
        "boot_time_ratio": agent["median_s"] / boto["median_s"],
        "boot_rss_ratio": agent["rss_mib"] / boto["rss_mib"],
        "status_time_ratio": status["median_s"] / bare["median_s"],
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "latency_s": args.latency, "rows": rows,
                          "ratios": ratios}, indent=2))
        return
    print(f"{args.runs} interleaved runs each, {max(3, args.secrets)} secrets, "
          f"{args.latency * 1000:.0f} ms added per AWS call, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print(f"{'':<16} {'median':>9} {'min':>9} {'p90':>9} {'peak RSS':>10}")
    for row in rows:
        print(f"{row['name']:<16} {row['median_s'] * 1000:>7.0f} ms {row['min_s'] * 1000:>6.0f} ms "
              f"{row['p90_s'] * 1000:>6.0f} ms {row['rss_mib']:>6.1f} MiB")
    print(f"boot time   agent/boto3  {ratios['boot_time_ratio']:.2f}x   (target <= 0.70x)")
    print(f"peak RSS    agent/boto3  {ratios['boot_rss_ratio']:.2f}x   (target <= 1.10x)")
    print(f"status      status/bare  {ratios['status_time_ratio']:.2f}x   (target <= 2.00x)")


if __name__ == "__main__":
    main()
