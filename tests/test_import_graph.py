"""The shape of the code: the import graph of flaxlm/, benchmarks/ and launch/ has no cycles,
flaxlm/ imports only downward, and no function is longer than a screenful and a half.

Every import counts, function-level ones included (a function-level import that dodges a cycle is
still a cycle). `LAYERS` is the one picture of flaxlm's layers, lowest first: a module may import
its own layer and the layers below it. A module is placed by its longest prefix in the table, so a
new module must be placed here before it can land (docs/architecture.md draws the same layers).
"""

from __future__ import annotations

import ast
import functools
import pathlib

# Run as a script (`python tests/test_import_graph.py`) it checks the tree it is run from.
ROOT = pathlib.Path.cwd() if __name__ == "__main__" else pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("flaxlm", "benchmarks", "launch")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("flaxlm", "flaxlm.errors", "flaxlm.storage", "flaxlm.jax_platform",
                    "flaxlm.distributed", "flaxlm.sharding", "flaxlm.optim", "flaxlm.topology")),
    ("models and data", ("flaxlm.models", "flaxlm.data", "flaxlm.flops")),
    ("formats", ("flaxlm.convert.mappings", "flaxlm.convert.hf_config", "flaxlm.convert.model_io",
                 "flaxlm.convert.safe_load", "flaxlm.convert.tokenizer_files",
                 "flaxlm.convert.parity", "flaxlm.vocab")),
    ("run", ("flaxlm.run", )),
    ("objectives", ("flaxlm.objectives", )),
    ("experiment", ("flaxlm.experiment", "flaxlm.train", "flaxlm.aot", "flaxlm.aot_report",
                    "flaxlm.run_config")),
    ("commands", ("flaxlm.convert", "flaxlm.tasks", "flaxlm.vocab.commands", "flaxlm.vocab.prune",
                  "flaxlm.plots", "flaxlm.demo", "flaxlm.cli")),
)


@functools.cache
def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_edges() -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in its file)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                # `from pkg import mod` runs pkg/__init__.py and then mod: an edge to both.
                targets = [source] + [f"{source}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                resolved = owner(target)
                if resolved and resolved != name:
                    edges[name].add(resolved)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _imports_nothing(module: str) -> bool:
    path, is_package = _modules()[module]
    return is_package and not any(
        isinstance(node, (ast.Import, ast.ImportFrom))
        for node in ast.walk(ast.parse(path.read_text())))


def layer_of(module: str) -> int | None:
    """Index in LAYERS; a package whose __init__ imports nothing is a bare namespace (layer 0)."""
    if module in _modules() and _imports_nothing(module):
        return 0
    best, best_len = None, -1
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # The top-level package name places only its own __init__, never everything under it.
            under = module.startswith(prefix + ".") and prefix not in PACKAGES
            if (module == prefix or under) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    return best


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for source in sorted(edges):
        if not source.startswith("flaxlm"):
            continue
        for target in sorted(edges[source]):
            if not target.startswith("flaxlm"):
                found.append(f"{source} → {target} (flaxlm imports {target.split('.')[0]})")
            elif None in (layer_of(source), layer_of(target)):
                continue  # reported by test_every_flaxlm_module_has_a_layer
            elif layer_of(target) > layer_of(source):
                found.append(f"{source} ({LAYERS[layer_of(source)][0]}) → {target} "
                             f"({LAYERS[layer_of(target)][0]})")
    return found


def test_every_flaxlm_module_has_a_layer():
    unplaced = [m for m in import_edges() if m.startswith("flaxlm") and layer_of(m) is None]
    assert not unplaced, unplaced


def test_no_import_cycles():
    assert cycles(import_edges()) == []


def test_flaxlm_imports_only_downward():
    assert upward_edges(import_edges()) == []


MAX_FUNCTION_LINES = 120


def long_functions() -> list[str]:
    found = []
    for path, _ in _modules().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_no_function_is_longer_than_120_lines():
    assert long_functions() == []


def test_the_checker_sees_a_cycle_and_an_upward_edge():
    edges = {"flaxlm.errors": {"flaxlm.cli"}, "flaxlm.cli": {"flaxlm.errors"}}
    assert cycles(edges) == [["flaxlm.cli", "flaxlm.errors"]]
    assert upward_edges(edges) == ["flaxlm.errors (foundation) → flaxlm.cli (commands)"]


if __name__ == "__main__":
    graph = import_edges()
    for component in cycles(graph):
        print("cycle:", " ".join(component))
    for edge in upward_edges(graph):
        print("upward:", edge)
    for function in long_functions():
        print("long:", function)
