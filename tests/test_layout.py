"""The package's layout: every import of ``agent`` counted (inside functions and under
``if TYPE_CHECKING:`` too), the modules form layers with no cycle, and so do the packages
(``agent.cloud``, ``agent.config``...), so nothing imports upward; and no module is longer
than a newcomer reads."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agent"
MAX_LINES = 600


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``agent/sim/cloud.py`` -> ``agent.sim.cloud``; a package is its ``__init__``."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The modules of the package that ``path`` imports, wherever the import statement is."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from agent import errors`` imports the module agent.errors
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules
                       else origin for alias in node.names]
        else:
            continue
        for target in targets:
            module = target
            while module and module not in modules:  # agent.cloud.aws.Aws -> agent.cloud.aws
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every module of ``agent`` and the modules of ``agent`` it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    for name in graph:  # importing agent.sim.cloud runs agent/__init__ and agent/sim/__init__
        graph[name] -= {parent for parent in modules if name.startswith(parent + ".")}
    return graph


def package_of(module: str) -> str:
    """The first-level package (or top-level module) a module belongs to:
    ``agent.cloud.aws`` -> ``agent.cloud``, ``agent.errors`` -> ``agent.errors``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> tuple[dict[str, set[str]],
                                                      dict[tuple[str, str], tuple[str, str]]]:
    """The packages and the packages each imports, and for each such import one module
    edge that makes it (the first in name order)."""
    packages: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], tuple[str, str]] = {}
    for module in sorted(graph):
        source = package_of(module)
        packages.setdefault(source, set())
        for target in sorted(graph[module]):
            if package_of(target) != source:
                packages[source].add(package_of(target))
                edges.setdefault((source, package_of(target)), (module, target))
    return packages, edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    modules = {"agent", "agent.a", "agent.b", "agent.c", "agent.d", "agent.sim",
               "agent.sim.e"}
    source = tmp_path / "agent" / "sim" / "e.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import agent.a\n"
        "from agent import b\n"
        "if TYPE_CHECKING:\n    from agent.c import Thing\n"
        "def later():\n    from ..d import other\n")
    assert imports_of(source, modules, tmp_path / "agent") == {
        "agent.a", "agent.b", "agent.c", "agent.d"}


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert graph.get("agent.boot.sequence")  # the graph is really read
    assert cycles(graph) == []


def test_the_package_graph_maps_modules_to_their_packages() -> None:
    graph = {"agent.a.x": {"agent.a.y", "agent.b.z"}, "agent.a.y": set(),
             "agent.b.z": {"agent.errors"}, "agent.errors": set()}
    packages, edges = package_graph(graph)
    assert packages == {"agent.a": {"agent.b"}, "agent.b": {"agent.errors"},
                        "agent.errors": set()}
    assert edges == {("agent.a", "agent.b"): ("agent.a.x", "agent.b.z"),
                     ("agent.b", "agent.errors"): ("agent.b.z", "agent.errors")}


def test_no_import_cycle_between_the_packages() -> None:
    """The packages are layers too (docs/development/architecture.md): a package imports only
    packages below it, so no two of them import each other, directly or around a loop."""
    packages, edges = package_graph(import_graph())
    assert {"agent.cli", "agent.boot", "agent.config", "agent.cloud"} <= set(packages)
    problems = []
    for component in cycles(packages):
        crossing = [f"{source} -> {target} ({edges[source, target][0]} imports "
                    f"{edges[source, target][1]})"
                    for source in component for target in sorted(packages[source])
                    if target in component]
        problems.append(f"a cycle through {', '.join(component)}:\n  " + "\n  ".join(crossing))
    assert not problems, "\n".join(problems)


def test_only_the_command_line_imports_the_simulator() -> None:
    """The simulated cloud sits beside the agent: ``agent demo`` starts it, nothing else."""
    packages, edges = package_graph(import_graph())
    users = sorted(p for p, targets in packages.items() if "agent.sim" in targets)
    assert users == ["agent.cli"], [edges[user, "agent.sim"] for user in users]


def test_every_module_has_its_test_module() -> None:
    """The tests mirror the package: ``agent/secrets/publish.py`` is tested by
    ``tests/secrets/test_publish.py``, ``agent/errors.py`` by ``tests/test_errors.py``."""
    tests = PACKAGE.parent / "tests"
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        where = path.parent.relative_to(PACKAGE)
        if not (tests / where / f"test_{path.name}").is_file():
            missing.append(str(path.relative_to(PACKAGE.parent)))
    assert missing == []


def test_no_module_is_longer_than_a_newcomer_reads() -> None:
    lengths = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(lengths) > 40  # every module was read
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_a_unit_test_starts_no_process_and_no_server() -> None:
    """Unmarked tests are the unit suite (make unit): conftest stops them from starting
    what only an integration test may."""
    with pytest.raises(AssertionError, match="mark it integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        with pytest.raises(AssertionError, match="mark it integration"):
            server.listen()
