"""A fleet scaling out: N agents booting at once against one simulated account with quotas.

Used by the fleet test (N = 50) and ``bench/fleet.py`` (N = 200). One Auto Scaling group of N
instances with a launch hook, a few secrets; every instance has an IMDS simulator of its own
on loopback (its identity, tags, target lifecycle state); each agent is an ``agent run
--oneshot`` process of its own, all started together as a scale-out starts them. The
account enforces AWS-like quotas, a token bucket per API, and answers throttled calls as AWS
does (:class:`~agent.sim.cloud.Quotas`). :class:`Report` says how it went: ready times,
attempts per admitted call and calls per instance, by API, and each launch hook's results.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sim.autoscaling import LAUNCHING
from agent.sim.world import World

SECRETS: dict[str, str | bytes] = {
    "fleet/db": json.dumps({"username": "app", "password": "fleet-pw", "port": 5432}),
    "fleet/token": "fleet-token-0123456789",
    "fleet/key": bytes(range(64)),
}
FILES = [{"secret_id": "fleet/db", "path": "db.json"},
         {"secret_id": "fleet/token", "path": "token"},
         {"secret_id": "fleet/key", "path": "tls.key"}]
NEEDED = {"secretsmanager:GetSecretValue": len(SECRETS),  # admitted calls one boot needs
          "autoscaling:DescribeLifecycleHooks": 1, "autoscaling:CompleteLifecycleAction": 1}
NORMAL = (40.0, 10.0)  # Auto Scaling: burst, per second (per API)
HARSH = (10.0, 2.0)
OTHER_QUOTAS = {"secretsmanager": (10_000.0, 10_000.0), "ec2": (100.0, 20.0),
                "monitoring": (150.0, 150.0), "sts": (600.0, 600.0)}


@dataclass
class Api:
    """The calls of one API: every attempt, and those throttled."""

    attempts: int = 0
    throttled: int = 0

    @property
    def admitted(self) -> int:
        """Attempts that were not refused."""
        return self.attempts - self.throttled


@dataclass
class Agent:
    """One instance's boot."""

    instance_id: str
    code: int | None = None  # exit code (None: still running when the fleet gave up)
    ready_after: float | None = None  # seconds from the fleet's start to its exit, if ready
    state: str = ""  # state.json's state
    last_line: str = ""  # of its log, to say why it failed
    results: list[tuple[str | None, str | None]] = field(default_factory=list)  # launch hook
    completions: int = 0  # CompleteLifecycleAction calls of this instance admitted


@dataclass
class Report:
    """How a fleet's boot went."""

    size: int
    quota: tuple[float, float]  # Auto Scaling burst, rate
    latency: float
    agents: list[Agent]
    apis: dict[str, Api]  # "autoscaling:CompleteLifecycleAction" -> its calls
    elapsed: float

    @property
    def ready(self) -> list[Agent]:
        """The agents that exited 0 with state ready."""
        return [a for a in self.agents if a.code == 0 and a.state == "ready"]

    def percentile(self, q: float) -> float:
        """Ready time (seconds from the start) at quantile ``q`` of the ready agents."""
        times = sorted(a.ready_after for a in self.ready if a.ready_after is not None)
        if not times:
            return float("nan")
        return times[min(len(times) - 1, round(q * (len(times) - 1)))]

    def service(self, name: str) -> Api:
        """All APIs of one service together."""
        total = Api()
        for api, calls in self.apis.items():
            if api.startswith(f"{name}:"):
                total.attempts += calls.attempts
                total.throttled += calls.throttled
        return total

    @property
    def completed_once(self) -> list[Agent]:
        """Agents whose launch action has exactly one result: CONTINUE, by the API."""
        return [a for a in self.agents if a.results == [("CONTINUE", "api")]]

    @property
    def repeated_completions(self) -> int:
        """Admitted CompleteLifecycleAction calls beyond one per instance: an answer lost to
        the client's read timeout, retried, and found nothing pending (still one result)."""
        return sum(max(0, a.completions - 1) for a in self.agents)

    def beyond_needed(self) -> dict[str, int]:
        """Admitted calls of each API beyond :data:`NEEDED` (retries after lost answers),
        and every call of an API a boot does not need."""
        extra = {api: self.apis.get(api, Api()).admitted - per * self.size
                 for api, per in NEEDED.items()}
        extra.update({api: c.admitted for api, c in self.apis.items() if api not in NEEDED})
        return {api: n for api, n in extra.items() if n}

    @property
    def abandoned(self) -> list[Agent]:
        """Agents whose launch action ended ABANDON (sent or timed out)."""
        return [a for a in self.agents if any(r == "ABANDON" for r, _ in a.results)]

    def summary(self) -> dict[str, Any]:
        """The figures, as JSON-able values."""
        autoscaling = self.service("autoscaling")
        return {
            "instances": self.size, "autoscaling_quota": list(self.quota),
            "latency_ms": round(self.latency * 1000), "ready": len(self.ready),
            "completed_once": len(self.completed_once), "abandoned": len(self.abandoned),
            "repeated_completions": self.repeated_completions,
            "ready_p50_s": round(self.percentile(0.5), 2),
            "ready_p95_s": round(self.percentile(0.95), 2),
            "ready_max_s": round(self.percentile(1.0), 2),
            "autoscaling_refused": autoscaling.throttled,
            "autoscaling_admitted": autoscaling.admitted,
            "refused_per_admitted": round(autoscaling.throttled / max(1, autoscaling.admitted),
                                          2),
            "apis": {api: {"attempts": c.attempts, "throttled": c.throttled,
                           "per_instance": round(c.admitted / self.size, 2),
                           "attempts_per_admitted": round(c.attempts / max(1, c.admitted), 2)}
                     for api, c in sorted(self.apis.items())},
            "beyond_needed": self.beyond_needed(),
            "elapsed_s": round(self.elapsed, 1),
        }

    def table(self) -> str:
        """The figures, readable."""
        s = self.summary()
        lines = [
            f"{self.size} instances, Auto Scaling quota {self.quota[0]:g} burst + "
            f"{self.quota[1]:g}/s per API, {s['latency_ms']} ms per call",
            f"ready {s['ready']}/{self.size}, completed once {s['completed_once']}, "
            f"abandoned {s['abandoned']}; ready after p50 {s['ready_p50_s']:.1f} s, "
            f"p95 {s['ready_p95_s']:.1f} s, max {s['ready_max_s']:.1f} s",
            f"Auto Scaling: {s['autoscaling_refused']} refused for {s['autoscaling_admitted']} "
            f"admitted ({s['refused_per_admitted']:.2f}x); completions admitted again after a "
            f"lost answer: {s['repeated_completions']}",
            f"  {'api':<44} {'attempts':>8} {'refused':>8} {'per inst.':>9} {'att./adm.':>9}",
        ]
        for api, c in s["apis"].items():
            lines.append(f"  {api:<44} {c['attempts']:>8} {c['throttled']:>8} "
                         f"{c['per_instance']:>9.2f} {c['attempts_per_admitted']:>9.2f}")
        return "\n".join(lines)


