"""The ``agent`` command line (DESIGN.md, "Command line").

``status`` and ``wait`` take a fast path that imports neither argparse nor anything heavy;
every other command, and any argument the fast path does not recognise, goes through
argparse (usage errors exit 2). Expected failures print one line and exit with their
documented code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from agent.errors import EXIT_USAGE, AgentError

if TYPE_CHECKING:
    import argparse

EPILOG = """exit codes: 0 success/ready, 1 boot failed, 2 usage, 3 not finished (status),
75 another run holds the lock, 78 invalid configuration, 124 timed out (wait)"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and ``python -m agent``."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("status", "wait"):
        from agent import status  # noqa: PLC0415

        fast = (status.status_main if args[0] == "status" else status.wait_main)(args[1:])
        if fast is not None:
            return fast
    try:
        return _dispatch(args)
    except AgentError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="agent", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Instance boot agent: metadata, secrets on tmpfs, tuning, lifecycle hook.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the boot sequence; then stay resident unless --oneshot")
    run.add_argument("--config", metavar="PATH", help="TOML file (default $AGENT_CONFIG, "
                     "else /etc/agent/agent.toml)")
    run.add_argument("--oneshot", action="store_true", help="exit after the boot")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    status = sub.add_parser("status", help="what the last/current boot did, phase by phase")
    status.add_argument("--json", action="store_true", help="print state.json")
    status.add_argument("--state-dir", metavar="DIR")

    wait = sub.add_parser("wait", help="block until the boot is ready or failed")
    wait.add_argument("--timeout", metavar="SECONDS", type=_seconds)
    wait.add_argument("--state-dir", metavar="DIR")

    plan = sub.add_parser("plan", help="dry run: what run would publish and set")
    plan.add_argument("--config", metavar="PATH")
    plan.add_argument("--instance-type", metavar="TYPE", help="plan for TYPE, offline")
    plan.add_argument("--tag", metavar="KEY=VALUE", action="append", type=_tag,
                      help="offline: an instance tag (repeat for each)")
    plan.add_argument("--region", metavar="REGION", help="offline: the instance's region")
    plan.add_argument("--account", metavar="ACCOUNT", help="offline: the instance's account")
    plan.add_argument("--group", metavar="NAME",
                      help="offline: its Auto Scaling group ('' for none)")
    plan.add_argument("--availability-zone", metavar="ZONE", dest="zone",
                      help="offline: its availability zone")
    plan.add_argument("--json", action="store_true")

    sub.add_parser("demo", help="the whole boot against a local simulated cloud")

    bake = sub.add_parser("bake-check", help="fail an image bake that would carry "
                          "credentials; write the image manifest")
    bake.add_argument("--config", metavar="PATH")
    bake.add_argument("--root", metavar="DIR", default="/", help="the image's root (default /)")
    bake.add_argument("--manifest", metavar="PATH", help="default: image.manifest under --root")
    return parser


def _tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        import argparse  # noqa: PLC0415

        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


def _dispatch(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from agent.daemon import run  # noqa: PLC0415

        return run(args.config, oneshot=bool(args.oneshot), verbose=bool(args.verbose))
    if args.command == "plan":
        from agent.plan import main as plan_main  # noqa: PLC0415

        offline = {"region": args.region, "account": args.account, "group": args.group,
                   "zone": args.zone}
        if not args.instance_type and (args.tag or any(v is not None for v in offline.values())):
            parser.error("plan: --tag, --region, --account, --group and --availability-zone "
                         "describe an offline launch: they go with --instance-type")
        return plan_main(args.config, instance_type=args.instance_type, as_json=args.json,
                         tags=dict(args.tag) if args.tag is not None else None, **offline)
    if args.command == "bake-check":
        from agent.image import bake_check  # noqa: PLC0415

        return bake_check(args.config, args.root, args.manifest)
    if args.command == "demo":
        try:
            from agent.sim.demo import main as demo_main  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            raise AgentError(f"agent demo needs the simulated cloud ({exc.name} is not "
                             "installed): pip install 'instance-boot-agent[sim]'") from None
        return demo_main()
    # status/wait arguments the fast path declined but argparse accepted (e.g. abbreviations)
    from agent import status  # noqa: PLC0415

    if args.command == "status":
        argv2 = (["--json"] if args.json else []) + (
            ["--state-dir", args.state_dir] if args.state_dir else [])
        code = status.status_main(argv2)
    else:
        argv2 = ([f"--timeout={args.timeout}"] if args.timeout is not None else []) + (
            ["--state-dir", args.state_dir] if args.state_dir else [])
        code = status.wait_main(argv2)
    return EXIT_USAGE if code is None else code
