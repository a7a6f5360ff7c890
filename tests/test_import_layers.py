"""spark_bench's imports run one way: no module, and no subpackage, imports itself back.

A cycle is how layers blur: the SparK press imported the cache (lazily, to dodge the cycle)
while the cache imported the press's helpers. Imports inside functions count, since a lazy
import is still a dependency; imports under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = "spark_bench"
SOURCES = ROOT / "src"


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in (SOURCES / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SOURCES).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str | None:
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a import b`` names ``a.b`` where that
    is a module, else ``a``)."""
    files = _module_files()
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        imported = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node, path.name == "__init__.py")
                for alias in node.names:
                    name = f"{source}.{alias.name}"
                    imported.add(name if name in files else source)
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def collapse(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The same graph between the modules' first ``depth`` name parts (2: subpackages)."""
    collapsed: dict[str, set[str]] = {}
    for module, imported in graph.items():
        source = ".".join(module.split(".")[:depth])
        targets = {".".join(name.split(".")[:depth]) for name in imported}
        collapsed.setdefault(source, set()).update(targets - {source})
    return collapsed


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "spark_bench.spark_math" in graph["spark_bench.cache.packing"]
    assert "spark_bench.spark_math" in graph["spark_bench.presses.spark"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("depth", [None, 2], ids=["modules", "subpackages"])
def test_no_import_cycle(depth):
    graph = import_graph() if depth is None else collapse(import_graph(), depth)
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_the_spark_mathematics_imports_neither_cache_nor_presses():
    imported = import_graph()["spark_bench.spark_math"]
    assert not {m for m in imported if m.startswith(("spark_bench.cache", "spark_bench.presses"))}
