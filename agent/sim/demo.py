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

from agent.facts import read_facts
from agent.sim.world import SAMPLE_SECRETS, World

FILES = [
    {"secret_id": "demo/db", "path": "db.json", "mode": "0400"},
    {"secret_id": "demo/db", "path": "db.env", "format": "env"},
    {"secret_id": "demo/db", "path": "db-password", "key": "password"},
    {"secret_id": "demo/api-token", "path": "api/token", "mode": "0440"},
    {"secret_id": "demo/tls-key", "path": "tls.key"},
]
TUNING = """
[[tuning.files]]
path = "{root}/tuning/app.env"
format = "env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"
POOL_MB = "4096 if family in ('t3', 't4g') else 8192"
"""
HOST_FACTS = ("memory_mib", "vcpus")  # measured on this machine (cgroup limits included)


@dataclass(frozen=True)
class DemoInstance:
    """One instance of the demo: its name (its directory) and simulated type."""

    name: str
    instance_type: str


INSTANCE = DemoInstance("web-1", "m5.xlarge")


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
    """Run the demo; the exit code is the boot's."""
    with World() as world, scratch_tmpfs(keep) as (root, where):
        instance = INSTANCE
        instance_id = world.seed(instance_type=instance.instance_type, secrets=SAMPLE_SECRETS)
        say(f"simulated cloud on loopback\n"
            f"  IMDS  {world.imds.endpoint}  IMDSv2, instance {instance_id} "
            f"({instance.instance_type})\n"
            f"  AWS   {world.cloud.endpoint_url}  moto: group {world.group}, launch hook "
            f"{world.hook}, secrets {', '.join(SAMPLE_SECRETS)}\n"
            f"  files {root}  ({where})")
        code = boot(world, instance, instance_id, root / instance.name)
        if keep:
            say(f"kept {root / instance.name}: agent.toml, state/, secrets/, tuning/ "
                f"(agent status --state-dir {root / instance.name / 'state'}); the simulated "
                "cloud stops with the demo: to boot against one by hand, see \"Try it by "
                "hand\" in the README")
    return code


def boot(world: World, instance: DemoInstance, instance_id: str, root: Path) -> int:
    """Configure, boot and show one instance in ``root``; the boot's exit code."""
    root.mkdir()
    config_path = root / "agent.toml"
    files = FILES if os.geteuid() == 0 else [  # only root can give files to root
        {**f, "owner": str(os.geteuid()), "group": str(os.getegid())} for f in FILES]
    config_path.write_text(world.agent_config(root / "secrets", root / "state", files)
                           + TUNING.format(root=root))
    say(f"configuration {config_path} (secret ids and paths, no secret values)")
    print("  " + config_path.read_text().strip().replace("\n", "\n  "))
    say(f"$ agent run --oneshot --config {config_path}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
    env.update(world.env())
    boot = subprocess.run([sys.executable, "-m", "agent", "run", "--oneshot", "--config",
                           str(config_path)], env=env, check=False)
    say(f"$ agent status --state-dir {root / 'state'}")
    subprocess.run([sys.executable, "-m", "agent", "status", "--state-dir",
                    str(root / "state")], check=False)
    say("published (values are never shown)")
    for entry in files:
        path = root / "secrets" / str(entry["path"])
        if path.exists():
            st = path.stat()
            print(f"  {stat.filemode(st.st_mode)} {st.st_size:>5} B  {path}  "
                  f"-> {os.path.realpath(path).removeprefix(str(root) + '/')}")
    tuned = root / "tuning" / "app.env"
    if tuned.exists():
        say(f"tuned {tuned}")
        print("  " + tuned.read_text().replace("\n", "\n  ").rstrip())
        print_facts(instance.instance_type)
    say("the simulator's record of the launch hook")
    for action in world.cloud.actions(instance_id):
        print(f"  {action.group}/{action.hook} {action.instance_id}: {action.result} "
              f"({action.completed_by})")
    return boot.returncode


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
