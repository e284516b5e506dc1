"""Integrity: every tampered bundle file is refused with a clear message, a manifest naming another model or dim
is refused, and nothing unpickles data from a bundle (or a build's checkpoint shards)."""

from __future__ import annotations

import html
import json
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import build_index
from search import cli
from search.build.pipeline import BuildConfig, build_bundle
from search.build.sources import SourceConfig
from search.bundle.store import EMBEDDINGS_FILE, MANIFEST_FILE, Bundle, sha256_of
from search.config import REPO_ROOT, EngineConfig
from search.errors import BundleError, EncoderMismatchError
from search.query.engine import SearchEngine, load_engine
from search.web.startup import start_engine
from tests.conftest import DEMO_INDEX_DIR, DEMO_MODEL_DIR, DEMO_SPEC, tiny_model_dir
from tests.odd_images import text_as_jpg
from tests.test_build import write_shapes

PRODUCT_CODE = [*sorted((REPO_ROOT / "search").rglob("*.py")), REPO_ROOT / "app.py", REPO_ROOT / "build_index.py"]
UNPICKLING = re.compile(r"pickle\.loads?\(|Unpickler|allow_pickle\s*=\s*True|read_pickle|joblib|dill|"
                        r"cloudpickle|shelve|marshal\.loads?\(")


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small bundle built by the real pipeline from a folder with one bad file, so it has failures.parquet."""
    folder = tmp_path_factory.mktemp("built")
    photos = folder / "photos"
    write_shapes(photos, per_shape=2)
    text_as_jpg(photos)
    build_bundle(BuildConfig(folder / "out", SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", progress=False))
    return folder / "out"


@pytest.fixture
def demo_copy(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the demo bundle (with its images/) beside a copy of its model, as shipped."""
    shutil.copytree(DEMO_MODEL_DIR, tmp_path / "model")
    yield shutil.copytree(DEMO_INDEX_DIR, tmp_path / "index")


