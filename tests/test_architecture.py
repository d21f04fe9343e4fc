"""The package's layers: no import cycle between its units, and nothing imports upward.

A unit is a top-level module or subpackage of ``initbench``. Every import of initbench counts,
at module level or inside a function (a function-level import is no way around a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "initbench"

# Lower layers never import higher ones (docs/architecture.md, Layers).
LAYERS = {
    "entry": {"cli"},
    "tools": {"run", "run_pack", "diagnose", "sweep", "report", "bench"},
    "build": {"config", "build", "checkpoint", "errors", "lock", "signals"},
    "library": {
        "fields",
        "engine",
        "packing",
        "inits",
        "models",
        "data",
        "telemetry",
        "io",
        "memory",
        "threads",
        "theory",
        "progress",
        "walltime",
    },  # fmt: skip
}
RANK = {unit: rank for rank, units in enumerate(reversed(LAYERS.values())) for unit in units}


def units() -> set[str]:
    return {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }


def imported_units(path: Path, known: set[str]) -> set[str]:
    """The initbench units ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = ".".join(["initbench", *here[: len(here) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "initbench" and len(parts) > 1 and parts[1] in known:
                found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    known = units()
    graph: dict[str, set[str]] = {u: set() for u in known}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        if rel == ("__init__.py",):
            continue
        unit = rel[0].removesuffix(".py")
        graph[unit] |= imported_units(path, known) - {unit}
    return graph


def test_every_unit_has_a_layer():
    assert units() == set(RANK), "add the new unit to LAYERS (and docs/architecture.md, README)"


def test_no_import_cycles_between_units():
    graph = import_graph()
    visiting, done = [], set()

    def visit(unit: str) -> None:
        if unit in visiting:
            cycle = visiting[visiting.index(unit) :] + [unit]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if unit in done:
            return
        visiting.append(unit)
        for target in sorted(graph[unit]):
            visit(target)
        visiting.pop()
        done.add(unit)

    for unit in sorted(graph):
        visit(unit)


def test_nothing_imports_upward():
    upward = [
        f"{unit} -> {target}"
        for unit, targets in import_graph().items()
        for target in targets
        if RANK[target] > RANK[unit]
    ]
    assert not upward


def test_tools_never_import_each_other_or_the_orchestrator():
    tools = LAYERS["tools"]
    graph = import_graph()
    # A fresh run writes the step-0 report; a pack's members are runs (run_pack builds on
    # run's steps and session); the grid estimate reads sweep files through the sweep
    # package's public API.
    allowed = {("run", "diagnose"), ("run_pack", "run"), ("bench", "sweep")}
    crossing = [
        f"{unit} -> {target}"
        for unit in tools
        for target in graph[unit] & tools
        if (unit, target) not in allowed
    ]
    assert not crossing


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    pkg = tmp_path / "initbench"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("def f():\n    from initbench import b\n")
    (pkg / "a" / "c.py").write_text("from .. import b\n")
    (pkg / "b.py").write_text("import initbench.a\n")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    assert import_graph() == {"a": {"b"}, "b": {"a"}}
