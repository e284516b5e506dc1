"""qdrant-client's folder storage (`--qdrant local:DIR`) is pickles: refused unopened, whatever it holds, by the
engine, the CLI and the loader; nothing is read, run, locked or written."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from search.build.qdrant_load import main
from search.bundle.store import BundleContents
from search.config import REPO_ROOT, EngineConfig
from search.query.qdrant_index import QdrantIndexError, load_collection, load_qdrant_bundle


class _WritesAMarker:
    """Pickled, it is a call of exec that writes `marker` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def crafted_folder(root: Path, folder: Path, marker: Path) -> Path:
    """qdrant-client's folder storage of the bundle at `root`, as `local:DIR` used to read it, plus a point whose
    pickle writes `marker` when read."""
    client = QdrantClient(path=str(folder))
    load_collection(client, "items", BundleContents.load(root))
    client.close()
    with sqlite3.connect(folder / "collection" / "items" / "storage.sqlite") as storage:
        storage.execute("INSERT INTO points VALUES (?, ?)", ("evil", pickle.dumps(_WritesAMarker(marker))))
    storage.close()
    return folder


def test_a_pickled_storage_folder_is_never_read(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    root, marker = make_bundle(count=30, dim=16), tmp_path / "marker"
    folder = crafted_folder(root, tmp_path / "q", marker)
    # qdrant-client itself runs the pickle on opening the folder: the refusal below is what keeps it unread.
    opened = subprocess.run([sys.executable, "-c", f"from qdrant_client import QdrantClient\n"
                             f"QdrantClient(path={str(folder)!r})"], capture_output=True, text=True, check=False)
    assert marker.read_text() == "ran", opened.stderr
    marker.unlink()
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    for url in (f"local:{folder}", "local:", f"local:{tmp_path / 'none'}"):
        with pytest.raises(QdrantIndexError, match=r"is refused: qdrant-client's local storage keeps points as "
                                                   r"pickles.*use --qdrant :memory:") as refused:
            load_qdrant_bundle(root, EngineConfig(index=str(root), qdrant_url=url, qdrant_collection="items"))
        assert "\n" not in str(refused.value)
    result = subprocess.run([sys.executable, "-m", "search", "red", "--index", str(root), "--qdrant",
                             f"local:{folder}", "--collection", "items"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "is refused" in result.stderr
    assert not marker.exists() and not (tmp_path / "none").exists()
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before  # not even locked


def test_the_loader_writes_no_folder_storage(make_bundle: Callable[..., Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(make_bundle(count=10, dim=16)), "--qdrant", f"local:{tmp_path / 'q'}", "--collection", "c"]) == 1
    assert "is refused" in capsys.readouterr().err and not (tmp_path / "q").exists()