def flip_byte(path: Path, position: int | None = None) -> None:
    """Invert one byte of a file (the middle one by default)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if position is None else position] ^= 0xFF
    path.write_bytes(bytes(data))


def data_files(root: Path) -> list[str]:
    """Every file of a bundle but the manifest, as the manifest names them."""
    return sorted(json.loads((root / MANIFEST_FILE).read_text())["files"])


@pytest.mark.parametrize("which", ["demo", "built"])
def test_a_flipped_byte_in_any_file_is_refused_naming_the_file(which: str, demo_copy: Path, built_bundle: Path,
                                                               tmp_path: Path) -> None:
    root = demo_copy if which == "demo" else shutil.copytree(built_bundle, tmp_path / "built")
    names = data_files(root)
    expected = {"index.hnsw", "embeddings.npy", "metadata.parquet"}
    expected |= {"failures.parquet"} if which == "built" else {f"images/shape-{n:03d}.jpg" for n in range(300)}
    assert expected <= set(names)
    for name in names:
        path = root / name
        original = path.read_bytes()
        flip_byte(path)
        with pytest.raises(BundleError, match=rf"bundle file .*{re.escape(name)} is corrupt \(sha256 differs from "
                                              r"manifest.json\); rebuild it with build_index.py"):
            Bundle.load(root)
        path.write_bytes(original)
    assert len(Bundle.load(root).catalog) > 0  # restored, it loads again: only the flipped byte was refused


def test_a_flipped_byte_in_the_manifest_is_refused(demo_copy: Path) -> None:
    manifest = demo_copy / MANIFEST_FILE
    original = manifest.read_bytes()
    positions = [0, len(original) - 2, *random.Random(0).sample(range(len(original)), 40)]
    for position in positions:
        flip_byte(manifest, position)
        with pytest.raises(BundleError, match="manifest.json is not valid JSON.*rebuild it with build_index.py"):
            Bundle.load(demo_copy)
        manifest.write_bytes(original)


def test_the_app_and_the_cli_refuse_a_tampered_bundle_with_the_reason(demo_copy: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    flip_byte(demo_copy / "images" / "shape-123.jpg")
    startup = start_engine(EngineConfig(index=str(demo_copy)))
    assert startup.is_demo and "images/shape-123.jpg is corrupt (sha256 differs" in html.unescape(startup.notice or "")
    assert cli.main(["a red circle", "--index", str(demo_copy)]) == 1
    assert "images/shape-123.jpg is corrupt" in capsys.readouterr().err


def rewrite_manifest(root: Path, **changes: object) -> None:
    """Change top-level manifest fields (checksums stay valid: the manifest does not list itself)."""
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_a_manifest_naming_another_model_is_refused(demo_copy: Path, demo_encoder) -> None:
    rewrite_manifest(demo_copy, encoder={"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    with pytest.raises(EncoderMismatchError, match="built with model ViT-B-32 / laion2b_s34b_b79k.*rebuild"):
        SearchEngine(demo_encoder, Bundle.load(demo_copy))


def test_a_manifest_naming_a_model_of_another_dim_is_refused_on_load(demo_copy: Path, tmp_path: Path) -> None:
    tiny_model_dir(tmp_path / "other")
    rewrite_manifest(demo_copy, encoder={"model": "local-dir:../other", "pretrained": None})
    with pytest.raises(EncoderMismatchError, match="makes 32-d vectors but index .* holds 64-d ones"):
        load_engine(EngineConfig(index=str(demo_copy), device="cpu"))


@pytest.mark.parametrize("dim", [32, 65])
def test_a_manifest_naming_another_dim_is_refused(demo_copy: Path, dim: int) -> None:
    rewrite_manifest(demo_copy, dim=dim)
    with pytest.raises(BundleError, match=rf"embeddings.npy holds float32 \(300, 64\), expected float32 "
                                          rf"\(300, {dim}\)"):
        Bundle.load(demo_copy)


@pytest.mark.parametrize("dim", [0, -64, 10**9])
def test_a_manifest_with_an_impossible_dim_is_refused_before_reading_data(demo_copy: Path, dim: int) -> None:
    rewrite_manifest(demo_copy, dim=dim)
    with pytest.raises(BundleError, match="manifest.json is malformed: dim must be from 1 to 8192"):
        Bundle.load(demo_copy)


# --- no pickle ---

def test_no_product_code_unpickles() -> None:
    offenders = [f"{path.name}:{number}: {line.strip()}" for path in PRODUCT_CODE
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if UNPICKLING.search(line)]
    assert offenders == []
    assert UNPICKLING.search("np.load(path, allow_pickle=True)")  # the pattern itself works


def test_loading_and_searching_a_bundle_never_calls_pickle(demo_encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something unpickled bundle data")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    engine = SearchEngine(demo_encoder, Bundle.load(DEMO_INDEX_DIR))
    assert "red circle" in engine.search_text("a red circle", 1)[0].description
    assert len(engine.similar("shape-007", 3)) == 3


class Evil:
    """An object whose unpickling would run code: it must never be unpickled."""

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path("/tmp/unpickled-by-a-bundle"),))


def test_a_pickled_npy_in_a_bundle_is_refused_unopened(demo_copy: Path) -> None:
    marker = Path("/tmp/unpickled-by-a-bundle")
    marker.unlink(missing_ok=True)
    np.save(demo_copy / EMBEDDINGS_FILE, np.array([Evil()], dtype=object), allow_pickle=True)
    files = json.loads((demo_copy / MANIFEST_FILE).read_text())["files"]
    rewrite_manifest(demo_copy, files={**files, EMBEDDINGS_FILE: sha256_of(demo_copy / EMBEDDINGS_FILE)})
    with pytest.raises(BundleError, match="embeddings.npy is not a plain .npy array"):
        Bundle.load(demo_copy)
    assert not marker.exists()


def test_a_pickled_checkpoint_shard_is_refused_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = Path("/tmp/unpickled-by-a-bundle")
    marker.unlink(missing_ok=True)
    photos, out = tmp_path / "photos", tmp_path / "out"
    write_shapes(photos, per_shape=1)
    args = ["--images-dir", str(photos), "--out", str(out), "--model", f"local-dir:{DEMO_MODEL_DIR}", "--device",
            "cpu", "--shard-size", "2", "--no-progress"]
    assert build_index.main(args) == 0
    shard = sorted((out / ".build" / "shards").glob("shard-*.npy"))[0]
    np.save(shard, np.array([Evil()], dtype=object), allow_pickle=True)
    capsys.readouterr()
    assert build_index.main(args) == 1
    err = capsys.readouterr().err
    assert "shard-000000.npy is not a plain .npy array" in err and "delete" in err and "Traceback" not in err
    assert not marker.exists()
