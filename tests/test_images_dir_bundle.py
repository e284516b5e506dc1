"""`build_index.py --images-dir` writes a self-contained bundle: thumbnails under images/, relative paths only,
so the folder can be moved, extended (--from), re-indexed and resumed after SIGKILL with the same thumbnails."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import build_index
from search.build.pipeline import BuildConfig, build_bundle
from search.build.sources import SourceConfig, unsplash_item
from search.build.thumbnails import THUMBNAIL_SIDE, ThumbnailError, thumbnail_path
from search.bundle.store import Bundle
from search.config import HnswParams
from search.model.encoder import ClipEncoder
from search.query.engine import SearchEngine
from tests.conftest import DEMO_INDEX_DIR, DEMO_MODEL_DIR, DEMO_SPEC
from tests.odd_images import cmyk_jpeg, corrupt_png, png_16bit, rgba_png, text_as_jpg, unicode_named_png, zero_bytes
from tests.test_build import _run_until, shape_picture

BROKEN = {"corrupt.png", "notes.jpg", "empty.jpg"}  # ids that must fail, and so have no thumbnail


def odd_folder(root: Path) -> Path:
    """Pictures in nested folders, unicode names, one stem in two formats, odd modes and sizes, broken files."""
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True)
    shape_picture((30, 70, 225), "square", 0).save(root / "a.jpg")
    shape_picture((220, 30, 30), "circle", 4).save(root / "a.png")  # same stem, another picture
    shape_picture((30, 170, 50), "triangle", 2).save(nested / "ünïcödé 写真.png")
    shape_picture((30, 70, 225), "square", 8).resize((1500, 900)).save(root / "wide.jpg")
    shape_picture((220, 30, 30), "circle", 0).resize((400, 900)).save(root / "nested" / "tall.png")
    for make in (cmyk_jpeg, png_16bit, rgba_png, corrupt_png, text_as_jpg, zero_bytes):
        make(root)
    unicode_named_png(root / "nested")
    (root / "readme.txt").write_text("not a picture")
    return root


def config(out: Path, photos: Path, **changes: object) -> BuildConfig:
    base = BuildConfig(out, SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", batch_size=3, shard_size=4, workers=2,
                       hnsw=HnswParams(m=8, ef_construction=64, ef_search=32), progress=False)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One build of the odd folder, shared read-only (tests that change it work on a copy)."""
    root = tmp_path_factory.mktemp("built")
    photos = odd_folder(root / "photos")
    build_bundle(config(root / "out", photos))
    return photos, root / "out"


def images_of(bundle: Path) -> dict[str, str]:
    rows = pq.read_table(bundle / "metadata.parquet").select(["id", "image"]).to_pylist()
    return {row["id"]: row["image"] for row in rows}


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} if folder.is_dir() else {}


def test_every_image_is_a_relative_thumbnail_inside_the_bundle(built: tuple[Path, Path]) -> None:
    photos, out = built
    images = images_of(out)
    pictures = {path.relative_to(photos).as_posix() for path in photos.rglob("*") if path.is_file()}
    assert set(images) == pictures - BROKEN - {"readme.txt"}
    assert "a.jpg" in images and "a.png" in images and images["a.jpg"] != images["a.png"]
    manifest = Bundle.load(out).manifest
    for item_id, image in images.items():
        assert image == thumbnail_path(item_id) and not Path(image).is_absolute()
        path = out / image
        assert path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(out.resolve())
        assert image in manifest.files  # checksummed like every other bundle file
        with Image.open(path) as thumbnail:
            assert thumbnail.format == "JPEG" and max(thumbnail.size) <= THUMBNAIL_SIDE
    with Image.open(out / images["wide.jpg"]) as wide, Image.open(out / images["nested/tall.png"]) as tall:
        assert wide.size == (512, 307) and tall.size == (228, 512)  # aspect kept, longest side 512
    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(Path(i).name for i in images.values())


def test_failed_items_have_no_thumbnail_and_point_at_nothing(built: tuple[Path, Path]) -> None:
    _, out = built
    failures = {row["id"]: row["image"] for row in pq.read_table(out / "failures.parquet").to_pylist()}
    assert failures == dict.fromkeys(BROKEN)
    assert not any((out / thumbnail_path(item_id)).exists() for item_id in BROKEN)


