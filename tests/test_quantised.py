"""Int8 towers that prove themselves: the agreement gate, the int8 text tower and its cache, the build's image gate."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from search.bundle.store import Bundle
from search.config import DEMO_INDEX_DIR, EngineConfig
from search.errors import SearchError
from search.model import onnx_text
from search.model.encoder import ClipEncoder
from search.model.onnx_text import (
    INT8_FILE,
    MODEL_FILE,
    OnnxTextTower,
    bundle_probes,
    choose_text_precision,
    load_int8_text,
    load_onnx_text,
    text_precision_record,
)
from search.model.quantised import (
    GENERIC_PROBES,
    MIN_RECALL,
    GatedImageTower,
    Int8RefusedError,
    agreement,
    exact_top_rows,
    probe_texts,
    unit_rows,
)
from tests.test_onnx_text import fresh


def crowded(vectors: np.ndarray, copies: int = 40, seed: int = 0) -> np.ndarray:
    """A collection no int8 tower can rank as fp32 does: near-copies of one vector that differ only in directions
    the fp32 probe vectors have no share in, so fp32 scores them all alike and int8's rounding decides the order."""
    span, _ = np.linalg.qr(vectors.T.astype(np.float64))
    noise = np.random.default_rng(seed).standard_normal((copies, vectors.shape[1]))
    noise -= (noise @ span) @ span.T
    return unit_rows((vectors.mean(axis=0) + 1e-3 * noise).astype(np.float32))


@pytest.fixture(scope="module")
def demo_bundle() -> Bundle:
    return Bundle.load(DEMO_INDEX_DIR)


@pytest.fixture(scope="module")
def demo_towers(demo_encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OnnxTextTower]:
    """One fp32 export and its int8 copy of the demo text tower, shared by this module's tests."""
    cache = tmp_path_factory.mktemp("onnx")
    encoder = fresh(demo_encoder)
    load_int8_text(encoder, load_onnx_text(encoder, cache))
    return cache, load_onnx_text(fresh(demo_encoder), cache)


def index_top_rows(bundle: Bundle):
    return lambda vectors, k: np.stack([bundle.index.query(vector, k)[0] for vector in vectors])


def test_agreement_counts_shared_rows_and_the_widest_cosine_gap() -> None:
    reference = unit_rows(np.eye(3, 4, dtype=np.float32))
    turned = unit_rows(reference + np.float32(0.1) * np.eye(3, 4, 1, dtype=np.float32))
    tops = np.array([[0, 1], [2, 3], [4, 5]])
    figures = agreement(tops, np.array([[1, 0], [2, 9], [7, 8]]), reference, turned)
    assert figures.recall == pytest.approx((2 + 1 + 0) / 6) and figures.probes == 3 and figures.k == 2
    assert figures.max_cosine_diff == pytest.approx(1 - 1 / np.sqrt(1.01), abs=1e-6)
    assert not figures.passes() and agreement(tops, tops, reference, reference).passes()
    with pytest.raises(ValueError, match="same non-empty probes"):
        agreement(tops, tops[:2], reference, reference)


def test_exact_top_rows_best_first_and_without_the_query_itself() -> None:
    collection = unit_rows(np.random.default_rng(1).standard_normal((30, 8)).astype(np.float32))
    rows = exact_top_rows(collection, exclude_self=True)(collection, 5)
    scores = collection @ collection.T
    for query, top in enumerate(rows):
        assert query not in top
        assert np.all(np.diff(scores[query, top]) <= 0)
        assert scores[query, top[-1]] >= np.sort(np.delete(scores[query], [query, *top]))[-1]


def test_probes_are_the_collections_own_texts_then_generic_ones() -> None:
    own = [f"a photo number {n}" for n in range(400)]
    assert probe_texts(["", "  ", *own, own[0]]) == own[:300]
    few = probe_texts(["a red circle", "a red circle", "a blue square"])
    assert few[:2] == ["a red circle", "a blue square"] and few[2:] == list(GENERIC_PROBES[:298])
    assert bundle_probes(lambda row: f"item {row}", 1000, ("a cat",))[:3] == ["a cat", "item 0", "item 3"]


