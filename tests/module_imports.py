"""Which top-level packages the app's and the build's modules import on load (what the Space must have installed)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def modules_imported_on_load() -> dict[str, set[str]]:
    """Each module of search/, build_index.py and app.py, by file name: the top-level packages it imports at once."""
    found = {}
    for path in [*(REPO_ROOT / "search").rglob("*.py"), REPO_ROOT / "build_index.py", REPO_ROOT / "app.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = [alias.name for node in top if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
        found[str(path.relative_to(REPO_ROOT))] = {name.split(".")[0] for name in names}
    return found
