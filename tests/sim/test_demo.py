"""`agent demo` as a newcomer runs it: the configuration it boots with, which facts are
this machine's and which the simulated type's, and `--keep`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.instance.facts import read_facts
from agent.sim.demo import HOST_FACTS, INSTANCES, demo_secrets, secret_files

pytestmark = pytest.mark.integration  # every test here starts servers or processes

INSTANCE = INSTANCES[0]
SECRET_TEXTS = [text for name, value in demo_secrets().items() if isinstance(value, str)
                for text in ([json.loads(value)["password"]] if name.endswith("/db") else [value])]


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
        assert config["secrets"]["files"] == secret_files()
        for other in INSTANCES[1:]:  # the same configuration, but for the instance's directory
            assert (root / other.name / "agent.toml").read_text().replace(
                str(root / other.name), str(root / INSTANCE.name)) == path.read_text()
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

        # one configuration, two environments: each instance fetched its own secrets
        fetched = {}
        for instance in INSTANCES:
            doc = json.loads((root / instance.name / "state" / "state.json").read_bytes())
            assert doc["state"] == "ready", instance
            fetched[instance.environment] = (
                {r["entry"]: r["secret_id"] for r in doc["secrets"]},
                [s["entry"] for s in doc.get("skipped", [])])
        assert fetched["staging"] == ({"secrets.files[0]": "staging/db",
                                       "secrets.files[1]": "staging/db",
                                       "secrets.files[2]": "staging/db",
                                       "secrets.files[3]": "staging/api-token",
                                       "secrets.files[4]": "demo/tls-key"},
                                      ["secrets.files[5]"])
        assert fetched["prod"] == ({"secrets.files[0]": "prod/db", "secrets.files[1]": "prod/db",
                                    "secrets.files[2]": "prod/db",
                                    "secrets.files[3]": "prod/api-token",
                                    "secrets.files[4]": "demo/tls-key",
                                    "secrets.files[5]": "prod/pager-key"}, [])
        table = proc.stdout.split("the secret each entry fetched (state.json)\n")[1]
        assert "secrets.files[0]  staging/db" in table and "prod/db" in table
        assert "skipped (when is false)      prod/pager-key" in table
        for instance, level in zip(INSTANCES, ("debug", "warning"), strict=True):
            tuned = (root / instance.name / "tuning" / "app.env").read_text()
            assert f'LOG_LEVEL="{level}"' in tuned  # a tuned value read the tag too
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
