"""The ``agent`` command line (docs/reference/cli.md).

``status`` and ``wait`` take a fast path that imports neither argparse nor anything heavy;
every other command, and any argument the fast path does not recognise, goes through
argparse (usage errors exit 2). Expected failures print one line and exit with their
documented code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

from agent.cli.quickargs import quick_args
from agent.errors import EXIT_USAGE, AgentError, UsageError, escape

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the status path)
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

# What --help says after the commands, and the man page agent(8) in its own sections.
EXIT_CODES = [
    ("0", "success (status, wait: ready, healthy or degraded)"),
    ("1", "failed (the boot; plan: a value cannot be computed; bake-check: a problem found)"),
    ("2", "usage error"),
    ("3", "not finished: not started, still running, or no valid state.json (status)"),
    ("75", "another agent run holds the lock (run)"),
    ("78", "invalid configuration"),
    ("124", "timed out (wait)"),
]
ENVIRONMENT = [
    ("AGENT_CONFIG", "the configuration file, instead of /etc/agent/agent.toml"),
    ("AGENT_STATE_DIR", "the state directory of status and wait"),
    ("AGENT_<KEY>, AGENT_<SECTION>__<KEY>", "any configuration key, over the file's "
     "(e.g. AGENT_IMDS__TIMEOUT_SECONDS=5; lists and tables as JSON)"),
]
FILES = [
    ("/etc/agent/agent.toml", "the configuration; every key is documented in it"),
    ("/run/agent/state.json", "what the boot did, phase by phase: status and wait read it"),
    ("/run/agent/secrets/", "the published secrets, on tmpfs"),
    ("/etc/agent/image.json", "the image manifest, written by bake-check"),
]
EXAMPLES = [
    ("agent status", "what the boot did"),
    ("agent wait --timeout 300", "block a script until the boot is ready or failed"),
    ("agent plan --instance-type r6g.2xlarge", "the tuning for another type, offline"),
    ("agent bake-check --fix", "the last step of a Packer build"),
]
NO_DEMO = ("demo is not part of this installation: the packages leave out the simulated cloud "
           "(agent.sim); run it from a source checkout with `make demo`")
CONFIG_HELP = ("TOML configuration file (default: $AGENT_CONFIG, else /etc/agent/agent.toml, "
               "which may be absent: then every key has its default)")
STATE_DIR_HELP = ("directory of state.json (default: $AGENT_STATE_DIR, else state_dir of the "
                  "configuration file, else /run/agent)")


def program() -> NoReturn:
    """The ``agent`` process (the launcher, ``python -m agent``): :func:`main`, then exit.

    After ``run``, with its work done and no other thread left, the process leaves without
    the interpreter's teardown (a final collection over every object botocore made, then
    each module's): that took a fifth of a boot. Everything the boot writes is written by
    then; the output streams are flushed first.
    """
    code = main()
    if sys.argv[1:2] == ["run"]:
        import threading  # noqa: PLC0415 - loaded by the boot already

        if threading.active_count() == 1:
            import contextlib  # noqa: PLC0415
            import logging  # noqa: PLC0415

            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
                    stream.flush()
            os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """The command line ``argv`` (default: the process's), run; its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("status", "wait"):
        from agent.cli import status  # noqa: PLC0415

        fast = (status.status_main if args[0] == "status" else status.wait_main)(args[1:])
        if fast is not None:
            return fast
    try:
        if args and args[0] == "run":  # the boot: no argparse unless the arguments need it
            found = quick_args(args[1:], {"--oneshot", "-v", "--verbose"}, {"--config"})
            if found is not None:
                return _run(found.get("--config"), oneshot="--oneshot" in found,
                            verbose="-v" in found or "--verbose" in found)
        return _dispatch(args)
    except AgentError as exc:
        print(f"agent: {escape(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def sim_available() -> bool:
    """Whether the simulated cloud (``agent.sim``, left out of the packages) is installed."""
    import importlib.util  # noqa: PLC0415

    try:
        return importlib.util.find_spec("agent.sim") is not None
    except (ImportError, ValueError):
        return False


def command_line(*, demo: bool | None = None,
                 complete: dict[str, Any] | None = None) -> CommandLine:
    """The command line: ``--help``, the man page agent(8) and the shell completion.

    ``demo`` (default: whether agent.sim is installed) lists the ``demo`` command;
    ``complete``: what a shell completes for an option's metavar (``PATH``, ``DIR``).
    """
    import argparse  # noqa: PLC0415

    if demo is None:
        demo = sim_available()
    top = argparse.ArgumentParser(
        prog="agent", epilog=epilog(demo), formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Instance boot agent: metadata, secrets on tmpfs, tuning, lifecycle hook.\n"
                    "systemd runs `agent run` at boot (agent.service); operators use status, "
                    "wait and plan.",
    )
    line = CommandLine(top, top.add_subparsers(title="commands", dest="command", required=True,
                                               metavar="COMMAND"), complete or {})

    line.command("run", help="the boot sequence; then stay resident unless --oneshot",
                 description="Read the instance's metadata, publish its secrets, tune, "
                 "signal readiness; then stay resident (daemon mode) unless oneshot.")
    line.option("run", "--config", metavar="PATH", help=CONFIG_HELP)
    line.option("run", "--oneshot", action="store_true",
                help="exit after the boot (default: the configuration's mode, by default "
                "daemon: stay resident to refresh secrets and watch for termination)")
    line.option("run", "-v", "--verbose", action="store_true",
                help="log at debug level, tracebacks included (default: info)")

    line.command("status", help="what the last/current boot did, phase by phase",
                 description="Show what the last or current boot did, phase by "
                 "phase. Exit 0 ready, 1 failed, 3 not finished.")
    line.option("status", "--json", action="store_true",
                help="print state.json itself (default: a table)")
    line.option("status", "--state-dir", metavar="DIR", help=STATE_DIR_HELP)

    line.command("wait", help="block until the boot is ready or failed",
                 description="Block until the boot is ready (exit 0) or failed "
                 "(exit 1); 124 when --timeout runs out first.")
    line.option("wait", "--timeout", metavar="SECONDS", type=_seconds,
                help="give up after SECONDS, exit 124 (default: none, wait forever)")
    line.option("wait", "--state-dir", metavar="DIR", help=STATE_DIR_HELP)

    line.command("plan", help="dry run: what run would publish and set",
                 description="Dry run: what `agent run` would publish and write, each "
                 "tuned value explained. Writes nothing, fetches no secret, calls no "
                 "mutating API. With --instance-type it is offline, for the launch the "
                 "other options describe.")
    line.option("plan", "--config", metavar="PATH", help=CONFIG_HELP)
    line.option("plan", "--instance-type", metavar="TYPE", type=_instance_type,
                help="plan for TYPE offline, with its nominal memory and vCPUs from the "
                "bundled table (default: this machine: its type from IMDS, its "
                "measured memory and CPUs, its tags)")
    unset = ("(default: not given; a placeholder or condition reading it is then an error "
             "naming this option)")
    line.option("plan", "--tag", metavar="KEY=VALUE", action="append", type=_tag,
                help=f"offline: an instance tag; repeat for each {unset}")
    line.option("plan", "--region", metavar="REGION",
                help=f"offline: the instance's region {unset}")
    line.option("plan", "--account", metavar="ACCOUNT",
                help=f"offline: the instance's account id {unset}")
    line.option("plan", "--group", metavar="NAME",
                help=f"offline: its Auto Scaling group, '' for none {unset}")
    line.option("plan", "--availability-zone", metavar="ZONE", dest="zone",
                help=f"offline: its availability zone {unset}")
    line.option("plan", "--json", action="store_true",
                help="print the plan as JSON (default: text)")

    if demo:
        line.command("demo", help="the whole boot against a local simulated cloud",
                     description="Boot an instance against a simulated cloud on "
                     "loopback (IMDS and AWS), then show its status.")
        line.option("demo", "--keep", action="store_true",
                    help="keep the scratch directory (configuration, state, secrets, "
                    "tuning) and say where (default: removed at the end)")

    line.command("bake-check", help="fail an image bake that would carry "
                 "credentials; write the image manifest",
                 description="The last step of an image bake: fail (exit 1) when the "
                 "image would carry credentials, leftover secrets or state, or a disabled "
                 "unit, has security updates pending, or would make every instance a "
                 "clone (machine-id, SSH host keys, authorized_keys, histories, the "
                 "build's journal and logs); 78 for an "
                 "invalid configuration; else write the image manifest.")
    line.option("bake-check", "--config", metavar="PATH", help=CONFIG_HELP)
    line.option("bake-check", "--root", metavar="DIR", default="/", type=_directory,
                help="root directory of the image to check (default: /)")
    line.option("bake-check", "--manifest", metavar="PATH",
                help="where to write the image manifest (default: the configuration's "
                "image.manifest, /etc/agent/image.json, under --root)")
    line.option("bake-check", "--fix", action="store_true",
                help="first empty the machine-id and remove SSH host keys, authorized_keys, "
                "histories, the journal and logs, saying what was done (never "
                "packages); then check (default: check only, change nothing)")
    return line


def parser(*, demo: bool | None = None) -> argparse.ArgumentParser:
    """The command line's parser (:func:`command_line`)."""
    return command_line(demo=demo).parser


class CommandLine:
    """The command line as it is built: the parser, and each command's parser and options
    (what the man page, the completion and the tests walk: argparse has no public walk)."""

    def __init__(self, top: argparse.ArgumentParser, sub: Any, complete: dict[str, Any]) -> None:
        self.parser = top
        self.sub = sub
        self.complete = complete
        self.commands: dict[str, argparse.ArgumentParser] = {}
        self.options: dict[str, list[argparse.Action]] = {}

    def command(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A command (``agent NAME``)."""
        self.commands[name] = self.sub.add_parser(name, **kwargs)
        self.options[name] = []
        return self.commands[name]

    def option(self, name: str, *flags: str, **kwargs: Any) -> argparse.Action:
        """An option of the command ``name``; its completion by its metavar."""
        action = self.commands[name].add_argument(*flags, **kwargs)
        if kwargs.get("metavar") in self.complete:
            action.complete = self.complete[kwargs["metavar"]]  # type: ignore[attr-defined]
        self.options[name].append(action)
        return action


def epilog(demo: bool) -> str:
    """What ``agent --help`` says after the commands: EXIT_CODES, ENVIRONMENT, FILES..."""
    import textwrap  # noqa: PLC0415

    parts = []
    for title, items in (("exit codes", EXIT_CODES), ("environment", ENVIRONMENT),
                         ("files", FILES), ("examples", EXAMPLES)):
        width = min(24, max(len(name) for name, _ in items)) + 2
        lines = [f"{title}:"]
        for name, what in items:
            indent = " " * (width + 2)
            if len(name) >= width:
                lines.append(f"  {name}")
            lead = f"  {name:<{width}}" if len(name) < width else indent
            lines.append(textwrap.fill(what, 88, initial_indent=lead, subsequent_indent=indent))
        parts.append("\n".join(lines))
    if not demo:
        parts.append(textwrap.fill(f"agent {NO_DEMO}", 88))
    return "\n\n".join(parts)


def _tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        import argparse  # noqa: PLC0415

        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _seconds(text: str) -> float:
    """``--timeout``: a number of seconds, at least 0 (inf: no limit)."""
    import argparse  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # negative or NaN
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _instance_type(text: str) -> str:
    """``--instance-type``: not empty (empty would silently mean "this machine")."""
    import argparse  # noqa: PLC0415

    if not text.strip():
        raise argparse.ArgumentTypeError("expected an instance type such as m5.xlarge, got ''")
    return text


def _directory(text: str) -> str:
    """``--root``: an existing directory (else every check would report it missing)."""
    import argparse  # noqa: PLC0415
    import os  # noqa: PLC0415

    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    return text


def _run(config: str | None, *, oneshot: bool, verbose: bool) -> int:
    """``agent run``. The boot makes little garbage and no cycles worth a collection (about a
    sixth of its CPU went to the collector): off (the resident is a new interpreter: on)."""
    import gc  # noqa: PLC0415

    gc.disable()
    from agent.boot.daemon import run  # noqa: PLC0415

    return run(config, oneshot=oneshot, verbose=verbose)


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["demo"] and not sim_available():
        raise UsageError(NO_DEMO)
    top = parser()
    args = top.parse_args(argv)
    if args.command == "run":
        return _run(args.config, oneshot=bool(args.oneshot), verbose=bool(args.verbose))
    if args.command == "plan":
        from agent.cli.plan import main as plan_main  # noqa: PLC0415

        offline = {"region": args.region, "account": args.account, "group": args.group,
                   "zone": args.zone}
        if not args.instance_type and (args.tag or any(v is not None for v in offline.values())):
            top.error("plan: --tag, --region, --account, --group and --availability-zone "
                         "describe an offline launch: they go with --instance-type")
        return plan_main(args.config, instance_type=args.instance_type, as_json=args.json,
                         tags=dict(args.tag) if args.tag is not None else None, **offline)
    if args.command == "bake-check":
        from agent.cli.bake import bake_check  # noqa: PLC0415

        return bake_check(args.config, args.root, args.manifest, args.fix)
    if args.command == "demo":
        try:
            from agent.sim.demo import main as demo_main  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            raise AgentError("agent demo needs the simulated cloud's dependencies "
                             f"({(exc.name or '?').partition('.')[0]} "
                             "is not installed): in the source checkout, make venv (or pip "
                             "install '.[sim]')") from None
        return demo_main(keep=bool(args.keep))
    # status/wait arguments the fast path declined but argparse accepted (e.g. abbreviations)
    from agent.cli import status  # noqa: PLC0415

    if args.command == "status":
        argv2 = (["--json"] if args.json else []) + (
            ["--state-dir", args.state_dir] if args.state_dir else [])
        code = status.status_main(argv2)
    else:
        argv2 = ([f"--timeout={args.timeout}"] if args.timeout is not None else []) + (
            ["--state-dir", args.state_dir] if args.state_dir else [])
        code = status.wait_main(argv2)
    return EXIT_USAGE if code is None else code
