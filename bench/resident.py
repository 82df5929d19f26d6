#!/usr/bin/env python3
"""Benchmark: the resident daemon's cost after READY.

Starts `agent run` (daemon mode, as systemd would: a notify socket and WATCHDOG_USEC set)
against the simulated cloud, waits for ready, then watches it for a while:

* wake-ups per minute: the daemon's returns from ``rt_sigtimedwait`` (its only sleep), counted
  with strace when available, and, stricter, all voluntary context switches of its threads
  (from /proc: a poll also blocks briefly on its IMDS answer);
* IMDS requests per minute, threads;
* RSS at the start and the end of the window against the boot's peak (VmHWM).

Targets: at most 12 wake-ups a minute, RSS not above the boot's peak.

Run: .venv/bin/python bench/resident.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conditions import machine

from agent.sim import World


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` (a wake-up each)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def main() -> None:  # noqa: PLR0915 - one measurement, read top to bottom
    """Run the daemon, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    secrets = {f"bench/s{i}": f"value-{i}" for i in range(3)}
    start = machine()
    with World() as world, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp)
        world.seed(secrets=secrets)
        config = root / "agent.toml"
        config.write_text(world.agent_config(
            root / "secrets", root / "state",
            [{"secret_id": name, "path": name.split("/")[1]} for name in secrets]))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(world.env(), NOTIFY_SOCKET=str(root / "notify"), WATCHDOG_USEC="180000000")
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            notify.settimeout(30)
            while b"READY=1" not in notify.recv(4096):
                pass
            time.sleep(1.0)  # let the boot's threads finish
            rss_start = memory(proc.pid)["VmRSS"]
            # window 1, untraced: context switches and IMDS requests
            before, imds_before = switches(proc.pid), len(world.imds.requests)
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after, imds_after = switches(proc.pid), len(world.imds.requests)
            # window 2, under strace: returns from the daemon's one sleep (sigtimedwait)
            timer_wakeups, traced = None, 0.0
            if shutil.which("strace"):
                trace = root / "strace.out"
                tracer = subprocess.Popen(
                    ["strace", "-f", "-qq", "-e", "trace=rt_sigtimedwait", "-o", str(trace),
                     "-p", str(proc.pid)], stderr=subprocess.DEVNULL)
                time.sleep(0.5)  # attached; its interruption of the current sleep is skipped
                mark = trace.read_text().count("\n") if trace.exists() else 0
                traced_from = time.monotonic()
                time.sleep(args.seconds)
                traced = time.monotonic() - traced_from
                lines = trace.read_text().splitlines()[mark:]
                tracer.terminate()
                tracer.wait()
                timer_wakeups = sum(1 for line in lines if "rt_sigtimedwait" in line
                                    and ("EAGAIN" in line or "= " in line))
            mem = memory(proc.pid)
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            notify.close()
    per_minute = (after - before) * 60 / elapsed
    timers = None if timer_wakeups is None else timer_wakeups * 60 / traced
    result = {"seconds": round(elapsed, 1),
              "timer_wakeups_per_minute": None if timers is None else round(timers, 1),
              "context_switches_per_minute": round(per_minute, 1),
              "imds_requests_per_minute": round((imds_after - imds_before) * 60 / elapsed, 1),
              "threads": threads, "rss_start_mib": round(rss_start, 1),
              "rss_end_mib": round(mem["VmRSS"], 1), "boot_peak_rss_mib": round(mem["VmHWM"], 1),
              "machine_at_start": start, "machine_at_end": machine()}
    print(json.dumps(result))
    wakeups = "n/a (no strace)" if timers is None else f"{timers:.1f}"
    print(f"resident: {wakeups} wake-ups/min (target <= 12), {per_minute:.1f} context "
          f"switches/min, {threads} thread(s), RSS {rss_start:.1f} -> {mem['VmRSS']:.1f} MiB "
          f"(boot peak {mem['VmHWM']:.1f} MiB)")
    print(f"machine at start: {start}\nmachine at end:   {result['machine_at_end']}")


if __name__ == "__main__":
    main()