def test_text_gate_refuses_int8_that_ranks_the_demo_differently_and_accepts_what_meets_its_bar(
        demo_encoder: ClipEncoder, demo_bundle: Bundle, demo_towers, caplog: pytest.LogCaptureFixture) -> None:
    cache, _ = demo_towers
    encoder = fresh(demo_encoder)
    fp32 = load_onnx_text(encoder, cache)
    encoder.onnx_text = fp32
    probes = bundle_probes(lambda row: demo_bundle.catalog.hit(row, 0.0).description, len(demo_bundle.catalog), ())
    with caplog.at_level(logging.INFO, logger="search.model.onnx_text"):
        refused = choose_text_precision(encoder, "auto", probes, index_top_rows(demo_bundle))
    # The demo's tiny 64-d CLIP moves ~4 % of its top-10 slots at int8 (docs/performance.md).
    figure = refused.agreement.recall
    assert refused.serving == "fp32" and figure < MIN_RECALL and encoder.onnx_text is fp32
    assert f"recall@10 {figure:.4f} over 300 probes" in caplog.text and "ranks differently" in caplog.text
    record = text_precision_record(encoder)
    assert record["serving"] == "fp32" and record["recall_at_10"] == round(figure, 4) and record["probes"] == 300
    accepted = choose_text_precision(encoder, "auto", probes, index_top_rows(demo_bundle), min_recall=figure)
    assert accepted.serving == "int8" and accepted.agreement == refused.agreement
    assert isinstance(encoder.onnx_text, OnnxTextTower) and encoder.onnx_text.path.name == INT8_FILE
    int8, exact = encoder.encode_text(probes[:20]), fresh(demo_encoder).encode_text(probes[:20])
    assert np.abs(int8 - exact).max() > 0 and np.sum(int8 * exact, axis=1).min() > 0.99
    assert text_precision_record(encoder)["serving"] == "int8"


def test_text_gate_refuses_a_collection_no_int8_tower_can_rank(demo_encoder: ClipEncoder, demo_towers) -> None:
    encoder = fresh(demo_encoder)
    encoder.onnx_text = demo_towers[1]
    probes = list(GENERIC_PROBES[:20])  # fewer than the model's 64 dimensions: room for the copies' differences
    decision = choose_text_precision(encoder, "auto", probes, exact_top_rows(crowded(encoder.encode_text(probes))))
    assert decision.serving == "fp32" and decision.agreement.recall < 0.9


