#!/usr/bin/env python3
"""Benchmark: from the application turning healthy to the launch hook's CONTINUE.

Each run starts `agent run` (daemon mode) against the simulated cloud with a ``[readiness]``
HTTP check on a local server that answers 503; once the gate is waiting (its first rounds
are in state.json), the server turns healthy; the figure is the time from that instant to
the arrival of ``CompleteLifecycleAction`` at the simulated Auto Scaling.

Target: at most settle_seconds + one interval_seconds + one round trip (the round trip
taken here as 0.25 s: the check's request and the completion's call on this machine).

Run: .venv/bin/python bench/readiness.py [--runs 5] [--settle 2] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conditions import machine

from agent.sim import World
from agent.sim.app import HealthApp

ROUND_TRIP = 0.25


def one_run(settle: float, interval: float) -> float:
    """Seconds from healthy to CONTINUE in one boot."""
    health = HealthApp().start()
    with World() as world, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp)
        world.seed(secrets={"bench/s": "value"})
        config = root / "agent.toml"
        config.write_text(world.agent_config(root / "secrets", root / "state",
                                             [{"secret_id": "bench/s", "path": "s"}])
                          + f"\n[readiness]\nsettle_seconds = {settle}\n"
                            f"interval_seconds = {interval}\ntimeout_seconds = 60\n"
                            f'[[readiness.checks]]\nhttp = "{health.url}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(world.env())
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            state = root / "state" / "state.json"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the gate is waiting: it saw the 503
                try:
                    if json.loads(state.read_text()).get("readiness", {}).get("seen"):
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
            time.sleep(interval * 1.37)  # turn healthy at no particular point of a round
            health.healthy()
            while not world.cloud.calls("CompleteLifecycleAction"):
                if time.monotonic() > deadline:
                    raise SystemExit("no CompleteLifecycleAction within 60 s")
                time.sleep(0.01)
            done = world.cloud.calls("CompleteLifecycleAction")[0].at
            return float(done - (health.healthy_at or 0.0))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            health.stop()


def main() -> None:
    """Several runs; the median with min and max."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    start = machine()
    figures = [one_run(args.settle, args.interval) for _ in range(args.runs)]
    target = args.settle + args.interval + ROUND_TRIP
    result = {"runs": args.runs, "settle_seconds": args.settle,
              "interval_seconds": args.interval, "median_s": round(statistics.median(figures), 3),
              "min_s": round(min(figures), 3), "max_s": round(max(figures), 3),
              "target_s": target, "all": [round(f, 3) for f in figures],
              "machine_at_start": start, "machine_at_end": machine()}
    print(json.dumps(result))
    print(f"readiness: healthy -> CONTINUE median {result['median_s']:.3f} s (min "
          f"{result['min_s']:.3f}, max {result['max_s']:.3f}) over {args.runs} runs; target <= "
          f"{target:g} s (settle {args.settle:g} + interval {args.interval:g} + round trip "
          f"{ROUND_TRIP:g}){'' if max(figures) <= target else ': MISSED'}")


if __name__ == "__main__":
    main()
