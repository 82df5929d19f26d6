#!/usr/bin/env python3
"""Regenerate agent/data/endpoints.json: botocore's endpoint data pruned to our services.

botocore parses its whole endpoints.json (1.2 MB) when it creates the first client; the
agent only calls a handful of services, so it ships the same partitions with just those.
Run after upgrading botocore:  .venv/bin/python scripts/gen_endpoints.py
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore
import botocore.session

from agent.cloud.aws import Aws

OUT = Path(__file__).resolve().parent.parent / "agent" / "data" / "endpoints.json"


def main() -> None:
    """Write the pruned copy, sorted and stable."""
    source = Path(botocore.__file__).parent / "data" / "endpoints.json"
    data = json.loads(source.read_text())
    loader = botocore.session.Session().get_component("data_loader")
    keep = set(Aws.SERVICES) | {  # endpoints.json names services by their endpoint prefix
        loader.load_service_model(name, "service-2")["metadata"]["endpointPrefix"]
        for name in Aws.SERVICES}
    for partition in data["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k in keep}
    data["_generated_from"] = f"botocore {botocore.__version__}"
    OUT.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) from botocore {botocore.__version__}")


if __name__ == "__main__":
    main()
