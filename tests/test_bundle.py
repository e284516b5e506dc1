"""Bundle: round trip, manifest contents, and refusal of corrupt, missing or mismatched files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.bundle import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    METADATA_FILE,
    Bundle,
    BundleInfo,
    write_bundle,
)
from search.config import EncoderSpec, HnswParams
from search.errors import BundleError, UnknownItemError
from tests.conftest import metadata_table, unit_vectors

MakeBundle = Callable[..., Path]


def test_round_trip_keeps_vectors_metadata_and_manifest(make_bundle: MakeBundle) -> None:
    root = make_bundle(count=40, dim=12)
    bundle = Bundle.load(root)
    np.testing.assert_array_equal(bundle.embeddings, unit_vectors(40, 12))
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1
    assert manifest["encoder"] == {"model": "ViT-B-32", "pretrained": None}
    assert (manifest["dim"], manifest["count"], manifest["space"]) == (12, 40, "cosine")
    assert manifest["hnsw"] == {"m": 8, "ef_construction": 64, "ef_search": 32}
    assert manifest["source"] == {"name": "unit-test", "revision": "r1"}
    assert manifest["failures"] == 2 and manifest["created"].endswith("+00:00")
    assert set(manifest["files"]) == {INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE}
    assert bundle.index.params.ef_search == 32
    hit = bundle.catalog.hit(bundle.catalog.row_of("item-0004"), 0.5)
    assert hit.to_dict() == {"id": "item-0004", "score": 0.5, "image": "https://images.example/4.jpg",
                             "page_url": "https://example.com/p/4", "description": "picture number 4",
                             "photographer": "Person 4"}
    assert bundle.catalog.hit(0, 0.1).page_url is None


def test_index_finds_each_stored_vector(make_bundle: MakeBundle) -> None:
    bundle = Bundle.load(make_bundle(count=60))
    for row in (0, 17, 59):
        labels, scores = bundle.index.query(bundle.embeddings[row], 1)
        assert labels[0] == row and scores[0] == pytest.approx(1.0, abs=1e-5)


def test_local_images_and_local_dir_model_are_stored_relative_to_the_bundle(tmp_path: Path) -> None:
    root = tmp_path / "collection" / "index"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"not checked here")
    model_dir = tmp_path / "collection" / "model"
    table = metadata_table(1).set_column(1, "image", [["images/a.png"]])
    write_bundle(root, unit_vectors(1, 4), table, BundleInfo(EncoderSpec(f"local-dir:{model_dir}")))
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    assert manifest["encoder"]["model"] == "local-dir:../model"
    assert "images/a.png" in manifest["files"]
    moved = tmp_path / "moved"
    root.parent.rename(moved)
    bundle = Bundle.load(moved / "index")
    assert bundle.catalog.hit(0, 1.0).image == str(moved / "index" / "images" / "a.png")
    assert bundle.encoder_spec == EncoderSpec(f"local-dir:{(moved / 'model').resolve()}")


@pytest.mark.parametrize("name", [INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE])
def test_a_flipped_byte_is_refused_naming_the_file(make_bundle: MakeBundle, name: str) -> None:
    root = make_bundle()
    data = bytearray((root / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name} is corrupt.*build_index.py"):
        Bundle.load(root)


@pytest.mark.parametrize("name", [INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE])
def test_a_missing_file_is_refused_naming_the_file(make_bundle: MakeBundle, name: str) -> None:
    root = make_bundle()
    (root / name).unlink()
    with pytest.raises(BundleError, match=rf"{name} is missing"):
        Bundle.load(root)


def _rewrite_manifest(root: Path, **changes: object) -> None:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(("changes", "message"), [
    ({"format_version": 99}, "format_version 99 is not supported"),
    ({"space": "l2"}, "space 'l2' is not supported"),
    ({"dim": 32}, r"expected float32 \(50, 32\)"),
    ({"count": 49}, r"expected float32 \(49, 16\)"),
    ({"hnsw": {"m": 8}}, "manifest.json is malformed"),
    ({"encoder": "ViT-B-32"}, "manifest.json is malformed"),
])
def test_a_manifest_that_disagrees_with_the_data_is_refused(make_bundle: MakeBundle, changes: dict,
                                                            message: str) -> None:
    root = make_bundle()
    _rewrite_manifest(root, **changes)
    with pytest.raises(BundleError, match=message):
        Bundle.load(root)


def test_unreadable_or_absent_manifest_is_refused(tmp_path: Path, make_bundle: MakeBundle) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nowhere")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json, so it is not an index bundle"):
        Bundle.load(tmp_path / "empty")
    root = make_bundle()
    (root / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(root)


def test_pickled_embeddings_are_never_loaded(make_bundle: MakeBundle) -> None:
    root = make_bundle()
    np.save(root / EMBEDDINGS_FILE, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    from search.bundle import sha256_of
    manifest["files"][EMBEDDINGS_FILE] = sha256_of(root / EMBEDDINGS_FILE)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a plain .npy array"):
        Bundle.load(root)


def test_metadata_must_have_the_required_columns_and_unique_ids(tmp_path: Path) -> None:
    info = BundleInfo(EncoderSpec("ViT-B-32", None), HnswParams(m=8, ef_construction=32, ef_search=16))
    write_bundle(tmp_path / "a", unit_vectors(3, 4), metadata_table(3).drop_columns(["page_url"]), info)
    with pytest.raises(BundleError, match="lacks column.*page_url"):
        Bundle.load(tmp_path / "a")
    duplicated = metadata_table(3).set_column(0, "id", [["x", "y", "x"]])
    write_bundle(tmp_path / "b", unit_vectors(3, 4), duplicated, info)
    with pytest.raises(BundleError, match="duplicate ids"):
        Bundle.load(tmp_path / "b")


def test_unknown_id_says_what_to_do(make_bundle: MakeBundle) -> None:
    bundle = Bundle.load(make_bundle())
    with pytest.raises(UnknownItemError, match="no item with id 'nope'.*search result"):
        bundle.catalog.row_of("nope")


def test_rewriting_a_bundle_replaces_it_without_leftovers(make_bundle: MakeBundle) -> None:
    root = make_bundle(count=10)
    write_bundle(root, unit_vectors(20, 16, seed=3), metadata_table(20), BundleInfo(EncoderSpec("ViT-B-32", None)))
    bundle = Bundle.load(root)
    assert bundle.manifest.count == 20
    assert pq.read_table(root / METADATA_FILE).num_rows == 20
    assert not [path for path in root.iterdir() if path.name.startswith(".")]


def test_write_refuses_mismatched_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32"):
        write_bundle(tmp_path, unit_vectors(3, 4).astype(np.float64), metadata_table(3),
                     BundleInfo(EncoderSpec("ViT-B-32", None)))
    with pytest.raises(ValueError, match="for 4 rows"):
        write_bundle(tmp_path, unit_vectors(3, 4), metadata_table(4), BundleInfo(EncoderSpec("ViT-B-32", None)))
