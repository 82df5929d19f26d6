"""``agent demo``: one real boot against a simulated cloud on loopback, then its status.

Starts the IMDS simulator and moto (with the lifecycle-hook semantics), seeds an Auto
Scaling group with one instance, a launch hook and three secrets (JSON, plain, binary),
prints the configuration it boots with, runs ``agent run --oneshot`` as a separate process
onto a tmpfs (its own mount when root, else under /dev/shm), prints ``agent status``, what
was published (names and modes, never values), the tuned values and the facts they came
from (which are this machine's, which the simulated type's), the simulator's record of the
launch hook, and removes the scratch directory unless ``--keep``.

The instance is a :class:`DemoInstance`, booted by :func:`boot` in a directory of its own
under the scratch directory: a demo of several instances seeds each and boots it the same
way, beside the others.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.instance.facts import read_facts
from agent.sim.world import SAMPLE_SECRETS, World

FILES = [  # one configuration for every environment: the ids come from the Environment tag
    {"secret_id": "{tag:Environment}/db", "path": "db.json", "mode": "0400"},
    {"secret_id": "{tag:Environment}/db", "path": "db.env", "format": "env"},
    {"secret_id": "{tag:Environment}/db", "path": "db-password", "key": "password"},
    {"secret_id": "{tag:Environment}/api-token", "path": "api/token", "mode": "0440"},
    {"secret_id": "demo/tls-key", "path": "tls.key"},
    {"secret_id": "prod/pager-key", "path": "pager.key", "when": "tag('Environment') == 'prod'"},
]
TUNING = """
[[tuning.files]]
path = "{root}/tuning/app.env"
format = "env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"
POOL_MB = "4096 if family in ('t3', 't4g') else 8192"
LOG_LEVEL = "'debug' if tag('Environment') == 'staging' else 'warning'"
"""
HOST_FACTS = ("memory_mib", "machine_memory_mib", "vcpus")  # measured here (cgroup limits too)


@dataclass(frozen=True)
class DemoInstance:
    """One instance of the demo: its name (its directory), simulated type and environment."""

    name: str
    instance_type: str
    environment: str  # its Environment tag

    @property
    def label(self) -> str:
        """``web-1 (Environment=staging)``."""
        return f"{self.name} (Environment={self.environment})"


INSTANCES = (DemoInstance("web-1", "m5.xlarge", "staging"),
             DemoInstance("web-2", "m5.xlarge", "prod"))  # one group, one image, one config


def demo_secrets() -> dict[str, str | bytes]:
    """Made-up secrets of both environments, and one shared by both (the TLS key)."""
    found: dict[str, str | bytes] = {"demo/tls-key": SAMPLE_SECRETS["demo/tls-key"]}
    for env in sorted({instance.environment for instance in INSTANCES}):
        found[f"{env}/db"] = json.dumps({"username": f"app_{env}",
                                         "password": f"{env} horse battery staple",
                                         "host": f"db.{env}.internal", "port": 5432})
        found[f"{env}/api-token"] = f"tok_{env}_0123456789abcdef"
    found["prod/pager-key"] = "pgr_prod_fedcba9876543210"
    return found


@contextmanager
def scratch_tmpfs(keep: bool = False) -> Iterator[tuple[Path, str]]:
    """A private tmpfs when root (mounted here), else a directory under /dev/shm.

    ``keep``: leave it (mounted) afterwards; the label then says how to remove it.
    """
    if os.geteuid() == 0:
        path = Path(tempfile.mkdtemp(prefix="agent-demo-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(path)],
                       check=True)
        try:
            yield path, "a tmpfs mounted for the demo"
        finally:
            if keep:
                say(f"kept {path} (a tmpfs mounted for the demo): when done, "
                    f"umount {path} && rmdir {path}")
            else:
                subprocess.run(["umount", "-l", str(path)], check=False)
                path.rmdir()
    else:
        path = Path(tempfile.mkdtemp(prefix="agent-demo-", dir="/dev/shm"))
        try:
            yield path, "/dev/shm (tmpfs)"  # noqa: S108 - a label
        finally:
            if keep:
                say(f"kept {path} (on /dev/shm): when done, rm -rf {path}")
            else:
                shutil.rmtree(path, ignore_errors=True)


def main(keep: bool = False) -> int:
    """Run the demo; the exit code is the first failed boot's (else 0)."""
    secrets = demo_secrets()
    with World() as world, scratch_tmpfs(keep) as (root, where):
        first, *others = INSTANCES
        ids = {first.name: world.seed(instance_type=first.instance_type, secrets=secrets,
                                      tags={"Environment": first.environment})}
        ids.update({i.name: world.add_instance(tags={"Environment": i.environment})
                    for i in others})
        say("simulated cloud on loopback\n"
            f"  IMDS  {world.imds.endpoint}  IMDSv2, serving one instance at a time:\n"
            + "".join(f"          {i.label} {ids[i.name]} {i.instance_type}\n"
                      for i in INSTANCES)
            + f"  AWS   {world.cloud.endpoint_url}  moto: group {world.group} (both waiting on "
            f"its launch hook {world.hook}), secrets {', '.join(secrets)}\n"
            f"  files {root}  ({where})")
        configs = {i.name: write_config(world, root / i.name) for i in INSTANCES}
        show_config(root, configs)
        codes = [boot(world, i, ids[i.name], root / i.name, show_facts=i is first)
                 for i in INSTANCES]
        compare(root)
        if keep:
            say(f"kept {', '.join(str(root / i.name) for i in INSTANCES)}: agent.toml, state/, "
                f"secrets/, tuning/ (agent status --state-dir {root / first.name / 'state'}); "
                "the simulated cloud stops with the demo: to boot against one by hand, see "
                "\"Try it by hand\" in docs/tutorial.md")
    return next((code for code in codes if code), 0)


