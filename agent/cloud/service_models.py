"""The service models the agent loads: botocore's own, pruned to the operations it calls.

botocore builds a client from its service's whole model (Auto Scaling: 60 operations, 390 kB
of JSON with their documentation) and a method for each operation. The wheel carries the
models of :data:`OPERATIONS` only, pruned when the package is built from the botocore of
the build (``python -m agent.cloud.service_models DEST``, run by setup.py): the operations, the
shapes
they reach, no documentation. They are used only with that same botocore version (the
``botocore-version`` file beside them); with any other, botocore's own models are.

Beside them, ``handlers.json``: the events of botocore's builtin handlers that belong to
other services (``before-parameter-build.s3.PutObject``) or to the documentation
(``docs.*``): a session registers its 127 builtin handlers one by one (9 ms), and a boot's
sessions need 21 of them. With the same botocore, :func:`skipped_handlers` names them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agent import DATA

# Every AWS operation the agent calls, by service (a test holds the code to this list).
OPERATIONS: dict[str, tuple[str, ...]] = {
    "secretsmanager": ("GetSecretValue", "DescribeSecret"),
    "ssm": ("GetParameters",),
    "autoscaling": ("DescribeAutoScalingInstances", "DescribeLifecycleHooks",
                    "CompleteLifecycleAction", "RecordLifecycleActionHeartbeat",
                    "SetInstanceHealth"),
    "ec2": ("DescribeInstanceTypes", "DescribeTags"),
    "cloudformation": ("SignalResource",),
    "sts": ("AssumeRole",),
    "cloudwatch": ("PutMetricData",),
}
VERSION_FILE = "botocore-version"
HANDLERS_FILE = "handlers.json"
_DROP = frozenset({"documentation", "documentationUrl"})


def search_path() -> str | None:
    """The pruned models' directory, when they were pruned from the botocore installed."""
    import botocore  # noqa: PLC0415

    root = Path(DATA, "models")
    try:
        built_for = root.joinpath(VERSION_FILE).read_text().strip()
    except (OSError, ValueError):
        return None  # not built (a source checkout, an editable install)
    return str(root) if built_for == botocore.__version__ else None


def skipped_handlers() -> frozenset[str]:
    """The builtin handlers' events a session of ours need not register (empty: all)."""
    path = search_path()
    if path is None:
        return frozenset()
    try:
        events = json.loads(Path(path, HANDLERS_FILE).read_bytes())
    except (OSError, ValueError):
        return frozenset()
    return frozenset(e for e in events if isinstance(e, str)) if isinstance(
        events, list) else frozenset()


def others_handlers(events: list[str], services: set[str],
                    aliases: dict[str, str]) -> list[str]:
    """Of ``events``, those of documentation or of a service (by name or event alias) not
    in :data:`OPERATIONS`; an event naming anything else (``*``, a word we do not know) is
    kept, registered as botocore would."""
    ours = set(OPERATIONS) | {aliases[name] for name in OPERATIONS if name in aliases}
    ours |= {name for name, alias in aliases.items() if alias in ours}
    named = services | set(aliases) | set(aliases.values())
    skipped = []
    for event in events:
        parts = event.split(".")
        if parts[0] == "docs" or (len(parts) > 1 and parts[1] in named and parts[1] not in ours):
            skipped.append(event)
    return skipped


def prune(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """``model`` (a service-2 document) with only ``operations`` and the shapes they reach
    (their input, output and errors, transitively), without documentation."""
    shapes = model["shapes"]
    kept: set[str] = set()

    def reach(name: str) -> None:
        if name in kept:
            return
        kept.add(name)
        shape = shapes[name]
        refs = [shape.get(key) for key in ("member", "key", "value")]
        refs += list(shape.get("members", {}).values())
        for ref in refs:
            if ref:
                reach(ref["shape"])

    found = {}
    for name in operations:
        operation = model["operations"][name]  # KeyError: botocore no longer has it
        found[name] = _undocumented(operation)
        for key in ("input", "output"):
            if key in operation:
                reach(operation[key]["shape"])
        for error in operation.get("errors", []):
            reach(error["shape"])
    pruned = {key: value for key, value in model.items()
              if key not in ("operations", "shapes", "documentation")}
    pruned["operations"] = found
    pruned["shapes"] = {name: _undocumented(shape) for name, shape in shapes.items()
                        if name in kept}
    return pruned


def _undocumented(node: dict[str, Any]) -> dict[str, Any]:
    """A shape or operation without its documentation (members keep their names)."""
    return {key: _clean(key, value) for key, value in node.items() if key not in _DROP}


def _clean(key: str, value: Any) -> Any:
    if key == "members" and isinstance(value, dict):
        return {name: _undocumented(ref) for name, ref in value.items()}
    if isinstance(value, dict):
        return _undocumented(value)
    if isinstance(value, list):
        return [_undocumented(v) if isinstance(v, dict) else v for v in value]
    return value


def write(dest: Path) -> list[Path]:
    """Prune the installed botocore's latest models of :data:`OPERATIONS` into ``dest``
    (``<service>/<api version>/service-2.json``, the handlers file and the version file);
    the files."""
    import botocore  # noqa: PLC0415
    from botocore.loaders import Loader  # noqa: PLC0415

    loader = Loader()
    written = []
    for service, operations in OPERATIONS.items():
        version = loader.determine_latest_version(service, "service-2")
        model = loader.load_data(f"{service}/{version}/service-2")
        path = dest / service / version / "service-2.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(prune(model, operations), separators=(",", ":"),
                                   sort_keys=True) + "\n")
        written.append(path)
    from botocore.handlers import BUILTIN_HANDLERS  # noqa: PLC0415
    from botocore.utils import EVENT_ALIASES  # noqa: PLC0415

    skipped = others_handlers([spec[0] for spec in BUILTIN_HANDLERS],
                              set(loader.list_available_services("service-2")), EVENT_ALIASES)
    (dest / HANDLERS_FILE).write_text(json.dumps(sorted(set(skipped)), indent=0) + "\n")
    (dest / VERSION_FILE).write_text(botocore.__version__ + "\n")
    return [*written, dest / HANDLERS_FILE, dest / VERSION_FILE]


if __name__ == "__main__":  # the package build: python -m agent.cloud.service_models DEST
    for written_path in write(Path(sys.argv[1])):
        print(f"pruned model {written_path} ({written_path.stat().st_size} bytes)")
