#!/usr/bin/env python3
"""Benchmark: the resident daemon's cost after READY, beside a sleeping interpreter.

Starts `agent run` (daemon mode, as systemd would: a notify socket and WATCHDOG_USEC set)
against the simulated cloud, with a sleeping interpreter (``time.sleep``) started beside it
as the floor, and samples both from the launch on:

* PSS (proportional set size, ``psutil`` ``memory_full_info().pss``) summed over every
  process of the agent's tree (the daemon and any child it runs) and of the floor;
* the boot: from the launch to ``READY=1``, sampled every 20 ms (its peak);
* the first minute after READY (``--settle``), with a secret rotated and SIGHUP sent at
  ``--rotate-at`` seconds: the refresh's peak and how long it took to give it back;
* the steady state, from a minute after READY on (``--seconds``): median, min and max,
  sampled every second;
* wake-ups per minute in the steady state: the voluntary context switches of every thread of
  every process of the agent's tree (/proc/PID/task/*/status), a wake-up each (a poll also
  blocks briefly on each IMDS answer); with ``--strace``, the returns from the daemon's one
  sleep (``rt_sigtimedwait``), its timer wake-ups (their rate from the first to the last
  sleep begun in the minute; strace's stops then inflate the context
  switches); and the notify socket's messages
  (watchdog pings, status lines).

Each run prints one JSON line; ``--runs N`` repeats the whole measurement and ends with the
median, min and max of the runs' steady-state medians.

Targets: steady state at most 20 MiB PSS; the refresh's peak not above the boot's; at most
12 wake-ups a minute.

Run: .venv/bin/python bench/resident.py [--runs 3] [--settle 60] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from conditions import machine

from agent.sim import World

MIB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (those that exist right now)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def pss(pid: int) -> tuple[float, int]:
    """PSS of the whole tree in MiB, and its number of processes."""
    total, count = 0, 0
    for proc in tree(pid):
        try:
            total += proc.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / MIB, count


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of every process of the tree."""
    total = 0
    for proc in tree(pid):
        try:
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class Sampler(threading.Thread):
    """PSS of the agent's tree and of the floor, every ``interval`` seconds."""

    def __init__(self, agent: int, floor: int) -> None:
        super().__init__(daemon=True)
        self.agent, self.floor = agent, floor
        self.interval = 0.02
        self.samples: list[tuple[float, float, int, float]] = []  # t, agent, procs, floor
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            agent, procs = pss(self.agent)
            floor, _ = pss(self.floor)
            self.samples.append((time.monotonic(), agent, procs, floor))
            self.done.wait(self.interval)

    def between(self, start: float, end: float) -> list[tuple[float, float, int, float]]:
        return [s for s in self.samples if start <= s[0] < end]