def test_asked_precision_overrides_auto(demo_encoder: ClipEncoder, demo_towers, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    probes = list(GENERIC_PROBES[:20])
    encoder = fresh(demo_encoder)
    encoder.onnx_text = demo_towers[1]
    top_rows = exact_top_rows(crowded(encoder.encode_text(probes)))
    with caplog.at_level(logging.WARNING, logger="search.model.onnx_text"):
        forced = choose_text_precision(encoder, "int8", probes, top_rows)
    assert forced.serving == "int8" and encoder.onnx_text.path.name == INT8_FILE
    assert "int8 was asked for" in caplog.text and "text queries at int8" in caplog.text  # warned: below the bar

    def never(*_args) -> None:
        raise AssertionError("quantised although fp32 was asked for")

    monkeypatch.setattr(onnx_text, "quantise_onnx", never)
    encoder.onnx_text = demo_towers[1]
    kept = choose_text_precision(encoder, "fp32", probes, top_rows)
    assert kept.serving == "fp32" and kept.agreement is None and encoder.onnx_text is demo_towers[1]
    assert text_precision_record(encoder) == kept.record()


def test_int8_tower_is_cached_beside_the_export_and_checked_on_load(demo_encoder: ClipEncoder, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = load_onnx_text(fresh(demo_encoder), tmp_path)
    int8 = load_int8_text(demo_encoder, fp32)
    assert int8.path == fp32.path.with_name(INT8_FILE) and int8.path.stat().st_size < fp32.path.stat().st_size + (
        fp32.path.with_name(f"{MODEL_FILE}.data").stat().st_size) / 2
    assert sorted(p.name for p in int8.path.parent.iterdir()) == sorted([MODEL_FILE, f"{MODEL_FILE}.data", INT8_FILE])
    quantise = onnx_text.quantise_onnx

    def refuse(*_args) -> None:
        raise AssertionError("quantised again although the cached int8 tower was good")

    monkeypatch.setattr(onnx_text, "quantise_onnx", refuse)
    assert load_int8_text(demo_encoder, fp32).path == int8.path
    int8.path.write_bytes(int8.path.read_bytes()[:1000])  # a killed copy
    monkeypatch.setattr(onnx_text, "quantise_onnx", quantise)
    again = load_int8_text(demo_encoder, fp32)
    tokens = demo_encoder.tokenizer(["a red circle"])[:, :6].numpy()
    assert np.sum(unit_rows(again(tokens)) * unit_rows(fp32(tokens))) > 0.99


def test_the_int8_check_refuses_a_tower_off_its_export(demo_encoder: ClipEncoder, demo_towers) -> None:
    fp32 = demo_towers[1]
    int8 = load_int8_text(demo_encoder, fp32)
    assert onnx_text._checked_int8(demo_encoder, fp32, int8) is int8
    elsewhere = lambda tokens: np.roll(int8(tokens), demo_encoder.dim // 2, axis=1)  # noqa: E731
    with pytest.raises(onnx_text.OnnxTextError, match="off its fp32 export"):
        onnx_text._checked_int8(demo_encoder, fp32, elsewhere)


def test_precision_setting_is_checked_once_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineConfig.from_env().text_precision == "auto"
    monkeypatch.setenv("SEARCH_TEXT_PRECISION", " INT8 ")
    assert EngineConfig.from_env().text_precision == "int8"
    monkeypatch.setenv("SEARCH_TEXT_PRECISION", "int4")
    with pytest.raises(SearchError, match="SEARCH_TEXT_PRECISION must be one of auto, int8, fp32, got 'int4'"):
        EngineConfig.from_env()


def pictures(count: int, seed: int = 0) -> list[Image.Image]:
    """Distinct small pictures: a coloured ellipse on a coloured ground."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        picture = Image.new("RGB", (96, 96), tuple(int(c) for c in rng.integers(0, 256, 3)))
        x, y = (int(v) for v in rng.integers(5, 60, 2))
        size = (int(v) for v in rng.integers(10, 35, 2))
        ImageDraw.Draw(picture).ellipse([x, y, x + next(size), y + next(size)],
                                        fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        out.append(picture)
    return out


def test_image_gate_stores_fp32_until_the_sample_passes_then_int8(demo_encoder: ClipEncoder) -> None:
    pixels = demo_encoder.preprocess_images(pictures(72))
    # The demo's 64-d tower sits right at the default bar on such pictures (recall@10 0.989-0.992 by picture set),
    # so this asks for a bar it clears with room; the refusal below keeps the default.
    tower = GatedImageTower(demo_encoder, sample=64, min_recall=0.95)
    first = tower(pixels[:40])
    assert tower.decision is None and np.array_equal(first, demo_encoder.encode_pixels(pixels[:40]))
    tower(pixels[40:64])
    assert tower.decision.serving == "int8" and tower.decision.agreement.recall >= 0.95
    rest = tower(pixels[64:])
    exact = demo_encoder.encode_pixels(pixels[64:])
    assert not np.array_equal(rest, exact) and np.sum(rest * exact, axis=1).min() > 0.999


def test_image_gate_refuses_pictures_int8_cannot_tell_apart(demo_encoder: ClipEncoder) -> None:
    one = demo_encoder.preprocess_images(pictures(1))
    near_copies = one + torch.randn((40, *one.shape[1:]), generator=torch.Generator().manual_seed(0)) * 1e-4
    tower = GatedImageTower(demo_encoder, sample=40)
    assert tower.min_recall == MIN_RECALL
    with pytest.raises(Int8RefusedError, match=r"--precision int8 refused .* recall@10 0\.\d+ over 40 probes.*"
                                               r"build with --precision fp32"):
        tower(near_copies)


def test_app_start_decides_the_text_precision_on_its_bundle_and_health_shows_it(tmp_path: Path) -> None:
    from search.web.rest import health_record
    from search.web.startup import start_engine

    startup = start_engine(EngineConfig(cache_dir=tmp_path))
    assert health_record(startup)["text_precision"]["serving"] == "fp32"  # PyTorch, or fp32 ONNX, meanwhile
    deadline = time.monotonic() + 120
    while getattr(startup.engine.encoder.onnx_text, "decision", None) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    record = health_record(startup)["text_precision"]
    assert record["asked"] == "auto" and record["probes"] == 300  # the demo's own 300 descriptions
    assert record["serving"] == ("int8" if record["recall_at_10"] >= MIN_RECALL else "fp32")
    assert f"recall@10 {record['recall_at_10']:.4f}" in record["reason"] and record["max_cosine_diff"] > 0
    assert (tmp_path / onnx_text.cache_key(startup.engine.encoder) / INT8_FILE).is_file()
