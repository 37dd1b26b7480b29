"""The dependency rule of docs/architecture.md, read from the source with ``ast``.

``retrieval`` <- ``ingest`` / ``generation`` <- ``server`` / ``eval`` <- ``persona`` (``server`` runs a live ingest).
Every import counts, also those inside functions and under ``TYPE_CHECKING``; and no two modules
of the project may import each other, directly or through others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the project packages it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "retrieval": {"retrieval"},
    "ingest": {"ingest", "retrieval"},
    "generation": {"generation", "retrieval"},
    "server": {"server", "generation", "retrieval", "ingest"},
    "eval": {"eval", "generation", "retrieval", "ingest"},
    "persona": {"persona", "server", "eval", "generation", "retrieval", "ingest", "bench"},
    "bench": {"bench", "eval", "generation", "retrieval", "ingest", "server"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every project module ``path`` imports (``from a.b import c`` yields ``a.b`` and ``a.b.c``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def project_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for package in ALLOWED for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in imports(path) if m in files and m != name} for name, path in files.items()}


def test_packages_import_only_the_layers_below() -> None:
    broken = [f"{module} imports {target}" for module, targets in project_graph().items() for target in targets
              if target.split(".")[0] not in ALLOWED[module.split(".")[0]]]
    assert not broken, "dependency rule broken (docs/architecture.md):\n" + "\n".join(sorted(broken))


def test_no_import_cycle() -> None:
    graph = project_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package's __init__ is imported with each of its modules; that is not a cycle of ours.
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in pairwise(c))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from generation.service import PersonaService\n", encoding="utf-8")
    assert "generation.service" in set(imports(sample))
    assert "generation" not in ALLOWED["retrieval"]
