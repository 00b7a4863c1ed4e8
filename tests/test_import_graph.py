"""The import graph of vdiff/ has no cycles, and the ground layers import nothing above them.

Reads the source with `ast` (nothing is imported). The graph that must be acyclic holds the
imports executed when a module loads: those at module level, including under `if`/`try`
there; imports inside functions (kept for optional heavy dependencies) do not count, though
today they close no cycle either (checked too). Importing `vdiff.a.b` also runs the package
`vdiff.a`'s `__init__`, so that is an edge as well.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vdiff"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run at import time (not inside a def or a class body's defs)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return found


def all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, function-local ones included."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def import_graph(imports=module_level_imports) -> dict[str, set[str]]:
    """{module: the vdiff modules (and their packages) it imports} for the `imports` kind."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            for target in names:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # the module and its parent packages
                    prefix = ".".join(parts[:i])
                    # the importer's own packages are loading already (`from vdiff.diffusion
                    # import targets` inside vdiff.diffusion.samplers is no cycle)
                    if prefix in modules and not (name + ".").startswith(prefix + "."):
                        targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative DFS, white/grey/black)."""
    colour = {n: 0 for n in graph}
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_graph_sees_the_package():
    graph = import_graph()
    assert "vdiff.main" in graph and "vdiff.methods.vdm.method" in graph
    assert "vdiff.diffusion.samplers" in graph["vdiff.methods.vdm.method"]
    assert "vdiff.diffusion" in graph["vdiff.methods.vdm.method"]  # the package __init__ runs too
    assert "vdiff.methods.vdm.method" in graph["vdiff.methods.vdm"]  # a package re-exports


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_no_cycles_even_through_function_local_imports():
    cycle = find_cycle(import_graph(all_imports))
    assert cycle is None, "import cycle through function-local imports: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


# What each ground layer may import, function-local imports included. `vdiff.train`'s
# state/sharding/checkpoint/setup/train_step import nothing of vdiff but errors, so core's
# checkpoint restore builds its abstract state with them; the loop (train.trainer) is above.
GROUND = {
    "vdiff.errors": (),
    "vdiff.core": ("vdiff.core", "vdiff.errors", "vdiff.train.checkpoint", "vdiff.train.setup",
                   "vdiff.train.state", "vdiff.train.sharding", "vdiff.train.train_step"),
    "vdiff.diffusion": ("vdiff.diffusion", "vdiff.errors"),
    "vdiff.methods.base": ("vdiff.errors",),
}


@pytest.mark.parametrize("layer", sorted(GROUND))
def test_ground_layers_import_nothing_above_them(layer):
    graph = import_graph(all_imports)
    allowed = GROUND[layer]
    modules = [m for m in graph if m == layer or m.startswith(layer + ".")]
    above = {f"{m} -> {t}" for m in modules for t in reachable(graph, m)
             if t != "vdiff.train"  # the (empty) package __init__ of the train.* above
             and not any(t == a or t.startswith(a + ".") for a in allowed)}
    assert not above, sorted(above)
