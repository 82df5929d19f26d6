"""``agent demo``: one real boot against a simulated cloud on loopback, then its status.

Starts the IMDS simulator and moto (with the lifecycle-hook semantics), seeds an Auto
Scaling group with one instance, a launch hook and three secrets (JSON, plain, binary),
runs ``agent run --oneshot`` as a separate process with an example configuration onto a
tmpfs (its own mount when root, else under /dev/shm), prints ``agent status`` and what was
published (names and modes, never values), and cleans up.
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
from pathlib import Path

from agent.sim.world import World

SECRETS: dict[str, str | bytes] = {
    "demo/db": json.dumps({"username": "app", "password": "correct horse battery staple",
                           "host": "db.internal", "port": 5432}),
    "demo/api-token": "tok_live_0123456789abcdef",
    "demo/tls-key": bytes(range(256)),
}
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


@contextmanager
def scratch_tmpfs() -> Iterator[tuple[Path, str]]:
    """A private tmpfs when root (mounted here), else a directory under /dev/shm."""
    if os.geteuid() == 0:
        path = Path(tempfile.mkdtemp(prefix="agent-demo-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(path)],
                       check=True)
        try:
            yield path, "a tmpfs mounted for the demo"
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
            path.rmdir()
    else:
        path = Path(tempfile.mkdtemp(prefix="agent-demo-", dir="/dev/shm"))
        try:
            yield path, "/dev/shm (tmpfs)"  # noqa: S108 - a label
        finally:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    """Run the demo; the exit code is the boot's."""
    with World() as world, scratch_tmpfs() as (root, where):
        instance = world.seed(instance_type="m5.xlarge", secrets=SECRETS)
        config_path = root / "agent.toml"
        files = FILES if os.geteuid() == 0 else [  # only root can give files to root
            {**f, "owner": str(os.geteuid()), "group": str(os.getegid())} for f in FILES]
        config_path.write_text(world.agent_config(root / "secrets", root / "state", files)
                               + TUNING.format(root=root))
        say(f"simulated cloud on loopback\n"
            f"  IMDS  {world.imds.endpoint}  IMDSv2, instance {instance} (m5.xlarge)\n"
            f"  AWS   {world.cloud.endpoint_url}  moto: group {world.group}, launch hook "
            f"{world.hook}, {len(SECRETS)} secrets\n"
            f"  files {root}  ({where})")
        say(f"$ agent run --oneshot --config {config_path}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
        env.update(world.env())
        boot = subprocess.run([sys.executable, "-m", "agent", "run", "--oneshot", "--config",
                               str(config_path)], env=env, check=False)
        say(f"$ agent status --state-dir {root / 'state'}")
        subprocess.run([sys.executable, "-m", "agent", "status", "--state-dir",
                        str(root / "state")], check=False)
        say("published (values are never shown)")
        for entry in FILES:
            path = root / "secrets" / str(entry["path"])
            if path.exists():
                st = path.stat()
                print(f"  {stat.filemode(st.st_mode)} {st.st_size:>5} B  {path}  "
                      f"-> {os.path.realpath(path).removeprefix(str(root) + '/')}")
        tuned = root / "tuning" / "app.env"
        if tuned.exists():
            say(f"tuned {tuned}")
            print("  " + tuned.read_text().replace("\n", "\n  ").rstrip())
        say("the simulator's record of the launch hook")
        for action in world.cloud.actions(instance):
            print(f"  {action.group}/{action.hook} {action.instance_id}: {action.result} "
                  f"({action.completed_by})")
    return boot.returncode


def say(text: str) -> None:
    """A step heading."""
    print(f"\n== {text}", flush=True)
