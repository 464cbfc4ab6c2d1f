"""The layout is a promise: four wings with one-way imports, and no framework below recording.

Parses every module of ``weightwatch/`` (imports inside functions too, since a
lazy import is still a dependency) and checks the graph: no cycle, every
import points down the stack, and nothing that reads, checks or reports a run
imports Keras, TensorFlow, torch, JAX or a recording adapter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "weightwatch"
FRAMEWORKS = {"keras", "tensorflow", "tf_keras", "torch", "jax", "flax"}

#: Each module's wing, by the first part of its name below weightwatch; lower imports nothing higher.
RANK = {"_version": 0, "errors": 0, "run": 1, "checking": 2, "output": 3, "recording": 4,
        "cli": 5, "demo": 5, "__init__": 5, "__main__": 5, "pytest_plugin": 5, "testing": 5}
FRAMEWORK_FREE = {"_version", "errors", "run", "checking", "output"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from . import x`` resolves to module x when it is one)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            for a in node.names:  # `from . import journal` names a module
                candidate = f"{target}.{a.name}"
                if _exists(candidate):
                    out.add(candidate)
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)] = _imports(path)
    return graph


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = _graph()


def test_every_module_has_a_wing():
    assert {_wing(m) for m in GRAPH} <= set(RANK), "a new top-level module needs a place in RANK"


def test_no_import_cycle():
    internal = {m: {t for t in deps if t in GRAPH and t != m} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(internal[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(internal):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_stack(module):
    rank = RANK[_wing(module)]
    upward = sorted(t for t in GRAPH[module] if t in GRAPH and t != "weightwatch" and RANK[_wing(t)] > rank)
    if _wing(module) != "__init__":
        upward += ["weightwatch"] * ("weightwatch" in GRAPH[module])
    assert not upward, f"{module} (wing {_wing(module)}) imports a higher wing: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _wing(m) in FRAMEWORK_FREE))
def test_reading_checking_and_output_import_no_framework(module):
    heavy = sorted(t for t in GRAPH[module] if t.split(".")[0] in FRAMEWORKS)
    assert not heavy, f"{module} imports {heavy}"


#: recording's framework-free modules; every other module of recording is an adapter.
SESSION = {"weightwatch.recording", "weightwatch.recording.session", "weightwatch.recording.replicas"}


def test_only_adapters_and_the_demo_import_a_framework():
    adapters = {m for m in GRAPH if _wing(m) == "recording"} - SESSION
    users = {m for m, deps in GRAPH.items() if any(t.split(".")[0] in FRAMEWORKS for t in deps)}
    assert users <= adapters | {"weightwatch.demo"}, sorted(users - adapters)
    assert "weightwatch.recording.keras_callback" in users
    # Nothing imports an adapter but the demo and the testing helpers (the weightwatch_run
    # fixture's callback), lazily, and weightwatch's lazy attributes, by name.
    importers = sorted(m for m, deps in GRAPH.items() if deps & adapters and m not in adapters)
    assert importers == ["weightwatch.demo", "weightwatch.testing"], importers


def test_the_checker_does_not_see_the_parser_as_clean_by_accident():
    """The graph is real: it sees the run layer's own imports and the CLI's lazy ones."""
    assert "weightwatch.run.schema" in GRAPH["weightwatch.run.writer"]
    assert "weightwatch.run.journal" in GRAPH["weightwatch.run.writer"]
    assert "weightwatch.checking.engine" in GRAPH["weightwatch.cli"]
    assert "keras" in GRAPH["weightwatch.recording.keras_callback"]