def secret_files() -> list[dict[str, str]]:
    """FILES, owned by the caller when not root (only root can give files to root)."""
    if os.geteuid() == 0:
        return FILES
    return [{**f, "owner": str(os.geteuid()), "group": str(os.getegid())} for f in FILES]


def write_config(world: World, root: Path) -> Path:
    """The instance's agent.toml in its directory ``root``: the same text for every instance
    but for that directory (on EC2 each would use /run/agent on its own machine)."""
    root.mkdir()
    path = root / "agent.toml"
    path.write_text(world.agent_config(root / "secrets", root / "state", secret_files())
                    + TUNING.format(root=root))
    return path


def show_config(root: Path, configs: dict[str, Path]) -> None:
    """Print the first instance's configuration; check, and say, that the others' is the same."""
    (name, path), *others = configs.items()
    say(f"configuration {path} (secret ids and paths, no secret values)")
    text = path.read_text()
    print("  " + text.strip().replace("\n", "\n  "))
    for other, other_path in others:
        same = other_path.read_text().replace(str(root / other), str(root / name)) == text
        if not same:
            raise RuntimeError(f"{other_path} differs from {path}")  # the demo's own promise
        say(f"configuration {other_path}: the same, but for its directory {root / other}")


def boot(world: World, instance: DemoInstance, instance_id: str, root: Path, *,
         show_facts: bool = True) -> int:
    """Boot and show one instance (IMDS serves it) from its ``root``; the boot's exit code."""
    world.become(instance_id)
    config_path = root / "agent.toml"
    say(f"{instance.label}: instance {instance_id}\n"
        f"$ agent run --oneshot --config {config_path}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
    env.update(world.env())
    boot = subprocess.run([sys.executable, "-m", "agent", "run", "--oneshot", "--config",
                           str(config_path)], env=env, check=False)
    say(f"$ agent status --state-dir {root / 'state'}")
    subprocess.run([sys.executable, "-m", "agent", "status", "--state-dir",
                    str(root / "state")], check=False)
    say(f"{instance.name}: published (values are never shown)")
    for entry in FILES:
        path = root / "secrets" / str(entry["path"])
        if path.exists():
            st = path.stat()
            print(f"  {stat.filemode(st.st_mode)} {st.st_size:>5} B  {path}  "
                  f"-> {os.path.realpath(path).removeprefix(str(root) + '/')}")
    tuned = root / "tuning" / "app.env"
    if tuned.exists():
        say(f"{instance.name}: tuned {tuned}")
        print("  " + tuned.read_text().replace("\n", "\n  ").rstrip())
        if show_facts:
            print_facts(instance.instance_type)
    say(f"{instance.name}: the simulator's record of the launch hook")
    for action in world.cloud.actions(instance_id):
        print(f"  {action.group}/{action.hook} {action.instance_id}: {action.result} "
              f"({action.completed_by})")
    return boot.returncode


def compare(root: Path) -> None:
    """Side by side, from each state.json: the secret each entry fetched, or why it was
    skipped. One configuration, a different secret per environment."""
    found: dict[str, dict[str, str]] = {}
    for instance in INSTANCES:
        try:
            doc = json.loads((root / instance.name / "state" / "state.json").read_bytes())
        except (OSError, ValueError):
            doc = {}
        for record in doc.get("secrets") or []:
            found.setdefault(record["entry"], {})[instance.name] = record.get("secret_id", "")
        for skipped in doc.get("skipped") or []:
            found.setdefault(skipped["entry"], {})[instance.name] = "skipped (when is false)"
    say("one configuration, two environments: the secret each entry fetched (state.json)")
    width = max(len(i.label) for i in INSTANCES) + 2
    print(f"  {'entry':<18}" + "".join(f"{i.label:<{width}}" for i in INSTANCES).rstrip())
    for entry in sorted(found, key=_entry_order):
        print(f"  {entry:<18}" + "".join(f"{found[entry].get(i.name, '-'):<{width}}"
                                        for i in INSTANCES).rstrip())


def _entry_order(entry: str) -> tuple[str, int]:
    kind, _, index = entry.partition("[")
    return kind, int(index.rstrip("]") or 0)


def print_facts(instance_type: str) -> None:
    """The facts behind the tuned values: which are this machine's, which the type's."""
    facts = read_facts(instance_type).as_dict()
    print("  from these facts")
    for name, value in facts.items():
        origin = (f"this machine's, measured (not a real {instance_type}'s)"
                  if name in HOST_FACTS else f"the simulated type's ({instance_type} in the "
                  "bundled table)")
        print(f"    {name:<20} {value!s:<10}  {origin}")
    print(f"  a real {instance_type} has {facts['instance_memory_mib']} MiB and "
          f"{facts['instance_vcpus']} vCPUs: agent plan --instance-type {instance_type} "
          "plans for that")


def say(text: str) -> None:
    """A step heading."""
    print(f"\n== {text}", flush=True)
