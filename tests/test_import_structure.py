"""The package's import structure: no cycle among nnseg's modules (function-level imports included), and the CLI
starts without torch.

Every ``import`` and ``from ... import`` anywhere in a module counts, at module level or inside a function (a lazy
import is still a dependency); imports under ``if TYPE_CHECKING:`` do not run and are left out. ``from P import N``
depends on the module ``P.N`` when N is a submodule, else on ``P``. Names a package loads on first use through a
``_LAZY`` table count as imports of the modules the table names. (import-linter, run by ``make check``, enforces the
layer order of ARCHITECTURE.md on module-level and function-level imports alike; this test adds the cycle check
over single modules.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nnseg

PACKAGE_ROOT = Path(nnseg.__file__).parent


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every module of the package at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and getattr(test, "id", getattr(test, "attr", "")) == (
            "TYPE_CHECKING"
        ):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return skipped


def _imported_names(module: str, is_package: bool, tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(module named, the name taken from it or None) for every import that runs."""
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                yield source, alias.name
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            for constant in ast.walk(node.value):
                if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                    yield constant.value, None


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring for what counts)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for source, imported in _imported_names(name, is_package, ast.parse(path.read_text(), str(path))):
            if imported is not None and f"{source}.{imported}" in modules:
                target = f"{source}.{imported}"
            else:
                target = source
                while target and target not in modules:
                    target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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


def test_no_import_cycle_among_nnsegs_modules() -> None:
    graph = import_graph()
    found = cycles(graph)
    described = [" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b}" for a in c for b in graph[a] & set(c)) for c in found]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_cycle_check_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('_LAZY = {"Thing": ("pkg.b", "Thing")}\n')
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (package / "b.py").write_text("from pkg import sub\nfrom pkg.sub import c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import x\nfrom .. import a\n"
    )
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.b"}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}  # the TYPE_CHECKING import is left out, the relative one resolved
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_cli_and_its_help_start_without_torch() -> None:
    code = (
        "import sys, nnseg.cli\n"
        "from nnseg.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'mlflow', 'SimpleITK', 'scipy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing nnseg.cli and building its parser imported {result.stdout}"
