#!/usr/bin/env python3
"""The man page agent(8) and the bash completion, generated from ``agent --help``'s parser.

    python scripts/gen_cli_docs.py OUTDIR     # OUTDIR/agent.8 and OUTDIR/agent.bash

Both come from :func:`agent.cli.parser` (every command, option, help text and default) and
its EXIT_CODES, ENVIRONMENT, FILES and EXAMPLES, so they say what ``--help`` says. The
package builds run this with the packaged agent, whose parser leaves out ``demo`` (agent.sim
is not packaged). Needs argparse-manpage and shtab (the ``docs`` extra of pyproject.toml):
build-time tools, never installed with the agent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import __version__, cli

SEE_ALSO = "systemctl(1), journalctl(1), systemd.exec(5) (LoadCredential=), systemd.unit(5)"
DESCRIPTION = """\
Every machine image of the fleet carries the agent. At each boot systemd runs
.B agent run
(agent.service): it reads the instance's facts from IMDSv2, publishes its secrets
as files on a tmpfs, tunes memory and runtime settings to the instance's size, and
signals readiness: READY=1 to systemd and CONTINUE to the Auto Scaling launch
lifecycle hook (ABANDON when the boot fails). Applications order themselves after
agent\\-ready.target. Operators use
.BR status ,
.BR wait ,
.B plan
and, when baking an image,
.BR bake\\-check ."""


def _roff(text: str) -> str:
    """Text for a roff line: backslashes and hyphens escaped, no control at line start."""
    escaped = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def _items(items: list[tuple[str, str]]) -> str:
    """A ``.TP`` list: each name in bold, its text indented below."""
    return "\n".join(f".TP\n.B {_roff(name)}\n{_roff(what)}" for name, what in items)


def manpage(parser: argparse.ArgumentParser) -> str:
    """agent(8) in roff."""
    from argparse_manpage.manpage import Manpage  # noqa: PLC0415

    parser.epilog = None  # its parts become sections of their own
    parser.description = None  # DESCRIPTION says more
    page = Manpage(parser, _data={
        "project_name": "instance-boot-agent", "version": __version__,
        "manual_section": "8", "manual_title": "System Administration",
        "description": "instance boot agent: metadata, secrets on tmpfs, tuning, "
                       "lifecycle hook"})
    page.add_section("description", "=", DESCRIPTION)
    page.add_section("exit status", "=", _items(cli.EXIT_CODES))
    page.add_section("environment", "=", _items(cli.ENVIRONMENT))
    page.add_section("files", "=", _items(cli.FILES))
    page.add_section("examples", "=", _items(cli.EXAMPLES))
    if not cli.sim_available():
        page.add_section("notes", "=", _roff(f"agent {cli.NO_DEMO}"))
    page.add_section("see also", "=", _roff(SEE_ALSO))
    return str(page)


def completion(parser: argparse.ArgumentParser) -> str:
    """The bash completion script: commands, options; paths and directories where asked."""
    import shtab  # noqa: PLC0415

    for action in _actions(parser):
        if action.metavar == "PATH":
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.metavar == "DIR":
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell="bash"))  # noqa: S604 - the target shell


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of the parser and of its subcommands."""
    found: list[argparse.Action] = []
    for action in parser._actions:  # argparse has no public walk
        found.append(action)
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _actions(sub)
    return found


def main(argv: list[str] | None = None) -> int:
    """Write OUTDIR/agent.8 and OUTDIR/agent.bash."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("outdir", type=Path)
    out = args.parse_args(argv).outdir
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent.8").write_text(manpage(cli.parser()))
    (out / "agent.bash").write_text(completion(cli.parser()))
    print(f"wrote {out / 'agent.8'} and {out / 'agent.bash'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
