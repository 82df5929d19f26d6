#!/usr/bin/env python3
"""Benchmark: a fleet of 200 agents booting at once against one simulated account.

Every agent is an `agent run --oneshot` process with an IMDS simulator of its own; the
account has AWS-like quotas (a token bucket per API; Secrets Manager 10,000/s; Auto Scaling
40 burst + 10/s per API, then a harsh 10 burst + 2/s) and 20 ms per call. Reported per quota:
ready time from the start (p50/p95/max), refused Auto Scaling answers against admitted
calls, attempts per admitted call and calls per instance by API.

Targets: at both quotas every boot ready, every launch action completed exactly once, none
abandoned, no admitted call beyond those a boot needs (one GetSecretValue per secret, one
DescribeLifecycleHooks, one completion); at the harsh quota at most 3 refused Auto Scaling
answers per admitted call.

Run: make bench   (or .venv/bin/python bench/fleet.py --size 200 [--json])
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from agent.sim import fleet


def main() -> int:
    """Boot the fleet at each quota, print the figures; 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.020, help="added to each AWS call")
    parser.add_argument("--quota", choices=("normal", "harsh", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    quotas = {"normal": fleet.NORMAL, "harsh": fleet.HARSH}
    chosen = list(quotas) if args.quota == "both" else [args.quota]
    missed: list[str] = []
    results = {}
    for name in chosen:
        root = Path(tempfile.mkdtemp(prefix="agent-fleet-", dir="/dev/shm"))
        try:
            report = fleet.boot(args.size, root, quota=quotas[name], latency=args.latency)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        results[name] = report.summary()
        autoscaling = report.service("autoscaling")
        if len(report.ready) < report.size or len(report.completed_once) < report.size:
            missed.append(f"{name}: {report.size - len(report.ready)} not ready, "
                          f"{report.size - len(report.completed_once)} not completed once")
        if report.beyond_needed():
            missed.append(f"{name}: admitted calls beyond those a boot needs: "
                          f"{report.beyond_needed()}")
        if report.abandoned:
            missed.append(f"{name}: {len(report.abandoned)} abandoned")
        if name == "harsh" and autoscaling.throttled > 3 * autoscaling.admitted:
            missed.append(f"harsh: {autoscaling.throttled} refused > 3 x "
                          f"{autoscaling.admitted} admitted")
        if not args.json:
            print(f"[{name}] {report.table()}\n", flush=True)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    print("targets: " + ("met" if not missed else "MISSED: " + "; ".join(missed)),
          file=sys.stderr if args.json else sys.stdout)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
