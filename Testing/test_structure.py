"""The package's shape: no import cycle between URSAMLib's modules, no module too long to hold in
one's head, and every subpackage shipped in the wheel."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "URSAMLib"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The URSAMLib modules that importing ``name`` imports at once: import statements at module level
    (also inside a module-level ``if``/``try``, but not under ``if TYPE_CHECKING``), resolved to modules
    (``from . import io`` names the module ``URSAMLib.io``; ``from .x import f`` names ``URSAMLib.x``).
    Imports inside functions run later and are left out."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node)
                named = {f"{target}.{alias.name}" for alias in node.names}
                found.update(named & known)  # submodules: ``from . import io``
                if named - known:  # names defined in the module (or package) itself
                    found.add(target)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    visit(block)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)  # a class body runs at import

    visit(ast.parse(path.read_text()).body)
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: module_level_imports(path, name, set(known)) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_relative_imports_and_skips_function_level_ones(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom . import io\nfrom ..x import y\n"
                      "from .. import __version__\n"
                      "if TYPE_CHECKING:\n    from .typed import T\n"
                      "def later():\n    from .lazy import z\n")
    known = {"pkg", "pkg.sub", "pkg.sub.io", "pkg.x", "pkg.sub.typed", "pkg.sub.lazy"}
    assert module_level_imports(source, "pkg.sub.mod", known) == {"pkg.sub.io", "pkg.x", "pkg"}


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"URSAMLib.io", "URSAMLib.localize.common", "URSAMLib.evaluation.report", "URSAMLib.cli.main"} <= set(graph)
    assert "URSAMLib.evaluation.tables" in graph["URSAMLib.evaluation.figures"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_every_subpackage_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    subpackages = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    assert subpackages <= listed, sorted(subpackages - listed)