def test_a_moved_bundle_loads_and_searches_inside_its_new_folder(built: tuple[Path, Path], tmp_path: Path,
                                                                 demo_encoder: ClipEncoder) -> None:
    photos, out = built
    copy = shutil.copytree(out, tmp_path / "copy" / "bundle", ignore=shutil.ignore_patterns(".build"))
    moved = Path(shutil.move(copy, tmp_path / "elsewhere"))
    shutil.rmtree(tmp_path / "copy")
    engine = SearchEngine(demo_encoder, Bundle.load(moved))
    hits = engine.search_text("a blue square", top_k=20, threshold=-1.0)
    assert len(hits) == len(images_of(out))
    for hit in hits:
        assert Path(hit.image).is_file() and Path(hit.image).resolve().is_relative_to(moved.resolve())
        assert not Path(hit.image).resolve().is_relative_to(photos.resolve())
    assert {hit.id for hit in hits[:2]} == {"a.jpg", "wide.jpg"}  # the two blue squares come first


def test_an_interrupted_runs_leftovers_are_removed_and_planted_links_replaced(tmp_path: Path) -> None:
    photos = odd_folder(tmp_path / "photos")
    out, outside = tmp_path / "out", tmp_path / "secret.jpg"
    outside.write_bytes(b"not to be touched")
    (out / "images").mkdir(parents=True)
    (out / thumbnail_path("corrupt.png")).write_bytes(b"a thumbnail of an earlier, interrupted run")
    (out / "images" / ".tmp-0123456789abcdef.jpg").write_bytes(b"half a thumbnail")
    (out / thumbnail_path("a.jpg")).symlink_to(outside)
    build_bundle(config(out, photos))
    assert outside.read_bytes() == b"not to be touched"
    assert not (out / thumbnail_path("a.jpg")).is_symlink()
    names = {path.name for path in (out / "images").iterdir()}
    assert names == {Path(image).name for image in images_of(out).values()}


def test_a_symlinked_images_folder_is_refused(tmp_path: Path) -> None:
    photos = odd_folder(tmp_path / "photos")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "images").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ThumbnailError, match="symbolic link"):
        build_bundle(config(tmp_path / "out", photos))
    assert not any(elsewhere.iterdir())


def test_a_bundle_inside_the_images_folder_does_not_index_its_own_thumbnails(tmp_path: Path) -> None:
    photos = odd_folder(tmp_path / "photos")
    out = photos / "index"
    first = build_bundle(config(out, photos))
    again = build_bundle(config(out, photos, retry_failed=True))
    assert first.count == again.count == len(images_of(out))
    assert not any(item_id.startswith("index/") for item_id in images_of(out))


def test_from_and_rebuild_index_bring_the_thumbnails_along(built: tuple[Path, Path], tmp_path: Path) -> None:
    photos, full = built
    base = tmp_path / "base"
    build_bundle(config(base, photos, limit=5))
    base_images = files_in(base / "images")
    assert len(base_images) == len(images_of(base)) > 0
    grown = tmp_path / "grown"
    build_bundle(config(grown, photos, encoder=None, base=str(base)))
    reindexed = tmp_path / "reindexed"
    assert build_index.main(["--from", str(base), "--out", str(reindexed), "--rebuild-index", "--hnsw-m", "12"]) == 0
    shutil.rmtree(base)  # neither may still need the base folder
    assert images_of(grown) == images_of(full)
    grown_images = files_in(grown / "images")
    assert {name: grown_images[name] for name in base_images} == base_images  # copied, not made again
    assert grown_images == files_in(full / "images")  # the same pictures as a build in one go
    assert files_in(reindexed / "images") == base_images
    for bundle in (grown, reindexed):
        loaded = Bundle.load(bundle)
        assert all(Path(loaded.catalog.hit(row, 1.0).image).resolve().is_relative_to(bundle.resolve())
                   for row in range(len(loaded.catalog)))
    assert build_index.main(["--from", str(reindexed), "--out", str(reindexed), "--rebuild-index"]) == 0
    assert files_in(reindexed / "images") == base_images  # in place: the pictures stay as they are