def behind_the_cloud(pid: int) -> None:
    """Run an agent process only on CPU time the simulated cloud leaves (``SCHED_IDLE``).

    AWS does not share the instances' CPUs; on a small machine the simulated cloud must
    answer first, or its answers outlast the agents' read timeouts and their retries count
    as calls the agent made. A nice level is not enough: 200 agents at nice 10 weigh 200 x
    110 against the cloud's 1024 (the CFS weights), so the cloud gets ~5 % of the CPU and
    answers after 15 s; ``SCHED_IDLE`` (weight 3 each) leaves it most of a core.
    """
    with contextlib.suppress(ProcessLookupError):  # it ended already
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


def config(world: World, root: Path, instance_id: str, extra: str = "") -> Path:
    """The agent configuration of one instance, under ``root``/``instance_id``."""
    home = root / instance_id
    home.mkdir(parents=True)
    mine = {} if os.geteuid() == 0 else {"owner": str(os.geteuid()), "group": str(os.getegid())}
    path = home / "agent.toml"
    path.write_text(world.agent_config(home / "secrets", home / "state",
                                       [{**entry, **mine} for entry in FILES],
                                       instance_id=instance_id) + extra)
    return path


def boot(size: int, root: Path, *, quota: tuple[float, float] = NORMAL, latency: float = 0.02,
         heartbeat_timeout: int = 300, extra_config: str = "", timeout: float = 1800.0
         ) -> Report:
    """Seed a group of ``size`` instances, boot them all at once, report.

    ``root``: a directory on tmpfs for the agents' state and secrets; ``quota``: Auto
    Scaling's burst and refill rate of each API; ``latency``: seconds added to every call.
    """
    with World(aws_latency=latency) as world:
        world.seed(secrets=SECRETS, size=size, heartbeat_timeout=heartbeat_timeout)
        configs = {i: config(world, root, i, extra_config) for i in world.instance_ids}
        world.cloud.limit("autoscaling", *quota)
        for service, (burst, rate) in OTHER_QUOTAS.items():
            world.cloud.limit(service, burst, rate)
        first = len(world.cloud.calls())
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        started = time.monotonic()
        procs = {}
        for instance_id, path in configs.items():
            log = (path.parent / "agent.log").open("w")
            proc = procs[instance_id] = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--oneshot", "--config", str(path)],
                env={**base, **world.env(instance_id)}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log)
            behind_the_cloud(proc.pid)
            log.close()

        def wait(instance_id: str) -> Agent:
            proc = procs[instance_id]
            agent = Agent(instance_id)
            try:
                agent.code = proc.wait(timeout=max(1.0, started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                agent.last_line = "still running when the fleet gave up"
                return agent
            ended = time.monotonic()
            home = configs[instance_id].parent
            try:
                agent.state = json.loads((home / "state" / "state.json").read_text())["state"]
            except (OSError, ValueError, KeyError):
                agent.state = "unreadable"
            if agent.code == 0 and agent.state == "ready":
                agent.ready_after = ended - started
            else:
                lines = (home / "agent.log").read_text(errors="replace").splitlines()
                agent.last_line = lines[-1] if lines else ""
            return agent

        with ThreadPoolExecutor(size) as pool:
            agents = list(pool.map(wait, configs))
        elapsed = time.monotonic() - started
        calls = world.cloud.calls()[first:]
        completions = Counter(c.params.get("InstanceId") for c in calls
                              if c.action == "CompleteLifecycleAction" and not c.throttled)
        for agent in agents:
            agent.results = [(a.result, a.completed_by) for a in world.cloud.actions(
                agent.instance_id) if a.transition == LAUNCHING]
            agent.completions = completions[agent.instance_id]
        apis: dict[str, Api] = {}
        for call in calls:
            api = apis.setdefault(f"{call.service}:{call.action}", Api())
            api.attempts += 1
            api.throttled += call.throttled
    return Report(size, quota, latency, agents, apis, elapsed)
