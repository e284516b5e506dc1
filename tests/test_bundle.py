"""Bundle: round trip, manifest contents, and refusal of corrupt, missing or mismatched files."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.bundle.durable import atomic_write
from search.bundle.manifest import KEYWORD_FILES
from search.bundle.store import (
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
    assert set(manifest["files"]) == {INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE, *KEYWORD_FILES}  # text: BM25 too
    assert bundle.index.params.ef_search == 32
    hit = bundle.catalog.hit(bundle.catalog.row_of("item-0004"), 0.5)
    assert hit.to_dict().items() >= {"id": "item-0004", "score": 0.5, "image": "https://images.example/4.jpg",
                                     "page_url": "https://example.com/p/4", "description": "picture number 4",
                                     "photographer": "Person 4", "duplicates": 0, "date": None}.items()
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
    model_dir.mkdir()  # a local-dir: folder that is not there is refused when the encoder is asked for
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
    from search.bundle.store import sha256_of
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


# --- atomic_write: unique exclusive temp names, nothing left behind ---

def test_atomic_write_never_follows_a_symlink_planted_at_a_temp_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name in (".manifest.tmp.json", ".manifest.json.tmp", ".manifest.0000000000000000.tmp.json"):
        (folder / name).symlink_to(victim)
    atomic_write(folder / "manifest.json", lambda tmp: tmp.write_text("new", encoding="utf-8"))
    assert victim.read_text() == "keep me" and (folder / "manifest.json").read_text() == "new"
    assert sorted(path.name for path in folder.iterdir() if not path.is_symlink()) == ["manifest.json"]


def test_atomic_write_replaces_a_symlink_at_the_target_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "embeddings.npy").symlink_to(victim)
    atomic_write(tmp_path / "embeddings.npy", lambda tmp: np.save(tmp, np.ones(3, np.float32)))
    assert victim.read_text() == "keep me" and not (tmp_path / "embeddings.npy").is_symlink()
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), np.ones(3, np.float32))


def test_atomic_write_leaves_no_temp_file_when_the_write_fails(tmp_path: Path) -> None:
    (tmp_path / "data.parquet").write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "data.parquet", fail)
    assert [path.name for path in tmp_path.iterdir()] == ["data.parquet"]
    assert (tmp_path / "data.parquet").read_text() == "old"


def test_atomic_write_refuses_a_temp_file_swapped_while_writing(tmp_path: Path) -> None:
    def swap(tmp: Path) -> None:
        tmp.unlink()
        tmp.write_text("someone else's file")  # same name, another inode

    with pytest.raises(BundleError, match="was replaced while being written"):
        atomic_write(tmp_path / "index.hnsw", swap)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_new_files_the_umask_mode_and_unique_temp_names(tmp_path: Path) -> None:
    names: list[str] = []
    old = os.umask(0o022)
    try:
        for _ in range(3):
            atomic_write(tmp_path / "a.json", lambda tmp: (names.append(tmp.name), tmp.write_text("{}"))[1])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert len(set(names)) == 3 and all(name.startswith(".a.") and name.endswith(".tmp.json") for name in names)


# --- what a bundle may point at ---

def test_a_symlink_that_stays_inside_the_bundle_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"picture")
    (root / "images" / "b.png").symlink_to("a.png")
    table = metadata_table(2).set_column(1, "image", [["images/a.png", "images/b.png"]])
    write_bundle(root, unit_vectors(2, 4), table, BundleInfo(EncoderSpec("ViT-B-32", None)))
    bundle = Bundle.load(root)
    assert bundle.catalog.hit(1, 1.0).image == str(root / "images" / "b.png")
    assert bundle.served_folders == ((root / "images").resolve(),) and bundle.label == str(root)


@pytest.mark.parametrize("url", ["https://images.example/a.jpg", "http://127.0.0.1:8000/x.png?w=480#top"])
def test_web_images_and_pages_pass_unchanged(tmp_path: Path, url: str) -> None:
    table = metadata_table(1).set_column(1, "image", [[url]]).set_column(2, "page_url", [[url]])
    write_bundle(tmp_path / "b", unit_vectors(1, 4), table, BundleInfo(EncoderSpec("ViT-B-32", None)))
    hit = Bundle.load(tmp_path / "b").catalog.hit(0, 1.0)
    assert (hit.image, hit.page_url) == (url, url)


@pytest.mark.parametrize("url", ["HTTPS://a.example/x.jpg", "https:///x.jpg", "https://a.example/x y.jpg",
                                 "ftp://a.example/x.jpg", "//a.example/x.jpg", "https://" + "a" * 5000])
def test_odd_urls_are_not_web_urls(tmp_path: Path, url: str) -> None:
    table = metadata_table(1).set_column(2, "page_url", [[url]])
    write_bundle(tmp_path / "b", unit_vectors(1, 4), table, BundleInfo(EncoderSpec("ViT-B-32", None)))
    with pytest.raises(BundleError, match="row 0: page_url must be an http"):
        Bundle.load(tmp_path / "b")


def test_vectors_within_the_unit_tolerance_load(tmp_path: Path) -> None:
    vectors = unit_vectors(4, 8) * np.array([[1.0009], [0.9991], [1.0], [1.0]], np.float32)
    write_bundle(tmp_path / "b", vectors, metadata_table(4), BundleInfo(EncoderSpec("ViT-B-32", None)))
    assert len(Bundle.load(tmp_path / "b").catalog) == 4
    vectors[2] *= 1.0011
    write_bundle(tmp_path / "b", vectors, metadata_table(4), BundleInfo(EncoderSpec("ViT-B-32", None)))
    with pytest.raises(BundleError, match=r"1 row\(s\) that are not finite unit vectors \(row 2 first\)"):
        Bundle.load(tmp_path / "b")
