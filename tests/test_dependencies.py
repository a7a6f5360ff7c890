"""pyproject.toml declares what the code imports, and imports what it declares.

An undeclared import works here only because another package happens to pull it in; a declared
package nothing imports is a download for nothing. Both drift silently, so they are checked.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

import pytest

from tests.helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as CI

CODE = [ROOT / "src", ROOT / "run.py", ROOT / "benchmarks"]
# Declared, used, never imported by name: they serve a library that loads them on its own.
USED_WITHOUT_IMPORT = {
    "gguf": "transformers' GGUF loader reads the embedded model with it",
    "hydra-submitit-launcher": "Hydra loads it as the SLURM launcher plugin",
}
# Optional extras whose imports are guarded: the code runs without them.
OPTIONAL = {"slurm"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    optional = {_requirement_name(r) for name in OPTIONAL for r in extras[name]}
    return required, optional


def _imported_modules() -> set[str]:
    files = [p for root in CODE for p in ([root] if root.is_file() else root.rglob("*.py"))]
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    ours = {"spark_bench", "hydra_plugins", "benchmarks", "tests"}
    return {m for m in modules if m not in ours and m not in sys.stdlib_module_names}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    """Import name -> the installed distributions that provide it (hydra -> hydra-core)."""
    provided = importlib.metadata.packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in provided.get(m, [])} for m in modules}


def test_every_third_party_import_is_declared():
    required, optional = _declared()
    undeclared = {
        module: dists
        for module, dists in _distributions(_imported_modules()).items()
        if not dists & (required | optional)
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_imported():
    required, optional = _declared()
    imported = set().union(*_distributions(_imported_modules()).values())
    unused = (required | optional) - imported - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_test_modules_share_helpers_not_each_other():
    """Shared test code lives in tests/helpers; a test module imported by another runs its
    module-level code twice and ties the two together."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                leaf = node.module.split(".")[-1]
                if node.module.startswith("tests.") and (leaf.startswith("test_") or leaf == "conftest"):
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
    assert not offenders, offenders


def _spawning_tests(path) -> dict[str, set[str]]:
    """Test name -> its markers, for each test of ``path`` that starts a process, directly or
    through a function of its module that does."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def calls(node) -> set[str]:
        names = set()
        for call in ast.walk(node):
            if isinstance(call, ast.Call):
                func = call.func
                if isinstance(func, ast.Name):
                    names.add(func.id)
                elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    names.add(f"{func.value.id}.{func.attr}")
        return names

    spawning = {"run_py", "status_cli", "subprocess.run", "subprocess.Popen"}
    while True:  # module functions that call a spawning one spawn too
        more = {name for name, node in functions.items() if calls(node) & spawning} - spawning
        if not more:
            break
        spawning |= more
    module_marks = {
        ast.unparse(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
    }  # fmt: skip
    return {
        name: {ast.unparse(d) for d in node.decorator_list} | module_marks
        for name, node in functions.items()
        if name.startswith("test_") and calls(node) & spawning
    }


def test_tests_that_start_a_process_say_so():
    """`make test-fast` deselects subprocess, slow and slurm tests: a test that starts run.py or
    another Python process must carry one of those markers."""
    unmarked = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for name, marks in _spawning_tests(path).items():
            if not any(m in mark for mark in marks for m in ("subprocess", "slow", "slurm")):
                unmarked.append(f"{path.relative_to(ROOT)}::{name}")
    assert not unmarked, f"start a process without @pytest.mark.subprocess: {unmarked}"
