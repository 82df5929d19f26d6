"""`agent demo` as a newcomer runs it: the configuration it boots with, which facts are
this machine's and which the simulated type's, and `--keep`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from agent.facts import read_facts
from agent.sim.demo import HOST_FACTS, INSTANCE
from agent.sim.world import SAMPLE_SECRETS

SECRET_TEXTS = ["correct horse battery staple", str(SAMPLE_SECRETS["demo/api-token"])]


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENT_"))}
    return subprocess.run([sys.executable, "-m", "agent", "demo", *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False)


def scratch(out: str) -> Path:
    """The scratch directory the demo says it uses."""
    match = re.search(r"^  files (\S+)  \(", out, flags=re.MULTILINE)
    assert match, out
    return Path(match.group(1))


def printed_config(out: str) -> tuple[Path, str]:
    """The configuration the demo printed, and the file it says it is."""
    match = re.search(r"^== configuration (\S+) .*?\n((?:  .*\n|\n)+?)\n== ", out,
                      flags=re.MULTILINE)
    assert match, out
    text = "\n".join(line.removeprefix("  ") for line in match.group(2).splitlines())
    return Path(match.group(1)), text


def test_demo_keep_shows_config_and_facts(tmp_path: Path) -> None:
    proc = demo("--keep")
    root = scratch(proc.stdout)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        path, text = printed_config(proc.stdout)
        assert path == root / INSTANCE.name / "agent.toml"
        assert tomllib.loads(text) == tomllib.loads(path.read_text())  # kept, as printed
        config = tomllib.loads(text)
        assert {f["secret_id"] for f in config["secrets"]["files"]} == set(SAMPLE_SECRETS)
        assert (root / INSTANCE.name / "state" / "state.json").is_file()
        status = subprocess.run([sys.executable, "-m", "agent", "status", "--state-dir",
                                 str(root / INSTANCE.name / "state")], capture_output=True,
                                text=True, timeout=30, check=False)
        assert status.returncode == 0 and "ready (healthy)" in status.stdout
        assert f"kept {root}" in proc.stdout

        facts = read_facts(INSTANCE.instance_type).as_dict()
        rows = {line.split()[0]: line for line in proc.stdout.split("from these facts\n")[1]
                .split("\n\n")[0].splitlines()[:len(facts)]}
        assert list(rows) == list(facts)
        for name, value in facts.items():
            row = rows[name].split(None, 2)
            assert row[1] == str(value), name
            origin = "this machine's, measured" if name in HOST_FACTS else "the simulated type's"
            assert row[2].startswith(origin), rows[name]
        assert (f"a real {INSTANCE.instance_type} has {facts['instance_memory_mib']} MiB and "
                f"{facts['instance_vcpus']} vCPUs") in proc.stdout
        for secret in SECRET_TEXTS:
            assert secret not in proc.stdout + proc.stderr + text
    finally:
        if os.path.ismount(root):
            subprocess.run(["umount", "-l", str(root)], check=False)
            root.rmdir()
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)


def test_demo_cleans_up_without_keep() -> None:
    proc = demo()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kept" not in proc.stdout
    assert not scratch(proc.stdout).exists()
