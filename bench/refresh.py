#!/usr/bin/env python3
"""Benchmark: a daemon-mode secret refresh of 50 configured secrets.

Against the simulated cloud with 10 ms added to every AWS call, in-process (the same
``Secrets.refresh`` the resident daemon calls): the API calls made and the wall time when
nothing changed and when one secret was rotated. Target: 0 GetSecretValue when nothing
changed.

Run: .venv/bin/python bench/refresh.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from conditions import machine

from agent.cloud.aws import Aws
from agent.cloud.imds import ImdsClient
from agent.secrets.config import SecretsConfig
from agent.secrets.publish import Secrets
from agent.sim import World
from agent.state.recorder import Recorder


def main() -> None:
    """Print calls and median times for both cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.010)
    args = parser.parse_args()
    names = [f"bench/s{i:03d}" for i in range(args.secrets)]
    print(f"machine at start: {machine()}")
    with World(aws_latency=args.latency) as world, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "secrets"
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)],
                       check=False)
        try:
            world.seed(secrets={name: f"value-of-{name}" for name in names})
            cfg = SecretsConfig(dir=str(root), require_tmpfs=False,
                                files=[{"secret_id": n, "path": n.split("/")[1]}  # type: ignore[list-item]
                                       for n in names])
            imds = ImdsClient(world.imds.endpoint)
            aws = Aws(world.region, endpoint_url=world.cloud.endpoint_url, imds=imds)
            published = Secrets(cfg, Recorder(tmp))
            published.publish(aws, warm=False, warm_pool_secrets=False)
            sm = world.boto3_client("secretsmanager")
            for case in ("nothing changed", "one changed"):
                times, calls = [], Counter[str]()
                for run in range(args.runs):
                    if case == "one changed":
                        sm.put_secret_value(SecretId=names[run % len(names)],
                                            SecretString=f"rotated-{run}")
                    before = len(world.cloud.calls())
                    started = time.perf_counter()
                    publication = published.refresh(aws)
                    times.append(time.perf_counter() - started)
                    calls.update(c.action for c in world.cloud.calls()[before:])
                    assert (publication is None) == (case == "nothing changed")
                per_run = ", ".join(f"{action} {count / args.runs:g}"
                                    for action, count in sorted(calls.items()))
                median_ms = statistics.median(times) * 1000
                print(f"{args.secrets} secrets, {case:<16} median {median_ms:6.1f} ms"
                      f"  calls per refresh: {per_run}")
        finally:
            subprocess.run(["umount", "-l", str(root)], check=False)
    print(f"machine at end:   {machine()}")


if __name__ == "__main__":
    main()
