"""The package's import structure, read from the source (docs/architecture.md draws it).

Each layer may import its own layer and those below it, never one above; the wiring at the top (strategies,
config checks, loggers, the summary, stages, the run and eval's entry point) is imported by nothing below it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_ft"

# Bottom to top. A module belongs to the longest prefix listed.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("utils", ("lit_ft.utils",)),
    ("models", ("lit_ft.models",)),
    ("data", ("lit_ft.data",)),
    ("losses", ("lit_ft.losses",)),
    ("modules", ("lit_ft.modules",)),
    ("eval", ("lit_ft.eval",)),
    ("callbacks", ("lit_ft.callbacks",)),
    (
        "wiring",
        (
            "lit_ft.strategies",
            "lit_ft.config",
            "lit_ft.loggers",
            "lit_ft.summary",
            "lit_ft.model_card",
            "lit_ft.sweep_report",
            "lit_ft.resolvers",
            "lit_ft.stages",
            "lit_ft.run",
            "lit_ft.fit",
            "lit_ft.evaluate",
        ),
    ),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of ``lit_ft.x.y`` (``None`` for the package root ``lit_ft``)."""
    matches = [
        (len(prefix), name)
        for name, prefixes in LAYERS
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(matches)[1] if matches else None


def imports(path: Path) -> set[str]:
    """The ``lit_ft`` modules a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lit_ft"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lit_ft"))
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m != "lit_ft" and layer_of(m) is None] == []


def test_layers_import_downwards_only():
    upward = []
    for module, targets in import_graph().items():
        if module == "lit_ft":
            continue
        for target in targets:
            if layer_of(target) is not None and RANK[layer_of(target)] > RANK[layer_of(module)]:
                upward.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert upward == []


def package_of(module: str) -> str:
    """``lit_ft.data.tokenize`` -> ``lit_ft.data``; top-level modules are their own package."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if "lit_ft" not in (module, target) and package_of(module) != package_of(target):
                edges[package_of(module)].add(package_of(target))
    try:
        list(TopologicalSorter(edges).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle between packages: {' -> '.join(error.args[1])}")


def imports_module(graph: dict[str, set[str]], importer: str, imported: str) -> bool:
    return any(t == imported or t.startswith(imported + ".") for t in graph[importer])


def test_the_pipelines_import_one_way_run_then_stages_then_fit():
    """``run`` picks one fit or a curriculum, ``stages`` runs a curriculum's fits, ``fit`` runs one: never back up."""
    graph = import_graph()
    assert imports_module(graph, "lit_ft.run", "lit_ft.stages")  # the chain the test guards is still there
    assert not imports_module(graph, "lit_ft.stages", "lit_ft.run")
    assert not any(imports_module(graph, "lit_ft.fit", m) for m in ("lit_ft.run", "lit_ft.stages"))
