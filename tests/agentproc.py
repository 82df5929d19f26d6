"""Running `agent` as a process against the simulated cloud (shared by the integration tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.sim import World
from agent.state.recorder import PhaseState, Recorder, State

DB = {"username": "app", "password": "pw-Zq8!\"quoted\" $dollar `tick`", "port": 5432}
PLAIN = "plain-secret-7f3a9c"
BINARY = bytes(range(256)) + b"\x00tail-secret-bytes"
SECRET_MARKERS = ["pw-Zq8!", PLAIN, "tail-secret-bytes"]
IS_ROOT = os.geteuid() == 0
KEPT = "AGENT_CONFIG_CACHE"  # the agents a test starts keep the test's own cache


def clean_environment() -> dict[str, str]:
    """This process's environment for an agent it starts: no AGENT_*/AWS_* but the cache."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AGENT_", "AWS_")) or k == KEPT}
# Files owned by others need root to give away; as another user the same files are its own.
NOBODY = {"owner": "nobody", "group": "nogroup"} if IS_ROOT else {
    "owner": str(os.geteuid()), "group": str(os.getegid())}
MINE = {} if IS_ROOT else NOBODY
FILES: list[dict[str, Any]] = [
    {"secret_id": "prod/db", "path": "db.json", **MINE},
    {"secret_id": "prod/db", "path": "db.env", "format": "env", "mode": "0440",
     **MINE, "group": NOBODY["group"]},
    {"secret_id": "prod/db", "path": "app/db-password", "key": "password",
     **MINE, "owner": NOBODY["owner"]},
    {"secret_id": "prod/plain", "path": "plain.txt", **MINE},
    {"secret_id": "prod/bin", "path": "tls.key", "mode": "0400", **MINE},
]


def mine(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries, owned by the user the tests run as (root: as given)."""
    return [{**MINE, **entry} for entry in files]
TUNING = """
[[tuning.files]]
path = "{root}/tuning/app.env"
[tuning.files.values]
HEAP_MB = "int(clamp(memory_mib * 0.75, 256, 31744))"
WORKERS = "vcpus * 2 + 1"
"""


@contextmanager
def shm_dir(prefix: str) -> Iterator[Path]:
    """A private directory on /dev/shm (a real tmpfs, for root and others alike), removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Booter:
    """One simulated cloud, one tmpfs, and the agent run against them as a process."""

    def __init__(self, world: World, tmpfs: Path) -> None:
        self.world = world
        self.root = tmpfs
        self.state_dir = tmpfs / "state"
        self.secrets_dir = tmpfs / "secrets"
        self.config_path = tmpfs / "agent.toml"
        self.outputs: list[str] = []

    def configure(self, files: list[dict[str, Any]] = FILES, extra: str = "",
                  secrets_dir: Path | None = None) -> None:
        text = self.world.agent_config(secrets_dir or self.secrets_dir, self.state_dir,
                                       mine(files))
        self.config_path.write_text(text + TUNING.format(root=self.root) + extra)

    def env(self) -> dict[str, str]:
        env = clean_environment()
        env.update(self.world.env())
        return env

    def agent(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                              text=True, env=self.env(), timeout=timeout)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.agent("run", "--oneshot", "--config", str(self.config_path), *extra)

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.agent("status", "--state-dir", str(self.state_dir), *extra)

    def doc(self) -> dict[str, Any]:
        text = (self.state_dir / "state.json").read_text()
        self.outputs.append(text)
        return dict(json.loads(text))

    def results(self) -> list[str | None]:
        return [a.result for a in self.world.cloud.actions(self.world.instance_id)]

    def assert_no_secret_leaked(self) -> None:
        for text in self.outputs:
            for marker in SECRET_MARKERS:
                assert marker not in text

    def start_daemon(self, *extra: str) -> subprocess.Popen[str]:
        """`agent run` (daemon mode) in the background."""
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                 str(self.config_path), *extra], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 30) -> None:
        proc = self.agent("wait", "--timeout", str(timeout), "--state-dir", str(self.state_dir))
        assert proc.returncode == 0, proc.stdout + proc.stderr

    @contextmanager
    def daemon(self, *extra: str, env: dict[str, str] | None = None, ready: bool = True,
               prefix: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[str]]:
        """`agent run` resident in the background: ready (unless not asked), then stopped
        with SIGTERM, which must end it with exit 0. ``prefix``: a command that ends by
        executing the rest (the same PID)."""
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "agent", "run", "--config",
                                 str(self.config_path), *extra], env=env or self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if ready:
                self.wait_ready()
            yield proc
        except BaseException:
            self.stop(proc)
            raise
        code = self.stop(proc)
        assert code == 0, f"the daemon exited {code}: {self.outputs[-1]}"

    def refreshed(self, count: int, timeout: float = 30) -> dict[str, Any]:
        """Wait until the daemon has finished ``count`` refreshes; the state document."""
        return dict(eventually(lambda: (d := self.doc()).get("refresh", {}).get("count", 0)
                               >= count and d, timeout=timeout))

    def collect(self, proc: subprocess.Popen[str], timeout: float = 60) -> int:
        """Wait for a background run to end by itself; its exit code."""
        out, err = proc.communicate(timeout=timeout)
        self.outputs += [out, err]
        return proc.returncode

    def stop(self, proc: subprocess.Popen[str]) -> int:
        """SIGTERM, collect output; the exit code."""
        if proc.poll() is None:
            proc.terminate()
        out, err = proc.communicate(timeout=15)
        self.outputs += [out, err]
        return proc.returncode


def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``check()`` is truthy; return it (or fail with the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


def booted(tmp_path: Path, final: State | None = State.READY) -> Recorder:
    """A state.json in ``tmp_path`` as a boot writes it, ended ``final`` (None: running)."""
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.update(instance={"instance_id": "i-0abc", "instance_type": "m5.xlarge",
                         "region": "us-east-1", "availability_zone": "us-east-1a",
                         "image_id": "ami-1", "auto_scaling_group": "web-asg"})
    rec.phase("metadata", PhaseState.RUNNING)
    rec.phase("metadata", PhaseState.DONE, detail="i-0abc m5.xlarge")
    rec.phase("secrets", PhaseState.RUNNING)
    rec.phase("secrets", PhaseState.DONE, detail="3 files")
    rec.phase("tuning", PhaseState.SKIPPED, detail="no tuning configured")
    rec.update(lifecycle={"group": "web-asg", "hook": "agent-ready", "result": "CONTINUE"})
    rec.phase("lifecycle", PhaseState.DONE, detail="CONTINUE sent")
    if final is not None:
        rec.finish(final)
    return rec
