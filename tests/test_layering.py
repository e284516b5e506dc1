"""Imports go one way: the index and bundle layers never load torch; nothing in search loads gradio."""

from __future__ import annotations

import subprocess
import sys

from search.config import REPO_ROOT


def _modules_after_import(*names: str) -> set[str]:
    code = f"import sys\nimport {', '.join(names)}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_index_bundle_and_hub_import_without_torch() -> None:
    loaded = _modules_after_import("search.index", "search.bundle", "search.hub", "search.config")
    assert "search.bundle" in loaded  # the probe really imported the modules
    assert not {"torch", "open_clip", "gradio"} & loaded


def test_importing_the_package_loads_nothing_heavy() -> None:
    loaded = _modules_after_import("search")
    assert not {"torch", "open_clip", "hnswlib", "gradio"} & loaded


def test_no_search_module_imports_gradio() -> None:
    modules = sorted(f"search.{path.stem}" for path in (REPO_ROOT / "search").glob("*.py")
                     if path.stem != "__main__")
    loaded = _modules_after_import(*modules)
    assert "search.engine" in loaded and "torch" in loaded
    assert "gradio" not in loaded


def test_encoder_never_imports_hnswlib() -> None:
    loaded = _modules_after_import("search.encoder")
    assert "open_clip" in loaded
    assert "hnswlib" not in loaded
