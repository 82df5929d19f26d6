"""``python -m agent.sim serve``: the simulated cloud as a process (by hand, and for tests).

Prints one JSON line ``{"instance_id", "imds", "aws", "group", "hook", "secrets"}`` once
ready, then serves until SIGTERM/SIGINT. The control API on the AWS address inspects and
steers it from outside (``python -m agent.sim serve --help`` lists it).
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import signal
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from agent.sim.world import SAMPLE_SECRETS, World

SEED_KEYS = {  # World.seed's keyword arguments, as a seed file gives them
    "group": "the Auto Scaling group",
    "instance_type": "the instance's type",
    "region": "its region (its zone: the region + 'a')",
    "hook": "the group's launch lifecycle hook (null: none)",
    "heartbeat_timeout": "the hook's HeartbeatTimeout, in seconds",
    "default_result": "the hook's DefaultResult (ABANDON or CONTINUE)",
    "in_group": "false: a lone instance, in no group",
    "tags_enabled": "instance tags in the metadata (false: only DescribeAutoScalingInstances "
                    "finds the group)",
    "warm_pool": 'launch into the warm pool, e.g. "Warmed:Stopped"',
    "secrets": 'Secrets Manager secrets: {"NAME": "text", "NAME": {"base64": "..."}} '
               "(binary)",
    "ssm_parameters": 'Parameter Store SecureStrings: {"NAME": "text"}',
    "tags": 'the instance\'s tags besides Name and its group\'s: {"Environment": "staging"}',
    "size": "instances in the group, all launching; the first on --imds, the others each "
            "on a loopback port of its own (the ready line's \"fleet\": id -> IMDS)",
}
CONTROL = """\
control API (on the AWS address, JSON in and out):
  GET  /_sim/state    the lifecycle actions (result, completed_by) and the AWS call counts
  POST /_sim/aws      {"latency": SECONDS} added to every AWS call;
                      {"fail_next": {"action": "GetSecretValue", "count": 1,
                        "code": "ThrottlingException", "status": 400, "message": "..."}}
                        (or a list of them): answer the next calls of that action so;
                      {"time_out_before": "CompleteLifecycleAction"}: the pending launch
                        action times out (its DefaultResult) just before that call arrives;
                      {"expire": true}: apply the DefaultResult of timed-out actions now
  POST /_sim/launch   the instance launches again: a new action pending on the launch hook
  GET  /_sim/imds     the IMDS request log
  POST /_sim/imds     {"fail_next": {"count": 3, "status": 503}}, {"latency": SECONDS},
                      {"disabled": true}, {"expire_tokens": true}, or instance facts:
                      {"target_lifecycle_state": "Terminated"}, {"user_data": "..."}"""


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _seed_help() -> str:
    """The seed file's keys, with World.seed's defaults."""
    defaults = {name: p.default for name, p in inspect.signature(World.seed).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    lines = ["seed file (--seed FILE.json): a JSON object, every key optional:"]
    for key, what in SEED_KEYS.items():
        default = defaults[key]
        text = what + ("" if default is None else f"; default {json.dumps(default)}")
        lines.append(textwrap.fill(text, 88, initial_indent=f"  {key:<18} ",
                                   subsequent_indent=" " * 21, break_on_hyphens=False))
    lines.append(textwrap.fill("without --seed: these defaults, and the secrets of agent demo: "
                               + ", ".join(SAMPLE_SECRETS), 88))
    return "\n".join(lines)


def _seed_arguments(path: Path | None) -> dict[str, Any]:
    """World.seed keyword arguments from JSON; binary secrets as {"base64": "..."}."""
    if path is None:
        return {"secrets": SAMPLE_SECRETS}
    arguments: dict[str, Any] = json.loads(path.read_text())
    unknown = sorted(set(arguments) - set(SEED_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} (known: {', '.join(SEED_KEYS)})")
    secrets = arguments.get("secrets") or {}
    arguments["secrets"] = {
        name: base64.b64decode(value["base64"], validate=True) if isinstance(value, dict)
        else value
        for name, value in secrets.items()
    }
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m agent.sim",
                                     description="The simulated cloud: IMDS and AWS on loopback.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a seeded simulated cloud until SIGTERM/SIGINT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_seed_help() + "\n\n" + CONTROL,
        description=textwrap.fill(
            "Serve the IMDS simulator and moto (with Auto Scaling lifecycle-hook semantics), "
            "seeded with a group, its launch hook, one instance launching into it, and "
            "secrets. Prints one JSON line once ready: instance_id, imds and aws (the "
            "endpoints), group, hook, secrets.", 88))
    serve.add_argument("--imds", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT",
                       help="the IMDS address (default: 127.0.0.1, a free port)")
    serve.add_argument("--aws", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT",
                       help="the AWS endpoint and control API (default: 127.0.0.1, a free port)")
    serve.add_argument("--latency", type=float, default=0.0,
                       help="seconds added to every AWS call (default: 0)")
    serve.add_argument("--seed", type=Path, metavar="FILE.json",
                       help="what to create, as a JSON object (keys below; default: the "
                            "demo's group, hook and secrets)")
    args = parser.parse_args(argv)
    try:
        seed = _seed_arguments(args.seed)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        serve.error(f"argument --seed: {args.seed}: {exc}")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    (imds_host, imds_port), (aws_host, aws_port) = args.imds, args.aws
    world = World(imds_host, imds_port, aws_host, aws_port, aws_latency=args.latency)
    with world:
        instance_id = world.seed(**seed)
        ready: dict[str, object] = {
            "instance_id": instance_id,
            "imds": world.imds.endpoint,
            "aws": world.cloud.endpoint_url,
            "group": world.group,
            "hook": world.hook,
            "secrets": sorted(seed.get("secrets") or {}),
        }
        if len(world.instance_ids) > 1:
            ready["fleet"] = {i: world.imds_for(i).endpoint for i in world.instance_ids}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
