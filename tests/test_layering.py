"""Imports go one way, wing by wing: bundle < model < query < build < web (and the shared vocabulary below them).

Each check imports modules in a fresh interpreter and reads `sys.modules`: what a module really loads, however it
imports it (at the top, inside a function that runs on import, or through another module).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from search.config import REPO_ROOT

PACKAGE = REPO_ROOT / "search"
SHARED = ("search.errors", "search.types", "search.config")
WINGS = ("bundle", "model", "query", "build", "web")  # each may import only the wings before it


def wing_modules(wing: str) -> list[str]:
    """Every module of one wing, dotted."""
    return sorted(f"search.{wing}.{path.stem}" for path in (PACKAGE / wing).glob("*.py") if path.stem != "__init__")


def modules_after_import(*names: str) -> set[str]:
    code = f"import sys\nimport {', '.join(names)}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_every_module_lives_in_a_wing_or_is_shared() -> None:
    loose = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__", "cli", "qdrant_load"}
    assert {f"search.{name}" for name in loose} == set(SHARED)
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == set(WINGS)


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_loads_no_wing_above_it(wing: str) -> None:
    loaded = modules_after_import(*wing_modules(wing))
    assert set(wing_modules(wing)) <= loaded  # the probe really imported them
    above = WINGS[WINGS.index(wing) + 1:]
    assert not {name for name in loaded if name.split(".")[1:2] and name.split(".")[1] in above}


def test_the_bundle_wing_loads_neither_torch_nor_gradio_nor_the_build() -> None:
    loaded = modules_after_import(*wing_modules("bundle"), *SHARED)
    assert not {"torch", "open_clip", "gradio", "fastapi"} & loaded


def test_only_the_web_wing_loads_gradio_or_fastapi() -> None:
    below = [module for wing in WINGS[:-1] for module in wing_modules(wing)]
    loaded = modules_after_import(*below, "search.cli")
    assert "search.query.engine" in loaded and "torch" in loaded
    assert not {"gradio", "fastapi"} & loaded


def test_the_query_wing_never_imports_the_build() -> None:
    loaded = modules_after_import(*wing_modules("query"))
    assert not any(name.startswith("search.build") for name in loaded)


def test_importing_the_package_loads_nothing_heavy() -> None:
    loaded = modules_after_import("search")
    assert not {"torch", "open_clip", "hnswlib", "gradio"} & loaded


def test_the_encoder_never_imports_hnswlib() -> None:
    loaded = modules_after_import("search.model.encoder")
    assert "open_clip" in loaded and "hnswlib" not in loaded


def imported_modules(path: Path) -> set[str]:
    """The `search.*` modules a file names in its import statements, wherever they are (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.startswith("search.")}


def test_no_import_statement_points_up_or_round() -> None:
    """A lazy import inside a function is an import too: no module names a wing above its own."""
    rank = {wing: place for place, wing in enumerate(WINGS)}
    upward = []
    for path in PACKAGE.glob("*/*.py"):
        own = path.parent.name
        for name in imported_modules(path):
            target = name.split(".")[1]
            if target in rank and rank[target] > rank[own]:
                upward.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = imported_modules(path)
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            if state.get(name) == "open":
                cycles.append(" -> ".join([*trail[trail.index(name):], name]))
            elif name not in state and name in graph:
                visit(name, [*trail, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
