"""SearchEngine on the demo bundle: every query kind, top-k and threshold edges, bad input, mismatches."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.bundle.store import Bundle
from search.config import EncoderSpec, EngineConfig
from search.errors import (
    BadImageError,
    BadQueryError,
    BundleError,
    EncoderMismatchError,
    SearchError,
    UnknownItemError,
)
from search.model.encoder import ClipEncoder
from search.query.engine import Query, SearchEngine, Term, load_engine
from search.types import Hit
from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC


def _labels(hits: list[Hit]) -> list[str]:
    # Demo descriptions read "a <colour> <shape> on a <tone> background".
    return [" ".join(hit.description.split()[1:3]) for hit in hits]


def _demo_image(engine: SearchEngine, label: str) -> Path:
    hit = next(hit for hit in engine.search_text(f"a {label}", top_k=50) if label in hit.description)
    return Path(hit.image)


def test_text_query_finds_matching_items_best_first(demo_engine: SearchEngine) -> None:
    hits = demo_engine.search_text("a red circle", top_k=5)
    assert _labels(hits) == ["red circle"] * 5
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert all(Path(hit.image).is_file() for hit in hits)


def test_top_k_and_threshold_edges(demo_engine: SearchEngine) -> None:
    count = demo_engine.bundle.manifest.count
    assert len(demo_engine.search_text("a blue square", top_k=count + 50, threshold=-1.0)) == count
    assert demo_engine.search_text("a blue square", top_k=0) == []
    assert demo_engine.search_text("a blue square", top_k=1000, threshold=1.0) == []
    hits = demo_engine.search_text("a blue square", top_k=20, threshold=-1.0)
    assert len(hits) == 20
    cut = hits[9].score
    kept = demo_engine.search_text("a blue square", top_k=20, threshold=cut)
    assert kept[:10] == hits[:10] and kept == [hit for hit in hits if hit.score >= cut]
    best = hits[0].score
    assert demo_engine.search_text("a blue square", top_k=20, threshold=min(1.0, best + 1e-4)) == []


COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "grey")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "blob", "stripes")


def _random_queries(count: int, seed: int) -> list[str]:
    # Words of the demo's captions and some it never saw, so that scores spread and sometimes tie.
    rng = np.random.default_rng(seed)
    words = [*COLOURS, *SHAPES, "dark", "light", "background", "on", "a", "sunset", "cat", "the"]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 7)))) for _ in range(count)]


def _assert_threshold_at_each_shown_score_keeps_that_hit(search: Callable[[float], list[Hit]]) -> None:
    hits = search(-1.0)
    assert len(hits) == 20
    for k in range(1, 21):
        shown = hits[k - 1].score
        kept = search(shown)
        # Exactly hits 1..k plus any that tie with hit k: the threshold compares the number that was shown.
        assert kept == [hit for hit in hits if hit.score >= shown]
        assert kept[:k] == hits[:k]


def test_a_threshold_equal_to_a_shown_score_keeps_hits_up_to_it(demo_engine: SearchEngine) -> None:
    for text in _random_queries(25, seed=10):
        _assert_threshold_at_each_shown_score_keeps_that_hit(
            lambda threshold, text=text: demo_engine.search_text(text, top_k=20, threshold=threshold))
    ids = np.random.default_rng(11).choice(demo_engine.bundle.manifest.count, size=10, replace=False)
    for row in ids.tolist():
        item_id = demo_engine.bundle.catalog.hit(row, 0.0).id
        _assert_threshold_at_each_shown_score_keeps_that_hit(
            lambda threshold, item_id=item_id: demo_engine.similar(item_id, top_k=20, threshold=threshold))


def test_scores_survive_json_and_ties_come_in_a_fixed_order(demo_engine: SearchEngine) -> None:
    hits = demo_engine.search_text("a red circle", top_k=100, threshold=-1.0)
    assert all(json.loads(json.dumps(hit.score)) == hit.score == round(hit.score, 6) for hit in hits)
    rows = [demo_engine.bundle.catalog.row_of(hit.id) for hit in hits]
    assert all(rows[i] < rows[i + 1] for i in range(len(hits) - 1) if hits[i].score == hits[i + 1].score)


def test_image_query_finds_the_image_itself_first(demo_engine: SearchEngine) -> None:
    path = _demo_image(demo_engine, "green triangle")
    hits = demo_engine.search_image(path, top_k=5)
    assert hits[0].image == str(path) and hits[0].score >= 0.99
    assert _labels(hits) == ["green triangle"] * 5


def test_similar_uses_the_stored_vector_and_leaves_the_item_out(demo_engine: SearchEngine) -> None:
    seed = demo_engine.search_text("a yellow star", top_k=1)[0]
    hits = demo_engine.similar(seed.id, top_k=5)
    assert seed.id not in [hit.id for hit in hits]
    assert len(hits) == 5 and _labels(hits) == ["yellow star"] * 5
    count = demo_engine.bundle.manifest.count
    everything = demo_engine.similar(seed.id, top_k=count + 10, threshold=-1.0)
    assert len(everything) == count - 1 and seed.id not in {hit.id for hit in everything}


def test_a_negative_term_steers_away_from_it(demo_engine: SearchEngine) -> None:
    plain = _labels(demo_engine.search_text("a circle", top_k=20))
    steered = _labels(demo_engine.search(Query((Term(text="a circle"),), ("red", "orange")), top_k=20))
    assert sum("red" in label or "orange" in label for label in plain) > 0
    assert sum("red" in label or "orange" in label for label in steered) == 0
    assert sum("circle" in label for label in steered) >= 15


def test_weights_decide_which_positive_term_leads(demo_engine: SearchEngine) -> None:
    blue_square = _demo_image(demo_engine, "blue square")

    def top_label(text_weight: float, image_weight: float) -> str:
        query = Query((Term(text="a red circle", weight=text_weight), Term(image=blue_square, weight=image_weight)))
        return _labels(demo_engine.search(query, top_k=1))[0]

    assert top_label(1.0, 0.05) == "red circle"
    assert top_label(0.05, 1.0) == "blue square"


@pytest.mark.parametrize(("call", "message"), [
    (lambda e: e.search_text("   "), "empty query"),
    (lambda e: e.search_text(""), "empty query"),
    (lambda e: e.search(Query(())), "empty query"),
    (lambda e: e.search_text("a red circle", top_k=-1), "top_k must be a whole number"),
    (lambda e: e.search_text("a red circle", top_k=2.5), "top_k must be a whole number"),
    (lambda e: e.search_text("a red circle", top_k=True), "top_k must be a whole number"),
    (lambda e: e.search_text("a red circle", top_k=10**9), "top_k must be a whole number"),
    (lambda e: e.search_text("a red circle", threshold=math.nan), "threshold must be"),
    (lambda e: e.search_text("a red circle", threshold=math.inf), "threshold must be"),
    (lambda e: e.search_text("a red circle", threshold=1.5), "threshold must be"),
    (lambda e: e.search_text("a red circle", threshold="0.3"), "threshold must be"),
    (lambda e: e.search(Query((Term(text="a red circle", weight=-1),))), "weight must be a positive"),
    (lambda e: e.search(Query((Term(text="a", image="b.png"),))), "exactly one of"),
    (lambda e: e.search(Query((Term(text="red"),), ("red",))), "cancel each other out"),
    (lambda e: e.search(Query((Term(text="a red circle"),), (" ",))), "empty query"),
])
def test_bad_queries_are_refused_clearly(demo_engine: SearchEngine, call: Callable, message: str) -> None:
    with pytest.raises(BadQueryError, match=message):
        call(demo_engine)


def test_bad_images_and_unknown_ids_are_refused(demo_engine: SearchEngine, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list")
    with pytest.raises(BadImageError, match="notes.txt"):
        demo_engine.search_image(notes)
    with pytest.raises(UnknownItemError, match="no item with id 'shape-999'"):
        demo_engine.similar("shape-999")


def test_a_very_long_query_is_refused_not_cut(demo_engine: SearchEngine) -> None:
    with pytest.raises(BadQueryError, match=r"^the query has 129999 characters; keep it under 1000"):
        demo_engine.search_text("a red circle " * 10_000, top_k=3)  # 130 000 characters, stripped
    assert len(demo_engine.search_text(("a red circle " * 100)[:1000], top_k=3)) == 3  # at the limit: searched


def test_load_engine_uses_the_model_the_manifest_names() -> None:
    engine = load_engine(EngineConfig(index=str(DEMO_INDEX_DIR)))
    assert engine.encoder.spec == DEMO_SPEC.resolved(Path.cwd())
    assert _labels(engine.search_text("a purple square", top_k=3)) == ["purple square"] * 3


def test_an_encoder_other_than_the_manifests_is_refused(demo_encoder: ClipEncoder,
                                                        make_bundle: Callable[..., Path]) -> None:
    other = Bundle.load(make_bundle(dim=demo_encoder.dim, spec=EncoderSpec("ViT-B-32", "laion2b_s34b_b79k")))
    with pytest.raises(EncoderMismatchError, match="built with model ViT-B-32 / laion2b_s34b_b79k"):
        SearchEngine(demo_encoder, other)


def test_a_dimension_other_than_the_models_is_refused(demo_encoder: ClipEncoder,
                                                      make_bundle: Callable[..., Path]) -> None:
    wrong_dim = Bundle.load(make_bundle(dim=demo_encoder.dim + 3, spec=DEMO_SPEC))
    with pytest.raises(EncoderMismatchError, match=f"{demo_encoder.dim + 3}-d"):
        SearchEngine(demo_encoder, wrong_dim)


def test_a_manifest_naming_a_missing_model_fails_to_load(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle(spec=EncoderSpec("local-dir:/nonexistent/model"))  # recorded relative to the bundle
    with pytest.raises(BundleError, match="names its model by a local-dir: folder that is not there .* rebuild"):
        load_engine(EngineConfig(index=str(root)))


class _CountingEncoder:
    """Wraps the demo encoder and counts model calls for texts."""

    def __init__(self, inner: ClipEncoder) -> None:
        self.inner, self.text_calls = inner, 0
        self.spec, self.dim, self.input_side = inner.spec, inner.dim, inner.input_side

    def encode_text(self, texts):
        self.text_calls += 1
        return self.inner.encode_text(texts)

    def encode_images(self, images):
        return self.inner.encode_images(images)


def test_repeated_text_queries_are_served_from_the_cache(demo_encoder: ClipEncoder) -> None:
    counting = _CountingEncoder(demo_encoder)
    engine = SearchEngine(counting, Bundle.load(DEMO_INDEX_DIR))  # type: ignore[arg-type]
    first = engine.search_text("a red circle", top_k=5)
    assert engine.search_text("  a red circle ", top_k=5) == first  # stripped text is the cache key
    engine.search(Query((Term(text="a blue square"),), negatives=("a red circle",)), top_k=3)
    assert counting.text_calls == 2  # "a red circle" once, "a blue square" once
    engine.clear_text_cache()
    assert engine.search_text("a red circle", top_k=5) == first
    assert counting.text_calls == 3


def test_cached_vectors_cannot_be_changed_by_a_caller(demo_encoder: ClipEncoder) -> None:
    engine = SearchEngine(demo_encoder, Bundle.load(DEMO_INDEX_DIR))
    vector = engine.query_vector(Query((Term(text="a red circle"),)))
    vector *= 0  # query_vector returns a fresh array; the cached one stays intact
    again = engine.query_vector(Query((Term(text="a red circle"),)))
    assert np.linalg.norm(again) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="read-only"):
        engine._text_vector("a red circle")[0] = 0.0


def test_a_zero_size_cache_always_runs_the_model(demo_encoder: ClipEncoder) -> None:
    counting = _CountingEncoder(demo_encoder)
    engine = SearchEngine(counting, Bundle.load(DEMO_INDEX_DIR), text_cache_size=0)  # type: ignore[arg-type]
    cached = SearchEngine(demo_encoder, Bundle.load(DEMO_INDEX_DIR))
    for _ in range(3):
        assert engine.search_text("a yellow star", top_k=4) == cached.search_text("a yellow star", top_k=4)
    assert counting.text_calls == 3


def test_search_threads_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_THREADS", "1")
    monkeypatch.setenv("SEARCH_TEXT_THREADS", "3")
    assert (EngineConfig.from_env().threads, EngineConfig.from_env().text_threads) == (1, 3)
    monkeypatch.setenv("SEARCH_THREADS", "")
    assert EngineConfig.from_env().threads == 0
    monkeypatch.setenv("SEARCH_THREADS", "two")
    with pytest.raises(SearchError, match="SEARCH_THREADS must be a whole number"):
        EngineConfig.from_env()
    monkeypatch.setenv("SEARCH_THREADS", "1")
    monkeypatch.setenv("SEARCH_TEXT_THREADS", "-2")
    with pytest.raises(SearchError, match="SEARCH_TEXT_THREADS must be a whole number, 0 or more, got '-2'"):
        EngineConfig.from_env()


def test_more_than_ten_excluded_terms_are_refused_before_any_is_encoded(demo_engine: SearchEngine,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(demo_engine.encoder, "encode_text", lambda texts: calls.append(texts) or pytest.fail())
    query = Query((Term(text="a red circle"),), tuple(f"never-seen-{number}" for number in range(11)))
    with pytest.raises(BadQueryError, match="excludes 11 terms; keep it to 10 or fewer"):
        demo_engine.search(query)
    assert calls == []


def test_warm_up_encodes_a_picture_and_a_text_on_each_model_thread(demo_engine: SearchEngine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    encoder, seen = demo_engine.encoder, []

    def recorded(kind: str) -> Callable[..., Any]:
        real = getattr(encoder, kind)

        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append((kind, threading.current_thread().name))
            return real(*args, **kwargs)
        return call

    for kind in ("encode_images", "encode_text"):
        monkeypatch.setattr(encoder, kind, recorded(kind))
    demo_engine.warm_up()
    threads = {thread for _, thread in seen}
    assert len(seen) == 4 and len(threads) == demo_engine.limiter.slots == 2
    assert all(thread.startswith("model-work") for thread in threads)
    assert sorted(kind for kind, _ in seen) == ["encode_images"] * 2 + ["encode_text"] * 2
