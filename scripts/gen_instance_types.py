#!/usr/bin/env python3
"""Regenerate agent/data/instance_types.json: {"type": [memory_mib, vcpus, arch], ...}.

Sources (DescribeInstanceTypes records, public data):
  default             moto's bundled snapshot (moto/ec2/resources/instance_types.json.gz)
  --from-file F       the output of `aws ec2 describe-instance-types` (pages merged, or a list
                      of pages)
  --from-aws -r R     live DescribeInstanceTypes through boto3, paginated
The output is sorted and deterministic; --check exits 1 when the bundled file is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import importlib.util
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "agent" / "data" / "instance_types.json"
sys.path.insert(0, str(REPO))  # run from a checkout without installing
from agent.instance.types import from_describe  # noqa: E402


def from_moto() -> list[dict[str, Any]]:
    """The DescribeInstanceTypes snapshot moto ships (without importing moto)."""
    spec = importlib.util.find_spec("moto")
    if spec is None or spec.origin is None:
        sys.exit("gen_instance_types: moto is not installed (pip install moto, or use "
                 "--from-file / --from-aws)")
    path = Path(spec.origin).parent / "ec2" / "resources" / "instance_types.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return records(json.load(handle))


def from_file(path: str) -> list[dict[str, Any]]:
    """Records from a saved `aws ec2 describe-instance-types` output."""
    with open(path, encoding="utf-8") as handle:
        return records(json.load(handle))


def from_aws(region: str) -> list[dict[str, Any]]:
    """Live DescribeInstanceTypes, every page."""
    import boto3  # noqa: PLC0415 - only this source needs the SDK

    paginator = boto3.client("ec2", region_name=region).get_paginator("describe_instance_types")
    return [info for page in paginator.paginate() for info in page["InstanceTypes"]]


def records(data: Any) -> list[dict[str, Any]]:
    """Accept one page or merged pages ({"InstanceTypes": [...]}), a list of pages or of
    records, or moto's {name: record} mapping."""
    if isinstance(data, dict) and "InstanceTypes" in data:
        return list(data["InstanceTypes"])
    if isinstance(data, dict):
        return list(data.values())
    return [info for item in data for info in (records(item) if "InstanceTypes" in item
                                               else [item])]


def table(infos: Iterable[dict[str, Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(type, [memory_mib, vcpus, arch]) for every usable record."""
    for info in infos:
        try:
            name = info["InstanceType"]
            row = dataclasses.astuple(from_describe(info))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            print(f"gen_instance_types: skipping {info.get('InstanceType', '?')}: "
                  f"missing {exc}", file=sys.stderr)
            continue
        yield name, row


def render(rows: Iterable[tuple[str, tuple[Any, ...]]]) -> str:
    """Compact JSON, one type per line, sorted by name."""
    lines = [f"{json.dumps(name)}:{json.dumps(row, separators=(',', ':'))}"
             for name, row in sorted(dict(rows).items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-file", metavar="FILE",
                        help="aws ec2 describe-instance-types output")
    source.add_argument("--from-aws", action="store_true", help="call DescribeInstanceTypes")
    parser.add_argument("--region", "-r", help="region for --from-aws")
    parser.add_argument("--output", "-o", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --output is stale")
    args = parser.parse_args(argv)
    if args.from_aws and not args.region:
        parser.error("--from-aws needs --region")
    infos = (from_aws(args.region) if args.from_aws
             else from_file(args.from_file) if args.from_file else from_moto())
    text = render(table(infos))
    if args.check:
        current = args.output.read_text("utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run scripts/gen_instance_types.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, "utf-8")
    print(f"wrote {sum(1 for _ in text.splitlines()) - 2} instance types to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