def trace(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """strace counting the daemon's returns from its one sleep (``rt_sigtimedwait``), if
    strace is installed."""
    if not shutil.which("strace"):
        return None
    tracer = subprocess.Popen(["strace", "-qq", "-ttt", "-e", "trace=rt_sigtimedwait",
                               "-o", str(out),
                               "-p", str(pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return tracer


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max, in MiB to 0.1."""
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


def one_run(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one measurement
    """Boot the daemon, rotate a secret in its first minute, measure; the figures."""
    secrets = {f"bench/s{i}": f"value-{i}" for i in range(3)}
    with World() as world, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp)
        world.seed(secrets=secrets)
        config = root / "agent.toml"
        config.write_text(world.agent_config(
            root / "secrets", root / "state",
            [{"secret_id": name, "path": name.split("/")[1]} for name in secrets]))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify"))
        messages: list[tuple[float, bytes]] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(world.env(), NOTIFY_SOCKET=str(root / "notify"), WATCHDOG_USEC="180000000",
                   AGENT_CONFIG_CACHE=str(root / "cache.json"))
        floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"])
        launched = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler = Sampler(proc.pid, floor.pid)
        sampler.start()
        try:
            notify.settimeout(60)
            while True:
                data = notify.recv(4096)
                messages.append((time.monotonic(), data))
                if b"READY=1" in data:
                    break
            ready = time.monotonic()
            sampler.interval = 0.1
            notify.settimeout(0.5)

            def listen(until: float) -> None:
                while time.monotonic() < until:
                    try:
                        messages.append((time.monotonic(), notify.recv(4096)))
                    except TimeoutError:
                        continue

            listen(ready + args.rotate_at)
            world.boto3_client("secretsmanager").put_secret_value(
                SecretId="bench/s1", SecretString="rotated")
            rotated = time.monotonic()
            proc.send_signal(1)  # SIGHUP: refresh now
            listen(ready + args.settle)
            sampler.interval = 1.0
            tracer = trace(proc.pid, root / "strace.out") if args.strace else None
            before, steady, steady_at = switches(proc.pid), time.monotonic(), time.time()
            listen(steady + args.seconds)
            after, ended, ended_at = switches(proc.pid), time.monotonic(), time.time()
            sleeps = None
            if tracer is not None:
                tracer.terminate()
                tracer.wait()
                starts = [float(line.split()[0]) for line in
                          (root / "strace.out").read_text().splitlines()
                          if "rt_sigtimedwait" in line and "= " in line]
                slept = [t for t in starts if steady_at <= t < ended_at]
                # the rate from first to last sleep in the minute: a count alone is 11 or 12
                # for a 5 s poll, by where the minute starts
                sleeps = (len(slept) - 1) * (ended - steady) / (slept[-1] - slept[0]) \
                    if len(slept) > 1 else len(slept)
            state = json.loads((root / "state" / "state.json").read_text())
        finally:
            sampler.done.set()
            sampler.join()
            proc.terminate()
            proc.wait(timeout=30)
            floor.kill()
            floor.wait()
            notify.close()
    boot = sampler.between(launched, ready + 0.05)
    refresh = sampler.between(rotated, ready + args.settle)
    peak_at = max(refresh, key=lambda s: s[1])
    steady_samples = sampler.between(steady, ended)
    base = statistics.median(s[1] for s in steady_samples)
    back = next((s[0] for s in refresh if s[0] > peak_at[0] and s[1] <= base + 1.0), None)
    window = [m for t, m in messages if steady <= t < ended]
    return {
        "boot_seconds": round(ready - launched, 2),
        "boot_peak_pss_mib": round(max(s[1] for s in boot), 1),
        "refresh": state.get("refresh", {}).get("result"),
        "refresh_peak_pss_mib": round(peak_at[1], 1),
        "refresh_peak_processes": peak_at[2],
        "refresh_given_back_after_s": None if back is None else round(back - rotated, 1),
        "steady_pss_mib": spread([s[1] for s in steady_samples]),
        "steady_processes": max(s[2] for s in steady_samples),
        "floor_pss_mib": spread([s[3] for s in steady_samples]),
        "wakeups_per_minute": round((after - before) * 60 / (ended - steady), 1),
        "timer_wakeups_per_minute": None if sleeps is None else round(
            sleeps * 60 / (ended - steady), 1),
        "notify_messages_per_minute": round(len(window) * 60 / (ended - steady), 1),
        "watchdog_pings": sum(b"WATCHDOG=1" in m for m in window),
    }


def main() -> None:
    """Run, print each run's figures and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds after READY before the steady state is measured")
    parser.add_argument("--rotate-at", type=float, default=20.0,
                        help="seconds after READY: a secret rotated and SIGHUP sent")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of steady state measured")
    parser.add_argument("--strace", action="store_true",
                        help="also count the returns from the daemon's one sleep with strace "
                             "(the timer wake-ups; strace's attach adds one)")
    args = parser.parse_args()
    start = machine()
    runs = []
    for _ in range(args.runs):
        result = one_run(args)
        runs.append(result)
        print(json.dumps(result), flush=True)
    medians = [r["steady_pss_mib"]["median"] for r in runs]
    floors = [r["floor_pss_mib"]["median"] for r in runs]
    print(f"steady PSS (MiB, median of each run's median; min, max over runs): agent "
          f"{statistics.median(medians):.1f} ({min(medians):.1f}, {max(medians):.1f}); "
          f"sleeping interpreter {statistics.median(floors):.1f} ({min(floors):.1f}, "
          f"{max(floors):.1f}); target <= 20")
    peaks = [r["refresh_peak_pss_mib"] for r in runs]
    boots = [r["boot_peak_pss_mib"] for r in runs]
    timed = all(r["timer_wakeups_per_minute"] is not None for r in runs)
    wakes = [r["timer_wakeups_per_minute" if timed else "wakeups_per_minute"] for r in runs]
    what = "timer wake-ups/min" if timed else "wake-ups/min (context switches)"
    print(f"refresh peak {statistics.median(peaks):.1f} MiB ({min(peaks):.1f}, {max(peaks):.1f}) "
          f"against the boot's peak {statistics.median(boots):.1f} MiB ({min(boots):.1f}, "
          f"{max(boots):.1f}); {what} {statistics.median(wakes):.1f} ({min(wakes):.1f}, "
          f"{max(wakes):.1f}), target <= 12")
    print(f"machine at start: {start}\nmachine at end:   {machine()}")


if __name__ == "__main__":
    main()
