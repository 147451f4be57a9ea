"""The module layout holds: targets never reach up into the smoke test, and no import circles.

The import graph is built from the source (every `import` and `from ... import` of a deployctl
module, at any depth, including the ones inside functions), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "deployctl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The deployctl modules `name` imports. `from pkg import mod`, where mod is a submodule, is an
    edge to pkg.mod only (a package's `__init__` runs before any of its submodules anyway);
    `from mod import attr` is an edge to mod."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    edges = graph()
    assert "deployctl.targets.aws_lambda.target" in edges and "deployctl.checks.contract" in edges
    assert "deployctl.checks.contract" in edges["deployctl.checks.smoke"]
    assert "deployctl.targets.aws_lambda.emulator" in edges["deployctl.targets.aws_lambda.target"]
    # the detector itself finds a circle when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_among_deployctl_modules() -> None:
    assert cycles(graph()) == []


def test_targets_never_import_the_smoke_test() -> None:
    edges = graph()
    offenders = {
        name: sorted(m for m in deps if m.split(".")[:3] == ["deployctl", "checks", "smoke"])
        for name, deps in edges.items()
        if name.startswith("deployctl.targets")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_ground_floor_does_not_import_targets() -> None:
    """The shared modules (process, contract, render's helpers...) know no target."""
    edges = graph()
    ground = (
        "deployctl.process",
        "deployctl.checks.contract",
        "deployctl.wheelhouse",
        "deployctl.docker_engine",
    )
    for name in ground:
        assert not any(m.startswith("deployctl.targets") for m in edges[name]), name


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = sorted(n for n in modules() if not n.endswith("__main__"))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    result = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