def into_blobs(snapshot: Path) -> None:
    """Lay a bundle out as huggingface_hub caches it: each file of snapshots/REV/ becomes a link into blobs/."""
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir()
    for path in sorted(snapshot.rglob("*")):
        relative = path.relative_to(snapshot)
        if path.is_file() and not relative.parts[0].startswith("."):
            blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
            path.replace(blob)
            path.symlink_to(os.path.relpath(blob, path.parent))
    shutil.rmtree(snapshot / ".build")


def test_pictures_of_a_hub_snapshot_are_copied_as_files(built: tuple[Path, Path], tmp_path: Path) -> None:
    photos, full = built
    # Built where it will lie, so the relative local-dir: path of the demo model still resolves from there.
    snapshot = tmp_path / "hub" / "datasets--someone--photos" / "snapshots" / ("0" * 40)
    build_bundle(config(snapshot, photos, limit=5))
    base_images = files_in(snapshot / "images")
    into_blobs(snapshot)
    assert all((snapshot / image).is_symlink() for image in images_of(snapshot).values())
    grown, reindexed = tmp_path / "grown", tmp_path / "reindexed"
    build_bundle(config(grown, photos, encoder=None, base=str(snapshot)))
    assert build_index.main(["--from", str(snapshot), "--out", str(reindexed), "--rebuild-index"]) == 0
    shutil.rmtree(tmp_path / "hub")
    for bundle in (grown, reindexed):
        assert not any(path.is_symlink() for path in (bundle / "images").iterdir())
        assert len(Bundle.load(bundle).catalog) == len(images_of(bundle))
    assert images_of(grown) == images_of(full) and files_in(grown / "images") == files_in(full / "images")
    assert files_in(reindexed / "images") == base_images


@pytest.mark.slow
def test_sigkill_then_resume_keeps_committed_thumbnails_and_makes_the_same_ones(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(14):
        colour = ((number * 53) % 256, (number * 101) % 256, (number * 29) % 256)
        shape_picture(colour, ("circle", "square", "triangle")[number % 3], number).save(photos / f"p{number:02d}.jpg")
    out = tmp_path / "killed"
    # Reading a local file takes no time: slow every read down so the build can be killed mid-way.
    slow = ("import sys, time; import search.build.fetch as f; read = f.ImageFetcher.fetch; "
            "f.ImageFetcher.fetch = lambda self, where: (time.sleep(0.1), read(self, where))[1]; "
            "import build_index; sys.exit(build_index.main(sys.argv[1:]))")
    command = [sys.executable, "-c", slow, "--images-dir", str(photos), "--out", str(out), "--model",
               f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--batch-size", "1", "--shard-size", "2",
               "--workers", "1", "--no-progress"]
    _run_until(command, out, shards=2)
    shards = sorted((out / ".build" / "shards").glob("shard-*.parquet"))
    committed = [row["image"] for path in shards for row in pq.read_table(path).to_pylist()]
    assert len(committed) >= 4
    before = {image: os.stat(out / image) for image in committed}
    build_bundle(config(out, photos, batch_size=1, shard_size=2, workers=1))
    for image, stat in before.items():
        after = os.stat(out / image)
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), f"{image} was written again"
    reference = tmp_path / "reference"
    build_bundle(config(reference, photos))
    assert images_of(out) == images_of(reference)
    assert files_in(out / "images") == files_in(reference / "images")
    assert not list((out / "images").glob(".tmp-*"))
    np.testing.assert_allclose(Bundle.load(out).embeddings, Bundle.load(reference).embeddings, atol=1e-5)


def test_url_rows_keep_their_url_and_get_no_thumbnail() -> None:
    row = {"photo": {"id": "x1", "image_url": "https://images.unsplash.com/photo-1", "url": None}}
    item = unsplash_item(row)
    assert item is not None and item.thumbnail is None and item.metadata["image"] == row["photo"]["image_url"]


def test_the_demo_bundle_keeps_its_relative_pictures() -> None:
    bundle = Bundle.load(DEMO_INDEX_DIR)
    images = pq.read_table(DEMO_INDEX_DIR / "metadata.parquet").column("image").to_pylist()
    assert all(image.startswith("images/") and (DEMO_INDEX_DIR / image).is_file() for image in images)
    assert Path(bundle.catalog.hit(0, 1.0).image).resolve().is_relative_to(DEMO_INDEX_DIR.resolve())
