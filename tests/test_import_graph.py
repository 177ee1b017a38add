"""The kit's import graph: every arrow points down, and no two modules import each other.

The layers, bottom up: `edge` (what ships to the box) <- `trainer` <- `converter` <-
`leukedge` (the command line); `benchmarks` use the packages but never the tests' helpers.
Imports are read with ast from the source, in-function imports included (an import that
runs late is still an arrow), so nothing has to be importable for the check to run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "trainer", "converter", "leukedge", "benchmarks")
# What each top-level package must never import.
FORBIDDEN = {
    "edge": {"trainer", "converter", "leukedge", "tests"},
    "trainer": {"converter", "leukedge", "tests"},
    "converter": {"leukedge", "tests"},
    "leukedge": {"tests"},
    "benchmarks": {"tests"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to the most specific
    first-party module it names (`from edge import selftest` -> edge.selftest)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out.extend((target, node.lineno) for target in targets)
    return out


def graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """First-party module -> the first-party modules it imports; and where each arrow is written."""
    found = modules()
    known = set(found) | {"tests"} | {module_name(p) for p in (ROOT / "tests").glob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in found}
    where: dict[tuple[str, str], str] = {}
    for name, path in found.items():
        for target, line in imports(path, name, known):
            while target and target not in known:  # `import edge.sources.base as b` -> the module itself
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
                where.setdefault((name, target), f"{path.relative_to(ROOT)}:{line}")
    return edges, where


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The reader itself: a late import inside a function and a relative one are arrows too."""
    pkg = tmp_path / "edge"
    pkg.mkdir()
    src = pkg / "mod.py"
    src.write_text("import json\n\ndef f():\n    from trainer.models import ARCHS\n    from . import other\n")
    found = imports(src, "edge.mod", {"edge.other", "trainer.models"})
    assert ("trainer.models", 4) in found and ("edge.other", 5) in found and ("json", 1) in found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_points_up(package):
    edges, where = graph()
    bad = sorted(where[(src, dst)] + f": {src} imports {dst}"
                 for src, targets in edges.items() if src.split(".")[0] == package
                 for dst in targets if dst.split(".")[0] in FORBIDDEN[package])
    assert not bad, f"{package} must not import {', '.join(sorted(FORBIDDEN[package]))}:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    edges, where = graph()
    found = cycles(edges)
    lines = []
    for group in found:
        arrows = [where[(a, b)] + f": {a} -> {b}" for a in group for b in sorted(edges[a]) if b in group]
        lines.append(" <-> ".join(group) + "\n  " + "\n  ".join(arrows))
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_the_cycle_finder_finds_a_cycle_and_only_that():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
