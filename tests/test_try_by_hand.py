"""The tutorial's "Try it by hand" (docs/tutorial.md): its shell blocks, run as written,
against the simulator.

The first block (``python -m agent.sim serve``) runs as a process; its ready line gives the
endpoints, which replace the tutorial's fixed ports (so that parallel runs do not collide),
and a scratch tmpfs replaces /dev/shm/agent-try. Every other block runs in bash as is, in
order, and must do what the tutorial says it does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import loader
from agent.sim.world import SAMPLE_SECRETS

pytestmark = pytest.mark.integration  # every test here starts servers or processes

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
IMDS, AWS, TRY = "127.0.0.1:8111", "127.0.0.1:4566", "/dev/shm/agent-try"
SECRET_TEXTS = ["correct horse battery staple", str(SAMPLE_SECRETS["demo/api-token"])]


def blocks() -> list[str]:
    """The ``sh`` blocks of the tutorial's "Try it by hand" section, in order."""
    text = TUTORIAL.read_text()
    section = text.split("\n## Try it by hand\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def one(found: list[str], marker: str) -> str:
    """The one block holding ``marker``."""
    (block,) = [b for b in found if marker in b]
    return block


@pytest.fixture
def simulator(tmpfs: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """The tutorial's first block as a process, on free ports; its ready line."""
    serve = blocks()[0].strip()
    assert serve.startswith("python -m agent.sim serve") and IMDS in serve and AWS in serve
    command = serve.replace(IMDS, "127.0.0.1:0").replace(AWS, "127.0.0.1:0")
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], stdout=subprocess.PIPE,
                            text=True, env=environment())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the simulator did not start (exit {proc.wait()})"
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, as the tutorial says
            proc.wait(timeout=30)


def environment() -> dict[str, str]:
    """The shell of someone who activated the project's venv (no AWS or agent settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def sim_state(aws: str, what: str = "state") -> dict[str, Any]:
    with urllib.request.urlopen(f"{aws}/_sim/{what}", timeout=10) as reply:  # noqa: S310
        return dict(json.load(reply))


def test_try_it_by_hand(simulator: tuple[subprocess.Popen[str], dict[str, Any]],
                        tmpfs: Path) -> None:
    proc, ready = simulator
    assert ready["group"] == "web-asg" and ready["hook"] == "agent-ready"
    assert ready["secrets"] == sorted(SAMPLE_SECRETS)  # the default seed: the demo's secrets
    imds, aws = ready["imds"].removeprefix("http://"), ready["aws"].removeprefix("http://")
    scratch = tmpfs / "agent-try"
    found = blocks()
    outputs: list[str] = []

    for literal in (IMDS, AWS, TRY):  # what is replaced is really there
        assert literal in "".join(found[1:]), literal

    def run(block: str) -> str:
        script = block.replace(IMDS, imds).replace(AWS, aws).replace(TRY, str(scratch))
        shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                               env=environment(), timeout=180)
        out = shell.stdout + shell.stderr
        outputs.append(out)
        assert shell.returncode == 0, out
        assert "command not found" not in out and "curl: (" not in out, out
        return out

    settings = one(found, "cat >$AGENT_CONFIG")
    run(settings)
    cfg = loader.load(str(scratch / "agent.toml"))
    assert cfg.imds.endpoint == ready["imds"] and cfg.aws.endpoint_url == ready["aws"]
    prelude = "\n".join(line for line in settings.splitlines() if line.startswith("export "))

    def step(marker: str) -> str:
        return run(prelude + "\n" + one(found, marker))

    out = step("agent plan")
    assert 'exit 0' in out and "agent: ready (healthy)" in out, out
    assert "CONTINUE sent to web-asg/agent-ready" in out
    assert "db.env" in out and "HEAP_MB=" in out and '"result": "CONTINUE"' in out

    out = step("AccessDeniedException")
    assert "exit 1" in out and "access denied" in out and "agent: failed (error)" in out, out
    assert "ABANDON sent to web-asg/agent-ready" in out
    assert "db.env" in out and "api-token" in out  # the first boot's files stay

    before = sim_state(ready["aws"])["calls"]["GetSecretValue"]
    out = step('"count": 3}}')
    assert "exit 0" in out and "agent: ready (healthy)" in out, out
    assert sim_state(ready["aws"])["calls"]["GetSecretValue"] == before + 2 + 3
    out = step("time_out_before")
    assert "exit 0" in out and "agent: ready (degraded)" in out, out
    assert "the agent-ready action was no longer pending" in out
    last = sim_state(ready["aws"])["actions"][-1]
    assert (last["result"], last["completed_by"]) == ("ABANDON", "timeout")

    out = step('"status": 503')
    assert "exit 0" in out and "agent: ready (healthy)" in out, out
    log = sim_state(ready["aws"], "imds")["requests"]
    assert sum(1 for _, _, status in log if status == 503) == 3

    assert [r["result"] for r in sim_state(ready["aws"])["actions"]] == [
        "CONTINUE", "ABANDON", "CONTINUE", "ABANDON", "CONTINUE"]
    for text in outputs:
        for secret in SECRET_TEXTS:
            assert secret not in text
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
