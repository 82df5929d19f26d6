"""state.json, `agent status` and `agent wait`: contract, exit codes, and a light path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from agentproc import booted

from agent.cli import status
from agent.cli.commands import main
from agent.state import reader
from agent.state.recorder import PhaseState, Recorder, State


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("AGENT_") or k == "AGENT_CONFIG_CACHE"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


@pytest.mark.parametrize(("final", "code"), [(State.READY, 0), (State.FAILED, 1), (None, 3)])
def test_status_exit_codes(tmp_path: Path, final: State | None, code: int,
                           capsys: pytest.CaptureFixture[str]) -> None:
    booted(tmp_path, final)
    assert main(["status", "--state-dir", str(tmp_path)]) == code


def test_status_not_started_is_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--state-dir", str(tmp_path / "none")]) == 3
    assert "not started" in capsys.readouterr().out


def test_degraded_is_still_ready(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = booted(tmp_path)
    rec.warn("lifecycle: the action was not ours")
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ready (degraded)" in out
    assert "the action was not ours" in out


def test_status_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    booted(tmp_path)
    main(["status", "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("agent: ready (healthy)")
    assert "i-0abc m5.xlarge us-east-1a ami-1  group web-asg" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "done" in lines["metadata"] and " ms " in lines["metadata"]
    assert "skipped" in lines["tuning"] and "no tuning configured" in lines["tuning"]
    assert "CONTINUE -> web-asg/agent-ready" in out


def test_status_json_prints_the_document(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    booted(tmp_path)
    main(["status", "--json", f"--state-dir={tmp_path}"])
    assert json.loads(capsys.readouterr().out) == reader.read(str(tmp_path))


@pytest.mark.integration
def test_status_flags_a_dead_runner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = booted(tmp_path, final=None)
    proc = subprocess.Popen(["true"])
    proc.wait()
    rec.update(pid=proc.pid)
    rec.write()  # (mid-boot, an update waits for the next write)
    assert main(["status", "--state-dir", str(tmp_path)]) == 3
    assert f"the agent (pid {proc.pid}) is gone" in capsys.readouterr().out


def test_wait_returns_when_ready(tmp_path: Path) -> None:
    rec = booted(tmp_path, final=None)
    finishing = threading.Event()

    def finish() -> None:
        finishing.set()  # before the write: wait can only return after it
        rec.finish(State.READY)

    timer = threading.Timer(0.3, finish)
    timer.start()
    assert main(["wait", "--timeout", "30", "--state-dir", str(tmp_path)]) == 0
    assert finishing.is_set()  # it waited for the boot to end
    timer.join()


def test_wait_failed_and_timeout(tmp_path: Path) -> None:
    booted(tmp_path, State.FAILED)
    assert main(["wait", "--timeout=5", "--state-dir", str(tmp_path)]) == 1
    assert main(["wait", "--timeout", "0.2", "--state-dir", str(tmp_path / "never")]) == 124


def test_wait_waits_for_a_boot_not_yet_started(tmp_path: Path) -> None:
    timer = threading.Timer(0.3, booted, args=(tmp_path,))
    timer.start()
    assert main(["wait", "--timeout", "10", "--state-dir", str(tmp_path)]) == 0
    timer.join()


@pytest.mark.parametrize(
    "args",
    [["status", "--bogus"], ["wait", "--timeout", "soon"], ["wait", "--timeout", "-1"],
     ["status", "--state-dir"], ["frobnicate"], []],
)
@pytest.mark.integration
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("how", ["--state-dir", "config"])
@pytest.mark.integration
def test_status_path_imports_only_what_it_needs(tmp_path: Path, how: str) -> None:
    """Beyond what the interpreter loads to start: the agent's own modules; no SDK,
    pydantic, argparse, nor json (nor its C scanner), re, enum, typing, tomllib."""
    booted(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(f'# the boot agent\nmode = "daemon"\nstate_dir = "{tmp_path}"  # here\n'
                      '\n[imds]\ntimeout_seconds = 2\n')
    args = ["--state-dir", str(tmp_path)] if how == "--state-dir" else []
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from agent.cli.commands import main\n"
        f"rc = main(['status', *{args!r}])\n"
        "print('LOADED', sorted(set(sys.modules) - before), rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "AGENT_CONFIG": str(config)}, timeout=30)
    assert ("LOADED ['agent', 'agent.cli', 'agent.cli.commands', 'agent.cli.quickargs', "
            "'agent.cli.status', 'agent.errors', 'agent.readfile', 'agent.state', "
            "'agent.state.reader'] 0") in proc.stdout, proc.stdout + proc.stderr


def test_the_package_imports_no_private_module() -> None:
    """Public interfaces only: no ``_json``-style module of another library, in the agent's
    own modules (the simulated cloud in agent/sim, a test tool, is not shipped to run)."""
    import ast

    package = Path(reader.__file__).parents[1]  # the agent package
    found = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and
                     not node.level else [])
            found += [f"{source.name}: {name}" for name in names
                      if any(part.startswith("_") and part != "__future__"
                             for part in name.split("."))]
    assert found == []


@pytest.mark.integration
def test_help_lists_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    codes = dict(line.split(None, 1) for line in proc.stdout.split("exit codes:\n")[1]
                 .split("\n\n")[0].splitlines())
    assert codes["78"] == "invalid configuration"
    assert codes["124"] == "timed out (wait)"
    assert codes["3"].startswith("not finished")


def test_status_exit_code_helper() -> None:
    assert status.exit_code(None) == 3
    assert status.exit_code({"state": "running"}) == 3
    assert status.exit_code({"state": "ready", "condition": "degraded"}) == 0
    assert status.exit_code({"state": "failed"}) == 1


FORGED = "\x1b]0;owned\x07\x1b[2J\nforged line\x9b"


def test_status_prints_every_field_escaped(tmp_path: Path) -> None:
    """state.json's text comes from outside (tags, AWS messages) or may be forged: the
    table shows it escaped, one line per line of the table."""
    doc = {"state": "failed", "condition": FORGED, "updated_at": FORGED,
           "instance": {"instance_id": FORGED, "auto_scaling_group": FORGED},
           "resize": {"from": FORGED, "to": FORGED}, "image": {"built_at": FORGED},
           "phases": [{"name": FORGED, "state": FORGED, "error": FORGED}],
           "lifecycle": {"result": FORGED, "group": FORGED, "hook": FORGED},
           "secrets": [{"path": FORGED, "secret_id": FORGED, "version_id": FORGED,
                        "region": FORGED, "role": FORGED},
                       {"template": FORGED, "path": FORGED}],
           "skipped": [{"entry": FORGED, "reason": FORGED}],
           "events": [{"code": FORGED, "description": FORGED}],
           "termination": {"reason": FORGED, "notice": FORGED,
                           "steps": [{"step": FORGED, "result": FORGED}],
                           "hook": {"error": FORGED}},
           "rebalance": {"notice": FORGED},
           "warnings": [FORGED], "errors": [FORGED]}
    text = status.render(doc, f"{tmp_path}\x1b[2J")
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert not any(line.startswith("forged line") for line in text.splitlines())
    assert text.count("\\x1b]0;owned\\x07\\x1b[2J\\nforged line\\x9b") >= 30
    assert "\\x1b[2J" in status.render(None, f"{tmp_path}\x1b[2J")


def test_the_record_holds_outside_text_escaped(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.phase("secrets", PhaseState.RUNNING)
    rec.note("secrets", f"fetching {FORGED}")
    assert "\\x1b]0;owned" in rec.doc["phases"][1]["detail"]
    rec.warn(f"refresh: {FORGED}")
    rec.phase("secrets", PhaseState.FAILED, error=f"secret {FORGED}")
    doc = json.loads((tmp_path / "state.json").read_text())
    for text in [*doc["errors"], *doc["warnings"], doc["phases"][1]["error"]]:
        assert text.isprintable() and "\\nforged line" in text
