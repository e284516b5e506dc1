"""build_index.py end to end, offline: image folders, parquet rows on a loopback server with faults,
resume (in process and after SIGKILL), incremental builds and index rebuilds."""

from __future__ import annotations

import io
import json
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
from PIL import Image, ImageDraw

import build_index
from search.build.fetch import FetchConfig
from search.build.pipeline import BuildConfig, BuildError, build_bundle
from search.build.sources import SourceConfig
from search.bundle import store
from search.bundle.colour import PALETTE
from search.bundle.metadata import IMAGE_RULE
from search.bundle.store import Bundle
from search.config import REPO_ROOT, EncoderSpec, EngineConfig, HnswParams
from search.errors import BundleError, EncoderLoadError, SearchError
from search.model.encoder import same_model
from tests.conftest import DEMO_MODEL_DIR, DEMO_SPEC, tiny_model_dir
from tests.loopback import LoopbackServer
from tests.test_sources import jpeg_bytes, write_not_utf8, write_unsplash_parquet

# fault mode -> does the item end up in the bundle?
FAULTS = {"404": False, "500": False, "slow": False, "corrupt": False, "html": False, "too-large": False,
          "500-once": True, "429-once": True, "reset-once": True, "octet": True}
GOOD_PLAIN = 28  # plus the four transient faults: 32 good rows of 40
FAST_FETCH = FetchConfig(width=384, timeout_s=0.5, retries=1, backoff_s=0.01, max_bytes=200_000,
                         allow_private_hosts=True)  # the CDN twin is on loopback
SHAPES = {"red-circle": ((220, 30, 30), "circle"), "blue-square": ((30, 70, 225), "square"),
          "green-triangle": ((30, 170, 50), "triangle")}


