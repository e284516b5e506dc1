"""build_index.py --ray on a local Ray instance (2 CPUs, no dashboard, offline): the same bundle as the
single-process build from the loopback parquet fixture, faults included, and a resume after SIGKILL."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

import build_index
from search.build.pipeline import BuildError, build_bundle
from search.build.ray_build import RayOptions, build_bundle_on_ray
from search.config import REPO_ROOT
from tests.conftest import DEMO_MODEL_DIR
from tests.loopback import LoopbackServer
from tests.module_imports import modules_imported_on_load
from tests.test_build import served_rows, url_config

FLAGS = ["--model", f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--timeout", "0.5", "--retries", "1",
         "--image-width", "384", "--max-bytes", "200000", "--allow-private-hosts", "--no-progress",
         "--hnsw-m", "8", "--ef-construction", "64", "--ef-search", "32"]  # the same build as url_config's


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """One local Ray instance for the module (start-up costs seconds); yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackServer, Path, Path]]:
    """The loopback CDN twin with test_build's 40 rows (faults included), and the single-process bundle."""
    folder = tmp_path_factory.mktemp("ray-build")
    with LoopbackServer(slow_s=2.0, large_bytes=300_000) as server:
        rows, _ = served_rows(server, folder)
        build_bundle(url_config(folder / "reference", rows))
        yield server, rows, folder / "reference"


def bundle_rows(root: Path) -> tuple[list[str], np.ndarray, list[dict], dict]:
    """Ids in bundle order, their vectors (checked on load), the failures and the manifest's numbers."""
    from search.bundle.store import Bundle

    bundle = Bundle.load(root)
    ids = pq.read_table(root / "metadata.parquet").column("id").to_pylist()
    failures = sorted(pq.read_table(root / "failures.parquet").to_pylist(), key=lambda row: row["id"])
    return ids, bundle.embeddings, failures, {"count": bundle.manifest.count, **_numbers(root)}


def _numbers(root: Path) -> dict:
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    return {key: manifest[key] for key in ("failures", "source", "dim")}


def assert_same_bundle(built: Path, reference: Path) -> None:
    ids, vectors, failures, numbers = bundle_rows(built)
    want_ids, want_vectors, want_failures, want_numbers = bundle_rows(reference)
    assert ids == want_ids  # same items, same order
    np.testing.assert_allclose(vectors, want_vectors, atol=1e-5)
    assert failures == want_failures and numbers == want_numbers
    assert pq.read_table(built / "metadata.parquet").equals(pq.read_table(reference / "metadata.parquet"))


def test_a_ray_build_killed_mid_way_and_resumed_gives_the_single_process_bundle(local_ray: str, fixture,
                                                                                 tmp_path: Path) -> None:
    # One test for both claims: each Ray run costs seconds of worker start-up (torch imports, model load).
    server, rows, reference = fixture
    out = tmp_path / "killed"
    args = ["--data-files", str(rows), "--out", str(out), "--batch-size", "2", "--shard-size", "2",
            "--workers", "2", *FLAGS]
    server.delay_s = 0.2  # slow enough that the driver is killed with most items still to do
    try:
        process = subprocess.Popen([sys.executable, "build_index.py", "--ray", local_ray, *args], cwd=REPO_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shards = out / ".build" / "shards"
        deadline = time.monotonic() + 90
        while not any(shards.glob("shard-*.parquet")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, err.decode()[-2000:]
    finally:
        server.delay_s = 0.0
    # The store's own commit rule: a shard is committed once renamed to shard-N.parquet. A hidden temporary shard
    # (written, not yet renamed when the kill came) is not: the resume fetches its items again, and must.
    committed = pa.concat_tables(pq.read_table(path) for path in shards.glob("shard-*.parquet")).column("id")
    committed = committed.to_pylist()
    assert 2 <= len(committed) <= 20 and not (out / "manifest.json").exists()  # the slow fault is row 31
    before = server.hits.copy()
    # Resumed on this module's Ray instance, in one Ray Data job (each job starts its actors: seconds each).
    assert build_index.main(["--ray", *args]) == 0
    assert_same_bundle(out, reference)  # same items and order, vectors within 1e-5, failures, metadata
    fetched = server.hits - before
    assert not any(fetched[f"/ok/p{int(item[5:])}.jpg"] for item in committed if item.startswith("good-"))
    assert "/ok/dup.jpg" not in fetched  # a repeated id is taken once
    assert fetched["/slow/f2.jpg"] == 2  # the same fetcher rules in the Ray tasks: timeout, one retry


def test_cuda_on_a_cluster_without_gpus_is_refused(local_ray: str, fixture, tmp_path: Path) -> None:
    _, rows, _ = fixture
    with pytest.raises(BuildError, match="no GPU; use --device auto or cpu"):
        build_bundle_on_ray(url_config(tmp_path / "out", rows, device="cuda"), RayOptions())


def test_ray_flag_parses_an_optional_address() -> None:
    parse = build_index.build_parser().parse_args
    assert parse(["--out", "x", "--ray"]).ray == build_index.LOCAL_RAY
    assert parse(["--ray", "ray://head:10001", "--out", "x"]).ray == "ray://head:10001"
    assert parse(["--out", "x"]).ray is None
    assert build_index.main(["--out", "x", "--from", "y", "--rebuild-index", "--ray"]) == 1


def test_the_ray_stages_run_in_process_on_an_image_folder(demo_encoder, tmp_path: Path) -> None:
    """The task and actor functions themselves, without Ray: local files, thumbnails, a failed row's zeros."""
    from search.build.fetch import ImageFetcher
    from search.build.pipeline import _Pipeline
    from search.build.ray_build import _Embedder, _prepare_batch, _stage
    from search.build.shards import ShardStore
    from search.build.sources import SourceConfig, folder_items
    from tests.test_build import SHAPES, shape_picture

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, (colour, shape) in SHAPES.items():
        shape_picture(colour, shape, 4).save(photos / f"{name}.png")
    (photos / "0-broken.jpg").write_bytes(b"not a picture")
    items = list(folder_items(photos))
    config = replace(url_config(tmp_path / "out", tmp_path), source=SourceConfig(images_dir=photos))
    pipeline = _Pipeline(demo_encoder, ImageFetcher(config.fetch), ShardStore(tmp_path / "shards", 1), config)
    stage = _stage(pipeline, "cpu")
    batch = {"position": np.arange(len(items)), "id": np.array([item.id for item in items]),
             "location": np.array([item.location for item in items]),
             "thumbnail": np.array([item.thumbnail for item in items])}
    prepared = _prepare_batch(batch, stage)
    assert list(prepared["reason"][1:]) == ["", "", ""] and "image" in prepared["reason"][0]  # 0-broken.jpg sorts first
    assert not prepared["pixels"][0].any() and prepared["pixels"].shape[1:] == stage.shape
    assert all((tmp_path / "out" / item.thumbnail).is_file() for item in items[1:])
    assert not (tmp_path / "out" / items[0].thumbnail).exists()
    embedded = _Embedder(stage)(prepared)
    images = [Image.open(photos / item.id).convert("RGB") for item in items[1:]]
    np.testing.assert_allclose(embedded["vector"][1:], demo_encoder.encode_images(images), atol=1e-5)
    assert not embedded["vector"][0].any()


def test_ray_is_imported_only_when_a_build_asks_for_it() -> None:
    """The Space installs requirements.txt alone: no module of the app or the build may import Ray on load."""
    for path, packages in modules_imported_on_load().items():
        assert "ray" not in packages, path
    assert "import ray" in (REPO_ROOT / "search" / "build" / "ray_build.py").read_text()  # inside its functions
