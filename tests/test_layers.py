"""The package's layers import downward only, and no module imports itself back round a cycle.

Every import counts: module level, inside functions, under TYPE_CHECKING. A
function-local import hides a cycle from Python, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lowest first; a module may import its own layer and those below it
LAYERS = {
    "errors": 0, "config": 0, "progress": 0, "fileio": 0,
    "store": 1, "agents": 2, "learners": 3, "evaluation": 4, "graphs": 5,
    "services": 6,  # the composition root
    "api": 7, "cli": 7, "commands": 7, "ui": 7, "__main__": 8, "__init__": 8,
}
SKIP = {"tests", "bench", "scripts", "docs", ".venv", "build"}


def _modules(root: Path = ROOT) -> dict[str, Path]:
    mods = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root)
        if rel.parts[0] in SKIP or "migrations" in rel.parts:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(["promptloop", *parts])] = f
    return mods


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, mods: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported promptloop module) for every import statement anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name in mods:
                found.append((node.lineno, name))
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    upward = []
    for m, path in mods.items():
        for line, target in _imports(path, mods):
            if target == m:
                continue
            edges[m].add(target)
            if LAYERS[_layer(target)] > LAYERS[_layer(m)]:
                upward.append(f"{path.relative_to(root)}:{line} ({_layer(m)} imports {target})")
    return edges, upward


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_top_level_module_has_a_layer():
    unknown = sorted({_layer(m) for m in _modules()} - set(LAYERS))
    assert not unknown, f"add these to LAYERS in tests/test_layers.py: {unknown}"


def test_no_upward_import():
    _, upward = import_graph()
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    found = cycles(import_graph()[0])
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_an_upward_function_local_import_is_caught(tmp_path):
    """The walker sees imports inside functions, where the old cycle hid."""
    pkg = tmp_path / "store"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from promptloop.graphs.rewrite import graph\n    return graph\n")
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "__init__.py").write_text("")
    (tmp_path / "graphs" / "rewrite.py").write_text("graph = 1\n")
    _, upward = import_graph(tmp_path)
    assert upward == ["store/x.py:2 (store imports promptloop.graphs.rewrite)"]
