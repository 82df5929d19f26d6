"""The command line an operator meets: --help, usage errors, the man page, the completion.

Every option of every command says what it does and its default; a bad value names the
option; an installation without the simulated cloud (the packages) does not offer `demo`.
The man page and the bash completion are generated from the same parser (as the packages
do it) and carry every command and option.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agent.cli import commands as cli

REPO = Path(__file__).resolve().parents[2]


def agent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS``; with ``cwd``, the agent package there and nothing else
    (``-S``: not the development install, whose finder would also find agent.sim)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AWS_"))}
    isolated = ["-S"] if cwd else []
    return subprocess.run([sys.executable, *isolated, "-m", "agent", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60, check=False)


def surface(line: cli.CommandLine) -> dict[str, list[argparse.Action]]:
    """Each command and its options (without -h)."""
    return line.options


def test_the_commands_of_the_design() -> None:
    commands = surface(cli.command_line(demo=True))
    assert list(commands) == ["run", "status", "wait", "plan", "demo", "bake-check"]
    options = {name: [o for a in actions for o in a.option_strings]
               for name, actions in commands.items()}
    assert options == {
        "run": ["--config", "--oneshot", "-v", "--verbose"],
        "status": ["--json", "--state-dir"], "wait": ["--timeout", "--state-dir"],
        "plan": ["--config", "--instance-type", "--tag", "--region", "--account", "--group",
                 "--availability-zone", "--json"], "demo": ["--keep"],
        "bake-check": ["--config", "--root", "--manifest", "--fix"]}


@pytest.mark.parametrize("command", ["run", "status", "wait", "plan", "demo", "bake-check"])
@pytest.mark.integration
def test_every_option_is_described_with_its_default(command: str) -> None:
    proc = agent(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for action in surface(cli.command_line(demo=True))[command]:
        assert action.help and "(default: " in action.help, action.option_strings
        first = " ".join(action.help.split()[:3])
        assert first in " ".join(proc.stdout.split()), (action.option_strings, proc.stdout)


@pytest.mark.integration
def test_wait_says_it_waits_forever() -> None:
    proc = agent("wait", "--help")  # the fast path hands --help to argparse
    assert "--timeout SECONDS" in proc.stdout
    assert "(default: none, wait forever)" in " ".join(proc.stdout.split())


@pytest.mark.parametrize(("args", "option"), [
    (["wait", "--timeout", "abc"], "--timeout"), (["wait", "--timeout=-1"], "--timeout"),
    (["wait", "--timeout", "nan"], "--timeout"), (["plan", "--instance-type", ""],
                                                  "--instance-type"),
    (["status", "--state-dir"], "--state-dir"), (["run", "--config"], "--config"),
    (["bake-check", "--root", "/nonexistent/image"], "--root"),
])
@pytest.mark.integration
def test_a_bad_value_names_the_option(args: list[str], option: str) -> None:
    proc = agent(*args)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    usage, error = lines[0], lines[-1]  # the usage may wrap; the error is one line
    assert usage.startswith(f"usage: agent {args[0]} ")
    assert error.startswith(f"agent {args[0]}: error: argument {option}: "), error
    assert "invalid" not in error and "_" not in error.split(": ", 2)[2], error


@pytest.mark.parametrize(("args", "expected"), [
    (["run"], "RUN None False False"),
    (["run", "--oneshot", "--config", "/etc/x.toml"], "RUN /etc/x.toml True False"),
    (["run", "--config=/etc/x.toml", "-v"], "RUN /etc/x.toml False True"),
    (["run", "--verbose", "--oneshot"], "RUN None True True"),
])
@pytest.mark.integration
def test_run_parses_its_options_without_argparse(args: list[str], expected: str) -> None:
    """The boot's command line is read by hand (argparse costs the boot ~10 ms), and the
    collector is off for the boot."""
    code = ("import gc, sys, types\nfrom agent.cli import commands as cli\n"
            "def run(config, *, oneshot, verbose):\n"
            "    print('RUN', config, oneshot, verbose, 'argparse' in sys.modules,\n"
            "          gc.isenabled())\n"
            "    return 0\n"
            "sys.modules['agent.boot.daemon'] = types.SimpleNamespace(run=run)  # the boot itself\n"
            f"sys.exit(cli.main({args!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{expected} False False"


@pytest.mark.integration
def test_run_gives_what_it_does_not_know_to_argparse() -> None:
    proc = agent("run", "--oneshot", "--config")  # no value: argparse's usage error
    assert proc.returncode == 2 and "argument --config: expected one argument" in proc.stderr
    proc = agent("run", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_wait_timeout_inf_is_accepted() -> None:
    assert cli.parser().parse_args(["wait", "--timeout", "inf"]).timeout == float("inf")


def packaged_tree(tmp_path: Path) -> Path:
    """The agent package as the .deb and .rpm install it: without agent/sim."""
    shutil.copytree(REPO / "agent", tmp_path / "agent",
                    ignore=shutil.ignore_patterns("sim", "__pycache__"))
    return tmp_path


@pytest.mark.integration
def test_the_packaged_agent_does_not_offer_demo(tmp_path: Path) -> None:
    tree = packaged_tree(tmp_path)
    code = ("import agent.cli.commands as c; "
            "print(c.__file__, c.sim_available())")
    found = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                           cwd=tree, check=True, timeout=30)
    assert found.stdout.split() == [str(tree / "agent/cli/commands.py"), "False"]
    helped = agent("--help", cwd=tree)
    assert helped.returncode == 0
    commands = helped.stdout.split("commands:")[1].split("\n\n")[0]
    assert "demo" not in commands and "bake-check" in commands
    assert "agent demo is not part of this installation" in " ".join(helped.stdout.split())
    for args in (["demo"], ["demo", "--keep"]):
        proc = agent(*args, cwd=tree)
        assert proc.returncode == 2
        assert proc.stderr == f"agent: {cli.NO_DEMO}\n"
        assert "make demo" in proc.stderr
    assert "demo" not in surface(cli.command_line(demo=False))


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "scripts/gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_man_page_and_completion_carry_every_command_and_option(tmp_path: Path) -> None:
    pytest.importorskip("argparse_manpage")
    pytest.importorskip("shtab")
    assert load_generator().main([str(tmp_path)]) == 0
    roff = (tmp_path / "agent.8").read_text()
    assert roff.startswith('.TH AGENT "8"')
    text = roff.replace("\\-", "-")
    commands = surface(cli.command_line())
    for name, actions in commands.items():
        assert f"agent {name}" in text, name
        for action in actions:
            for option in action.option_strings:
                assert option in text, (name, option)
            assert " ".join(str(action.help).split()[:3]) in " ".join(text.split()), action
    for heading in ("EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert f".SH {heading}" in roff, heading
    for code, what in cli.EXIT_CODES:
        assert f".B {code}\n{what.replace('-', chr(92) + '-')}" in roff, code
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", str(tmp_path / "agent.8")], capture_output=True,
                               text=True, env={**os.environ, "MANWIDTH": "100"}, timeout=60,
                               check=True)
        assert "agent wait" in shown.stdout and "wait forever" in shown.stdout

    completion = tmp_path / "agent.bash"
    syntax = subprocess.run(["bash", "-n", str(completion)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert syntax.returncode == 0, syntax.stderr
    assert complete(completion, "agent", "") == list(commands)
    for name, actions in commands.items():
        offered = complete(completion, "agent", name, "--")
        assert set(offered) == {o for a in actions for o in a.option_strings
                                if o.startswith("--")} | {"--help"}, name
    (tmp_path / "conf.toml").write_text("")
    assert complete(completion, "agent", "plan", "--config", str(tmp_path / "conf")) == [
        str(tmp_path / "conf.toml")]


def complete(script: Path, *words: str) -> list[str]:
    """What bash completes for the last of ``words`` with the completion ``script`` loaded."""
    program = (f"source {script}\n"
               'COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; '
               'COMP_POINT=${#COMP_LINE}; COMPREPLY=()\n'
               '_shtab_agent agent "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"\n'
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "-c", program, "complete", *words], capture_output=True,
                          text=True, timeout=30, check=True)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def test_demo_without_the_simulators_dependencies(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """agent.sim is there but moto is not (a checkout without the sim extra): one line."""
    for name in [n for n in sys.modules if n.startswith(("agent.sim.", "moto"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "moto", None)
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err == (
        "agent: agent demo needs the simulated cloud's dependencies (moto is not installed): "
        "in the source checkout, make venv (or pip install '.[sim]')\n")


def test_the_command_reference_carries_every_command_and_option() -> None:
    """docs/reference/cli.md's generated part (``scripts/gen_cli_docs.py --markdown``) names
    every command and option of the parser (its exact wording follows the Python that made it)."""
    text = (REPO / "docs" / "reference" / "cli.md").read_text()
    assert load_generator().MARKER in text
    generated = text.split(load_generator().MARKER)[1]
    for name, actions in surface(cli.command_line(demo=True)).items():
        assert f"## `agent {name}`" in generated, name
        for action in actions:
            for option in action.option_strings:
                assert option in generated.split(f"## `agent {name}`")[1].split("\n## ")[0], option
    for code, _ in cli.EXIT_CODES:
        assert f"| `{code}` |" in generated, code
