"""The import picture: layers point one way, nothing imports in a circle, and the ops wing sits above the product.

The graph is read from the source (every `import`, at module level or inside a function), so a new arrow fails
here before anyone draws it by hand. Modules are named as installed: the `ops/` folder is `bridge_ops`.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"bridge": ROOT / "bridge", "bridge_ops": ROOT / "ops"}

# What each part of the product may import besides itself (the standard library and third parties aside).
# The core reads cli -> http/worker -> services -> store/auth -> domain -> errors; settings sit beside the domain.
ALLOWED = {
    "bridge.errors": set(),
    "bridge.domain": {"bridge.errors"},
    "bridge.settings": {"bridge.errors", "bridge.domain"},
    "bridge.store": {"bridge.errors", "bridge.domain", "bridge.settings"},
    "bridge.auth": {"bridge.errors", "bridge.domain", "bridge.settings"},
    "bridge.agents": {"bridge.errors", "bridge.domain", "bridge.settings"},
    "bridge.services": {"bridge.errors", "bridge.domain", "bridge.settings", "bridge.store", "bridge.auth",
                        "bridge.agents"},
    "bridge.worker": {"bridge.errors", "bridge.domain", "bridge.settings", "bridge.store", "bridge.auth",
                      "bridge.agents", "bridge.services"},
}
CORE = ("bridge.",)
ABOVE_THE_CORE = ("bridge_ops", "bridge.testing")  # the ops wing and the harness: the core never imports them
MAY_USE_THE_HARNESS = ("bridge.testing", "bridge.demo")  # `bridge demo` runs a real stack with the harness


def modules() -> dict[str, Path]:
    """Installed module name -> source file, for the product and the ops wing."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every name an import statement in the file asks for (absolute; relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def owner(name: str) -> str | None:
    """The known module a dotted name belongs to (`bridge.store.db.connect` -> `bridge.store.db`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {owner(name) for name in imported_names(module, path)}
        edges[module] = {t for t in targets if t is not None and t != module and not module.startswith(f"{t}.")}
    return edges


GRAPH = graph()


def area(module: str) -> str:
    """`bridge.store.db` -> `bridge.store`; `bridge.settings` -> itself."""
    return ".".join(module.split(".")[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
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


def test_the_graph_sees_function_level_and_relative_imports():
    """The reader itself: an import inside a function and a relative import are arrows too."""
    assert "bridge.cli.serve" in GRAPH["bridge.cli.main"] or "bridge.cli.lazy" in GRAPH["bridge.cli.main"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer):
    wrong = {(m, t) for m, targets in GRAPH.items() if area(m) == layer
             for t in targets if area(t) != layer and area(t) not in ALLOWED[layer]}
    assert sorted(wrong) == []


def test_the_core_never_imports_the_ops_wing_or_the_harness():
    upward = {(m, t) for m, targets in GRAPH.items() if m.startswith(CORE) and not m.startswith(MAY_USE_THE_HARNESS)
              for t in targets if t.startswith(ABOVE_THE_CORE)}
    assert sorted(upward) == []
    assert not any(t.startswith("bridge_ops") for m in GRAPH if m.startswith("bridge.") for t in GRAPH[m])


def test_nothing_imports_ops_by_its_folder_name():
    """The import name `ops` belongs to a PyPI package: the wing is `bridge_ops` everywhere, tests included."""
    files = [*MODULES.values(), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("scripts/*.py")]
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in files
                 for name in imported_names("x", path) if name == "ops" or name.startswith("ops.")]
    assert offenders == []


def test_every_package_folder_is_shipped():
    """pyproject lists its packages by hand (the ops folder is renamed): a new folder must be listed too."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"bridge_ops": "ops"}
    folders = {module for module, path in MODULES.items() if path.name == "__init__.py"}
    assert sorted(config["packages"]) == sorted(folders)
