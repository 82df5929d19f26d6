"""``python -m agent.sim serve``: the simulated cloud as a process (for end-to-end tests).

Prints one JSON line ``{"instance_id", "imds", "aws"}`` once ready, then serves until
SIGTERM/SIGINT. ``GET /_sim/state``, ``POST /_sim/aws`` and ``GET|POST /_sim/imds`` on the
AWS address inspect and steer it from outside.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from agent.sim.world import World


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _seed_arguments(path: Path | None) -> dict[str, Any]:
    """World.seed keyword arguments from JSON; binary secrets as {"base64": "..."}."""
    if path is None:
        return {}
    arguments: dict[str, Any] = json.loads(path.read_text())
    secrets = arguments.get("secrets") or {}
    arguments["secrets"] = {
        name: base64.b64decode(value["base64"]) if isinstance(value, dict) else value
        for name, value in secrets.items()
    }
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m agent.sim")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a seeded simulated cloud")
    serve.add_argument("--imds", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT")
    serve.add_argument("--aws", type=_address, default=("127.0.0.1", 0), metavar="HOST:PORT")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added per AWS call")
    serve.add_argument("--seed", type=Path, metavar="FILE.json", help="World.seed arguments")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    (imds_host, imds_port), (aws_host, aws_port) = args.imds, args.aws
    world = World(imds_host, imds_port, aws_host, aws_port, aws_latency=args.latency)
    with world:
        instance_id = world.seed(**_seed_arguments(args.seed))
        ready = {
            "instance_id": instance_id,
            "imds": world.imds.endpoint,
            "aws": world.cloud.endpoint_url,
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