def shape_picture(colour: tuple[int, int, int], shape: str, offset: int) -> Image.Image:
    image = Image.new("RGB", (128, 128), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    box = (18 + offset, 18 + offset, 100 + offset // 2, 100 + offset // 2)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(64, 14 + offset), (112, 110), (16, 110)], fill=colour)
    return image


def huge_png() -> bytes:
    """A small PNG file that declares 30000×30000 pixels (a decompression bomb by its header)."""
    import tempfile

    from tests.odd_images import huge_declared_png

    with tempfile.TemporaryDirectory() as folder:
        return huge_declared_png(Path(folder), 30_000, 30_000).read_bytes()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(slow_s=2.0, large_bytes=300_000) as running:
        yield running


def served_rows(server: LoopbackServer, folder: Path) -> tuple[Path, list[str]]:
    """A 40-row parquet in the Unsplash schema whose URLs point at `server`; returns it and the good ids."""
    urls, good = [], []
    for number in range(GOOD_PLAIN):
        colour = ((number * 53) % 256, (number * 101) % 256, (number * 29) % 256)
        server.add(f"p{number}.jpg", jpeg_bytes(colour, (64 + number, 48 + number)))
        urls.append((f"good-{number:02d}", server.url(f"p{number}.jpg")))
    for number, fault in enumerate(FAULTS):
        server.add(f"f{number}.jpg", jpeg_bytes((number * 20, 90, 200)))
        urls.append((f"fault-{fault}", server.url(f"f{number}.jpg", fault)))
    server.add("huge.png", huge_png(), "image/png")
    urls.append(("fault-huge-dims", server.url("huge.png")))
    server.add("dup.jpg", jpeg_bytes((1, 2, 3)))
    urls.append(("good-00", server.url("dup.jpg")))  # a repeated id is taken once (the first row)
    good = [photo_id for photo_id, _ in urls[:GOOD_PLAIN]]
    good += [f"fault-{fault}" for fault, survives in FAULTS.items() if survives]
    return write_unsplash_parquet(folder / "rows.parquet", urls), good


def url_config(out: Path, rows: Path, **changes: object) -> BuildConfig:
    config = BuildConfig(out, SourceConfig(data_files=str(rows)), DEMO_SPEC, "cpu", batch_size=4, shard_size=6,
                         workers=4, hnsw=HnswParams(m=8, ef_construction=64, ef_search=32), fetch=FAST_FETCH,
                         progress=False)
    return replace(config, **changes)


def vectors_by_id(root: Path) -> dict[str, np.ndarray]:
    bundle = Bundle.load(root)
    ids = pq.read_table(root / "metadata.parquet").column("id").to_pylist()
    return dict(zip(ids, bundle.embeddings, strict=True))


def test_url_build_keeps_good_rows_and_lists_failures(server: LoopbackServer, tmp_path: Path) -> None:
    rows, good = served_rows(server, tmp_path)
    manifest = build_bundle(url_config(tmp_path / "out", rows))
    metadata = pq.read_table(tmp_path / "out" / "metadata.parquet").to_pylist()
    assert manifest.count == len(good) == 32
    assert sorted(row["id"] for row in metadata) == sorted(good)
    failures = {row["id"]: row["reason"] for row in pq.read_table(tmp_path / "out" / "failures.parquet").to_pylist()}
    assert manifest.info.failures == len(failures) == 7
    assert set(failures) == {f"fault-{fault}" for fault, ok in FAULTS.items() if not ok} | {"fault-huge-dims"}
    assert "HTTP 404" in failures["fault-404"] and "timed out" in failures["fault-slow"]
    assert "not an image" in failures["fault-html"] and "over the limit" in failures["fault-too-large"]
    assert "too large to decode" in failures["fault-huge-dims"] and "image format" in failures["fault-corrupt"]
    assert "failures.parquet" in manifest.files
    first = next(row for row in metadata if row["id"] == "good-01")
    assert first["page_url"] == "https://unsplash.com/photos/good-01" and first["photographer"] == "Ana Número 1"
    assert first["image"].endswith("/ok/p1.jpg") and first["width"] == 4001
    # Columns for filters: from the row (date, place, stats) and from the decoded picture (rgb 53,101,29).
    assert first["date"] == "2020-01-01T00:00:00" and first["country"] == "Norway" and first["downloads"] == 10
    assert first["colour"] == "green" and first["colour_hex"].startswith("#") and first["keywords"] == "thing"
    hit = Bundle.load(tmp_path / "out").catalog.hit(0, 1.0)
    assert hit.colour in PALETTE and hit.camera == "Canon" and hit.date == "2020-01-01T00:00:00Z"
    assert server.hits["/ok/dup.jpg"] == 0


def test_rows_the_bundle_would_refuse_are_failures_and_the_build_goes_on(server: LoopbackServer,
                                                                       tmp_path: Path) -> None:
    for number in range(6):
        server.add(f"r{number}.jpg", jpeg_bytes((number * 40, 120, 200 - number * 30)))
    urls = [(f"r{number}", server.url(f"r{number}.jpg")) for number in range(6)]
    urls[1] = ("r1", urls[1][1].replace("http://", "HTTP://"))  # a scheme is case-blind: kept, as http://
    urls[2] = ("r2", urls[2][1].replace("r2.jpg", "r 2.jpg"))
    urls[3] = ("r3", "https:///r3.jpg")
    rows = write_unsplash_parquet(tmp_path / "rows.parquet", urls, row_group_size=4)
    write_not_utf8(rows, row=4)
    config = url_config(tmp_path / "out", rows)
    for run in (config, config, replace(config, retry_failed=True)):  # then resumed, then the failures retried
        manifest = build_bundle(run)
        failures = {row["id"]: row["reason"] for row in pq.read_table(tmp_path / "out" / "failures.parquet")
                    .to_pylist()}
        assert failures == {"r2": IMAGE_RULE, "r3": IMAGE_RULE, "r4": "its text is not valid UTF-8"}
        bundle = Bundle.load(tmp_path / "out")
        assert manifest.count == len(bundle.catalog) == 3 and manifest.info.failures == 3
        assert {bundle.catalog.item_id(row) for row in range(3)} == {"r0", "r1", "r5"}
    assert Bundle.load(tmp_path / "out").catalog.hit(bundle.catalog.row_of("r1"), 1.0).image.startswith("http://")
    assert server.hits == {"/ok/r0.jpg": 1, "/ok/r1.jpg": 1, "/ok/r5.jpg": 1}  # refused rows are never fetched


def test_rerunning_with_a_higher_limit_resumes_without_refetching(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    first = build_bundle(url_config(tmp_path / "out", rows, limit=10))
    assert first.count + first.info.failures == 10
    second = build_bundle(url_config(tmp_path / "out", rows, limit=20))
    assert second.count == 20
    assert all(server.hits[f"/ok/p{number}.jpg"] == 1 for number in range(20))
    again = build_bundle(url_config(tmp_path / "out", rows, limit=20))
    assert sum(server.hits.values()) == 20  # done: nothing fetched, the same data written again
    same = ("embeddings.npy", "metadata.parquet", "failures.parquet")  # hnswlib inserts in parallel: graphs vary
    assert {name: again.files[name] for name in same} == {name: second.files[name] for name in same}


def test_retry_failed_tries_recorded_failures_again(server: LoopbackServer, tmp_path: Path) -> None:
    server.add("x.jpg", jpeg_bytes((10, 200, 10)))
    server.add("y.jpg", jpeg_bytes((200, 10, 10)))
    rows = write_unsplash_parquet(tmp_path / "rows.parquet", [("x", server.url("x.jpg", "500-once")),
                                                              ("y", server.url("y.jpg"))])
    config = url_config(tmp_path / "out", rows, fetch=replace(FAST_FETCH, retries=0))
    assert build_bundle(config).info.failures == 1
    assert build_bundle(config).info.failures == 1 and server.hits["/500-once/x.jpg"] == 1  # kept as failed
    again = build_bundle(replace(config, retry_failed=True))
    assert (again.count, again.info.failures) == (2, 0) and server.hits["/500-once/x.jpg"] == 2
    assert pq.read_table(tmp_path / "out" / "failures.parquet").num_rows == 0


def test_items_fetched_before_a_stream_breaks_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import search.build.pipeline
    from search.build.sources import SourceError, folder_items

    photos = tmp_path / "photos"
    write_shapes(photos, per_shape=2)

    def breaking_stream(config: SourceConfig) -> Iterator:
        yield from list(folder_items(photos))[:5]
        raise SourceError("connection to the data set dropped")

    monkeypatch.setattr(search.build.pipeline, "iter_items", breaking_stream)
    config = BuildConfig(tmp_path / "out", SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", 2, shard_size=100,
                         progress=False)
    with pytest.raises(SourceError, match="dropped"):
        build_bundle(config)
    monkeypatch.undo()
    assert build_bundle(config).count == 6
    shards = sorted((tmp_path / "out" / ".build" / "shards").glob("*.parquet"))
    assert [pq.read_table(path).num_rows for path in shards] == [5, 1]  # the second run only fetched the rest


def test_resuming_with_another_model_is_refused(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "out", rows, limit=4))
    other = EncoderSpec("ViT-B-32", None)
    with pytest.raises(BuildError, match="other encoder"):
        build_bundle(url_config(tmp_path / "out", rows, limit=4, encoder=other))


def test_a_start_that_failed_does_not_block_the_corrected_command(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    with pytest.raises(EncoderLoadError):
        build_bundle(url_config(tmp_path / "out", rows, limit=4, encoder=EncoderSpec("local-dir:/no/such/model")))
    assert build_bundle(url_config(tmp_path / "out", rows, limit=4)).count > 0


def test_nothing_embedded_is_an_error_with_advice(server: LoopbackServer, tmp_path: Path) -> None:
    server.add("x.jpg", b"x")
    rows = write_unsplash_parquet(tmp_path / "rows.parquet", [("a", server.url("x.jpg", "404"))])
    code = build_index.main(["--data-files", str(rows), "--out", str(tmp_path / "out"), "--model",
                             f"local-dir:{DEMO_MODEL_DIR}", "--no-progress", "--allow-private-hosts"])
    assert code == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


def write_shapes(folder: Path, per_shape: int = 8) -> None:
    for name, (colour, shape) in SHAPES.items():
        for number in range(per_shape):
            sub = folder / ("nested/deeper" if number % 3 == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            suffix = "png" if number % 2 else "jpg"
            shape_picture(colour, shape, number * 2).save(sub / f"{name} {number} ✓.{suffix}")


def test_images_dir_build_finds_blue_squares_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    write_shapes(photos)
    (photos / "readme.txt").write_text("not a picture")
    (photos / "fake.jpg").write_text("a text file named .jpg")
    args = ["--images-dir", str(photos), "--out", str(out), "--model", f"local-dir:{DEMO_MODEL_DIR}",
            "--batch-size", "5", "--shard-size", "7", "--no-progress"]
    assert build_index.main(args) == 0
    assert "24 items, 1 failures" in capsys.readouterr().out
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert [row["id"] for row in failures] == ["fake.jpg"] and "text file" in failures[0]["reason"]
    from search import cli

    assert cli.main(["a blue square", "--index", str(out), "--json", "--top-k", "8"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [hit["id"].split("/")[-1].split(" ")[0] for hit in hits] == ["blue-square"] * 8
    assert all(Path(hit["image"]).is_file() for hit in hits)
    assert all(hit["width"] > 0 and hit["height"] > 0 and hit["colour"] in PALETTE for hit in hits)


def test_a_custom_text_tower_builds_by_flags_alone(tmp_path: Path) -> None:
    """Multilingual open_clip models (xlm-roberta-*) are CustomTextCLIP: their text tower is not trimmed."""
    model = tiny_model_dir(tmp_path / "custom-text", custom_text=True)
    photos = tmp_path / "photos"
    write_shapes(photos, per_shape=2)
    out = tmp_path / "out"
    assert build_index.main(["--images-dir", str(photos), "--out", str(out), "--model", f"local-dir:{model}",
                             "--device", "cpu", "--no-progress"]) == 0
    from search.query.engine import load_engine

    engine = load_engine(EngineConfig(index=str(out), device="cpu"))
    assert not engine.encoder.can_trim_text and engine.bundle.manifest.dim == 32
    assert len(engine.search_text("a red circle", top_k=3, threshold=-1.0)) == 3  # random weights


@pytest.mark.parametrize(("flags", "expected"), [
    (["--model", "xlm-roberta-base-ViT-B-32", "--pretrained", "laion5b_s13b_b90k"],
     EncoderSpec("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")),
    (["--model", "ViT-B-32", "--pretrained", ""], EncoderSpec("ViT-B-32", None)),
    (["--model", "ViT-B-32", "--pretrained", "none"], EncoderSpec("ViT-B-32", None)),
    (["--model", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"],
     EncoderSpec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)),
    ([], None),
])
def test_model_flags_map_to_an_encoder_spec(flags: list[str], expected: EncoderSpec | None) -> None:
    args = build_index.build_parser().parse_args(["--out", "x", *flags])
    assert build_index.encoder_spec(args) == expected


def test_a_builtin_model_without_a_tag_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_index.main(["--out", str(tmp_path), "--model", "ViT-B-32"]) == 1
    assert "--pretrained none for random weights" in capsys.readouterr().err


def test_rebuild_index_reuses_embeddings_without_the_model(server: LoopbackServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "a", rows, limit=12))
    hits = sum(server.hits.values())
    from search.model.encoder import ClipEncoder

    monkeypatch.setattr(ClipEncoder, "load", lambda *a, **k: pytest.fail("rebuild must not load a model"))
    for out in ("b", "a"):  # into a new folder, then in place
        assert build_index.main(["--from", str(tmp_path / "a"), "--out", str(tmp_path / out), "--rebuild-index",
                                 "--hnsw-m", "12", "--ef-construction", "40", "--ef-search", "20"]) == 0
        bundle = Bundle.load(tmp_path / out)
        assert bundle.manifest.info.hnsw == HnswParams(12, 40, 20)
    assert sum(server.hits.values()) == hits
    np.testing.assert_array_equal(Bundle.load(tmp_path / "b").embeddings, Bundle.load(tmp_path / "a").embeddings)
    assert Bundle.load(tmp_path / "b").manifest.info.failures == Bundle.load(tmp_path / "a").manifest.info.failures
    assert Bundle.load(tmp_path / "b").manifest.ui == Bundle.load(tmp_path / "a").manifest.ui is not None


def test_a_build_verifies_its_bundle_once_and_writes_its_manifest_once(server: LoopbackServer, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rows, _ = served_rows(server, tmp_path)
    loads, manifests = [], []
    real_load, real_write = Bundle.load.__func__, store.atomic_write

    def counted_write(path: Path, write: object) -> None:
        if path.name == "manifest.json":
            manifests.append(path)
        real_write(path, write)

    monkeypatch.setattr(Bundle, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real_load(cls, *a, **k)))
    monkeypatch.setattr(store, "atomic_write", counted_write)
    manifest = build_bundle(url_config(tmp_path / "out", rows, limit=12))
    assert len(loads) == 1 and len(manifests) == 1
    assert manifest.ui is not None and manifest.ui.examples  # measured before the one manifest was written
    assert Bundle.load(tmp_path / "out").manifest.ui == manifest.ui


def test_rebuild_index_repairs_a_broken_graph(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "a", rows, limit=12))
    graph = tmp_path / "a" / "index.hnsw"
    graph.write_bytes(graph.read_bytes()[:-100])  # truncated: Bundle.load refuses it, and says to rebuild
    with pytest.raises(BundleError, match="index.hnsw"):
        Bundle.load(tmp_path / "a")
    assert build_index.main(["--from", str(tmp_path / "a"), "--out", str(tmp_path / "a"), "--rebuild-index"]) == 0
    assert len(Bundle.load(tmp_path / "a").index) == 12 - Bundle.load(tmp_path / "a").manifest.info.failures


def test_rebuild_index_needs_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_index.main(["--out", str(tmp_path), "--rebuild-index"]) == 1
    assert "needs --from" in capsys.readouterr().err


def test_incremental_build_adds_only_new_items(server: LoopbackServer, tmp_path: Path) -> None:
    rows, good = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "a", rows, limit=12))
    before = vectors_by_id(tmp_path / "a")
    fetched = dict(server.hits)
    manifest = build_bundle(url_config(tmp_path / "b", rows, encoder=None, base=str(tmp_path / "a")))
    after = vectors_by_id(tmp_path / "b")
    assert sorted(after) == sorted(good) and manifest.count == len(good)
    assert all(np.array_equal(after[item], vector) for item, vector in before.items())
    assert all(server.hits[path] == count for path, count in fetched.items() if path.startswith("/ok/"))
    grown, base = Bundle.load(tmp_path / "b"), Bundle.load(tmp_path / "a")
    assert same_model(grown.encoder_spec, base.encoder_spec)  # each carries its own copy of the one model
    assert grown.manifest.info.encoder == base.manifest.info.encoder == EncoderSpec("local-dir:model")


def test_from_into_a_folder_with_another_build_is_refused_without_a_trace(server: LoopbackServer,
                                                                         tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "a", rows, limit=4))
    build_bundle(url_config(tmp_path / "b", rows, limit=4))
    with pytest.raises(BuildError, match="other base"):
        build_bundle(url_config(tmp_path / "b", rows, encoder=None, base=str(tmp_path / "a")))
    assert not (tmp_path / "b" / ".build" / "base").exists()


def test_incremental_build_refuses_another_model(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    build_bundle(url_config(tmp_path / "a", rows, limit=4))
    with pytest.raises(BuildError, match="leave out --model"):
        build_bundle(url_config(tmp_path / "b", rows, encoder=EncoderSpec("ViT-B-32", None), base=str(tmp_path / "a")))


def _shard_count(out: Path) -> int:
    return len(list((out / ".build" / "shards").glob("shard-*.parquet")))


def _run_until(command: list[str], out: Path, shards: int) -> None:
    """Start the build, SIGKILL it once `shards` shards are committed, and check it really was mid-run."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _shard_count(out) < shards and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"


@pytest.mark.slow
def test_sigkill_mid_build_then_resume_gives_every_item_exactly_once(server: LoopbackServer, tmp_path: Path) -> None:
    rows, good = served_rows(server, tmp_path)
    server.delay_s = 0.06  # about 1.5 s of downloads: long enough to kill twice
    out = tmp_path / "killed"
    command = [sys.executable, "build_index.py", "--data-files", str(rows), "--out", str(out), "--model",
               f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--batch-size", "2", "--shard-size", "3",
               "--workers", "2", "--timeout", "0.5", "--retries", "1", "--no-progress", "--allow-private-hosts"]
    _run_until(command, out, shards=2)
    _run_until(command, out, shards=_shard_count(out) + 3)
    finished = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    server.delay_s = 0.0
    build_bundle(url_config(tmp_path / "reference", rows))
    resumed, reference = vectors_by_id(out), vectors_by_id(tmp_path / "reference")
    ids = pq.read_table(out / "metadata.parquet").column("id").to_pylist()
    assert sorted(ids) == sorted(good) and len(ids) == len(set(ids))
    assert sorted(reference) == sorted(resumed)
    for item, vector in reference.items():
        np.testing.assert_allclose(resumed[item], vector, atol=1e-5)
    failed = pq.read_table(out / "failures.parquet").column("id").to_pylist()
    assert len(failed) == len(set(failed)) == json.loads((out / "manifest.json").read_text())["failures"] == 7
    assert all(server.hits[f"/ok/p{number}.jpg"] <= 3 for number in range(GOOD_PLAIN))


def test_progress_bar_reports_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    write_shapes(photos, per_shape=2)
    (photos / "bad.png").write_bytes(b"\x89PNG broken")
    build_bundle(BuildConfig(tmp_path / "out", SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", 4))
    err = capsys.readouterr().err
    assert "img/s" in err and "failed=1" in err and "ok=6" in err and "7/7" in err


def test_images_dir_rows_point_at_a_thumbnail_inside_the_bundle(tmp_path: Path) -> None:
    """Images-dir items record a bundle-relative thumbnail (small pictures are not enlarged), never the file."""
    photos = tmp_path / "photos"
    photos.mkdir()
    buffer = io.BytesIO()
    shape_picture((30, 70, 225), "square", 0).save(buffer, "JPEG")
    (photos / "one.jpg").write_bytes(buffer.getvalue())
    build_bundle(BuildConfig(tmp_path / "out", SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", progress=False))
    row = pq.read_table(tmp_path / "out" / "metadata.parquet").to_pylist()[0]
    assert row["id"] == "one.jpg" and row["image"].startswith("images/") and row["image"].endswith(".jpg")
    with Image.open(tmp_path / "out" / row["image"]) as thumbnail, Image.open(buffer) as original:
        assert thumbnail.size == original.size == (128, 128)
        difference = np.abs(np.asarray(thumbnail, np.int16) - np.asarray(original.convert("RGB"), np.int16))
        assert difference.mean() < 3  # one more JPEG round trip at quality 85


def test_a_shard_write_cut_short_is_ignored_then_overwritten(tmp_path: Path) -> None:
    """What SIGKILL leaves mid-write: vectors without their rows file, and a temp file. Neither counts."""
    from search.build.shards import STATUS_FAILED, STATUS_OK, ShardStore

    store = ShardStore(tmp_path, dim=2)
    store.write([{"id": "a", "status": STATUS_OK, "reason": None},
                 {"id": "b", "status": STATUS_FAILED, "reason": "HTTP 404"}], np.ones((1, 2), np.float32))
    np.save(tmp_path / "shard-000001.npy", np.zeros((5, 2), np.float32))  # its parquet never got written
    (tmp_path / ".shard-000001.tmp.parquet").write_bytes(b"half a file")
    resumed = ShardStore(tmp_path, dim=2)
    assert resumed.done_ids() == {"a", "b"} and resumed.done_ids(include_failed=False) == {"a"}
    resumed.write([{"id": "c", "status": STATUS_OK, "reason": None}], np.full((1, 2), 2, np.float32))
    collected = resumed.collect()
    assert collected.metadata.column("id").to_pylist() == ["a", "c"]
    np.testing.assert_array_equal(collected.embeddings, [[1, 1], [2, 2]])
    assert collected.failures.to_pylist() == [{"id": "b", "image": None, "reason": "HTTP 404"}]


def test_downloads_run_concurrently_ahead_of_the_model(server: LoopbackServer, tmp_path: Path) -> None:
    rows, _ = served_rows(server, tmp_path)
    server.delay_s = 0.3  # 16 items one after another would take 4.8 s
    started = time.monotonic()
    assert build_bundle(url_config(tmp_path / "out", rows, limit=16, workers=8)).count == 16
    assert time.monotonic() - started < 3.0


def test_a_crash_while_writing_the_bundle_is_finished_by_a_rerun(server: LoopbackServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import search.build.finalize

    rows, good = served_rows(server, tmp_path)
    real_write = search.build.finalize.write_bundle

    def crash_after_the_vectors(root: Path, embeddings: np.ndarray, *rest: object) -> None:
        np.save(root / "embeddings.npy", embeddings[:3])  # a partly replaced bundle, no manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(search.build.finalize, "write_bundle", crash_after_the_vectors)
    with pytest.raises(KeyboardInterrupt):
        build_bundle(url_config(tmp_path / "out", rows))
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(search.build.finalize, "write_bundle", real_write)
    fetched = sum(server.hits.values())
    assert build_bundle(url_config(tmp_path / "out", rows)).count == len(good)
    assert sum(server.hits.values()) == fetched  # everything came from the shards
    assert sorted(vectors_by_id(tmp_path / "out")) == sorted(good)


def test_data_set_rows_cannot_name_local_files(server: LoopbackServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(secret)  # a readable picture: refused for where it is, not what
    server.add("ok.jpg", jpeg_bytes((200, 10, 10)))
    urls = [("ok", server.url("ok.jpg")), ("local", str(secret)), ("proc", "/proc/self/environ"),
            ("zero", "/dev/zero"), ("file-url", secret.as_uri())]
    manifest = build_bundle(url_config(tmp_path / "out", write_unsplash_parquet(tmp_path / "rows.parquet", urls)))
    failures = {row["id"]: row["reason"] for row in pq.read_table(tmp_path / "out" / "failures.parquet").to_pylist()}
    assert manifest.count == 1 and set(failures) == {"local", "proc", "zero", "file-url"}
    # Refused at the source by the bundle's image rule, before the fetcher (which refuses them too: test_fetch.py).
    assert all(reason == IMAGE_RULE for reason in failures.values())


def test_a_shard_written_but_not_yet_renamed_is_not_committed(tmp_path: Path) -> None:
    """SIGKILL between a shard's write and its rename leaves a hidden temporary file: its items are not done."""
    from search.build.shards import STATUS_OK, ShardStore

    store = ShardStore(tmp_path, dim=2)
    store.write([{"id": "kept", "status": STATUS_OK, "reason": None}], np.ones((1, 2), np.float32))
    table = pq.read_table(tmp_path / "shard-000000.parquet")
    pq.write_table(table.set_column(0, "id", pa.array(["half-written"])), tmp_path / ".shard-000001.0a1b.tmp.parquet")
    assert ShardStore(tmp_path, dim=2).done_ids() == {"kept"}


@pytest.mark.parametrize("flags", [
    ["--images-dir", "no-such-folder", "--model", f"local-dir:{DEMO_MODEL_DIR}"],  # a source that is not there
    ["--images-dir", str(DEMO_MODEL_DIR), "--model", "local-dir:no-such-model"],  # a model that cannot load
], ids=["missing-folder", "missing-model"])
def test_a_build_that_cannot_start_creates_nothing(tmp_path: Path, flags: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert build_index.main(["--out", str(out), "--device", "cpu", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "img" not in captured.err  # no progress bar drawn
    assert not out.exists()


def test_a_build_failing_every_item_for_one_reason_says_that_reason(server: LoopbackServer, tmp_path: Path) -> None:
    rows = write_unsplash_parquet(tmp_path / "rows.parquet", [(f"p{n}", server.url("p.jpg")) for n in range(3)])
    server.add("p.jpg", jpeg_bytes((10, 20, 30)))
    guarded = replace(FAST_FETCH, allow_private_hosts=False)  # the loopback twin without --allow-private-hosts
    with pytest.raises(SearchError, match="all 3 failed with the same reason: refused: the host is not a public "
                                          r"address .*; --allow-private-hosts allows it"):
        build_bundle(url_config(tmp_path / "out", rows, fetch=guarded))


def test_a_model_folder_without_its_prefix_points_at_local_dir(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert build_index.main(["--out", str(tmp_path / "out"), "--model", str(DEMO_MODEL_DIR)]) == 1
    assert f"name it --model local-dir:{DEMO_MODEL_DIR}" in capsys.readouterr().err
