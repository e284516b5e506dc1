"""Keyword index: tokens, BM25 build and search, bundle files checked as untrusted input, and fusion with CLIP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench.relevance import bundle_rankers, compare
from search.bundle.keywords import KeywordIndex, tokenize
from search.bundle.manifest import (
    KEYWORD_DOCS_FILE,
    KEYWORD_FILES,
    KEYWORD_OFFSETS_FILE,
    KEYWORD_VOCAB_FILE,
    KEYWORD_WEIGHTS_FILE,
)
from search.bundle.store import Bundle, BundleInfo, write_bundle
from search.config import EncoderSpec, HnswParams
from search.errors import BadQueryError, BundleError
from search.query.engine import SearchEngine
from search.query.fusion import HybridRanker
from search.query.options import SearchOptions
from tests.conftest import metadata_table, unit_vectors
from tests.hostile_bundles import manifest_of, reseal, write_manifest
from tests.place_gallery import PLACES, TUNING_SEED, write_place_gallery

TEXTS = pa.table({
    "description": ["Sunset over Lisbon's old tram", None, "Mountains near Queenstown", "a photo of the sea"],
    "ai_description": ["a yellow tram on a street", "a red bicycle leaning on a wall", None, "waves"],
    "keywords": [["tram", "portugal"], ["bicycle", "amsterdam"], ["lake", "mountain"], []],
})


def test_tokens_are_lowercased_words_without_stopwords_or_plural_s() -> None:
    assert tokenize("A photo of the Mountains in PARIS, Ålesund & glass-houses!") == \
        ["mountain", "paris", "ålesund", "glass", "house"]
    assert tokenize("ＬＩＳＢＯＮ") == ["lisbon"]  # full-width letters (NFKC) match the plain ones
    assert tokenize("a the of x " + "z" * 41) == []  # stopwords, one letter and overlong "words" are dropped


def test_every_text_column_is_indexed_and_searched() -> None:
    index = KeywordIndex.build(TEXTS)
    assert index is not None and index.count == 4
    for query, row in (("lisbon", 0), ("red bicycle", 1), ("amsterdam", 1), ("mountain lake", 2), ("waves", 3)):
        rows, scores = index.search(query, 10)
        assert rows[0] == row and scores[0] > 0, query
    rows, _ = index.search("tram portugal lisbon", 10)
    assert rows.tolist() == [0]
    assert index.search("photo of the", 10)[0].size == 0  # only stopwords: no match, not every item
    assert index.search("unknownword", 10)[0].size == 0


def test_search_orders_by_score_then_row_and_honours_the_limit() -> None:
    table = pa.table({"description": ["red red", "red", "blue", "red"]})
    index = KeywordIndex.build(table)
    rows, scores = index.search("red", 10)
    assert rows.tolist() == [0, 1, 3] and scores[1] == scores[2] and scores[0] > scores[1]
    assert index.search("red", 2)[0].tolist() == [0, 1]


def test_coverage_counts_query_words_no_item_uses() -> None:
    index = KeywordIndex.build(TEXTS)
    _, full = index.coverage("amsterdam", 10)
    _, partial = index.coverage("amsterdam zebra", 10)
    assert full[0] == pytest.approx(1.0) and 0 < partial[0] < 0.7


def test_no_text_gives_no_index() -> None:
    assert KeywordIndex.build(pa.table({"id": ["a"], "image": ["b"]})) is None
    assert KeywordIndex.build(pa.table({"description": [None, "", "a the"]})) is None


def test_a_bundle_with_text_carries_a_checked_keyword_index(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle(count=30, dim=8)
    assert set(KEYWORD_FILES) <= set(manifest_of(root)["files"])
    bundle = Bundle.load(root)
    assert bundle.keywords is not None and bundle.keywords.search("number 17", 5)[0][0] == 17


def test_an_older_bundle_without_one_loads_and_a_rewrite_without_text_drops_stale_files(tmp_path: Path) -> None:
    root = tmp_path / "b"
    info = BundleInfo(EncoderSpec("ViT-B-32", None), HnswParams(m=8, ef_construction=32, ef_search=16))
    write_bundle(root, unit_vectors(10, 8), metadata_table(10), info)
    assert (root / KEYWORD_VOCAB_FILE).is_file()
    write_bundle(root, unit_vectors(10, 8), metadata_table(10).drop_columns(["description"]).append_column(
        "description", pa.array([None] * 10, pa.string())), info)
    assert not any((root / name).exists() for name in KEYWORD_FILES)
    assert not set(KEYWORD_FILES) & set(manifest_of(root)["files"])
    assert Bundle.load(root).keywords is None


def _npy(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, array, allow_pickle=array.dtype.hasobject)


def _vocab(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return write


def _header_claims_more(path: Path) -> None:
    np.save(path, np.zeros(10**6, np.int32))
    with path.open("r+b") as handle:
        handle.truncate(200)


TAMPERED = {
    "docs outside the items": (KEYWORD_DOCS_FILE, lambda p: np.save(p, np.load(p) + 1000), "outside 0..29"),
    "negative docs": (KEYWORD_DOCS_FILE, lambda p: np.save(p, np.load(p) - 1000), "outside 0..29"),
    "docs of another dtype": (KEYWORD_DOCS_FILE, lambda p: np.save(p, np.load(p).astype(np.int64)), "int32"),
    "docs as a pickle": (KEYWORD_DOCS_FILE, _npy(np.array([{"a": 1}], dtype=object)), "not a plain .npy"),
    "header claims more": (KEYWORD_DOCS_FILE, _header_claims_more, "not a plain .npy"),
    "falling offsets": (KEYWORD_OFFSETS_FILE, lambda p: np.save(p, np.load(p)[::-1].copy()), "offsets"),
    "offsets past the docs": (KEYWORD_OFFSETS_FILE, lambda p: np.save(p, np.load(p) * 2), "expected int32"),
    "nan weights": (KEYWORD_WEIGHTS_FILE, lambda p: np.save(p, np.load(p) * np.nan), "not finite"),
    "short weights": (KEYWORD_WEIGHTS_FILE, lambda p: np.save(p, np.load(p)[:-1].copy()), "expected float32"),
    "wrong count": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "count": 31}), "count differs"),
    "repeated word": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "vocab": d["vocab"][:-1] + d["vocab"][:1]}),
                      "repeats"),
    "vocab not words": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "vocab": [1] * len(d["vocab"])}), "list of"),
    "not json": (KEYWORD_VOCAB_FILE, lambda p: p.write_text("{"), "not valid JSON"),
    "a word not utf-8": (KEYWORD_VOCAB_FILE, lambda p: p.write_bytes(p.read_bytes().replace(b'"]', b'\xff"]')),
                         "not valid JSON"),
    "a lone surrogate": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "vocab": [*d["vocab"][:-1], "\ud800"]}),
                         "not valid text"),
    "a null word": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "vocab": [*d["vocab"][:-1], None]}), "list of"),
    "two objects": (KEYWORD_VOCAB_FILE, lambda p: p.write_text(p.read_text() + "\n" + p.read_text()),
                    "not valid JSON"),
    "null": (KEYWORD_VOCAB_FILE, lambda p: p.write_text("null"), "not a format 1 object"),  # crashed pyarrow.json
    "a byte order mark": (KEYWORD_VOCAB_FILE, lambda p: p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes()),
                          "not valid JSON"),
    "other format": (KEYWORD_VOCAB_FILE, _vocab(lambda d: {**d, "format": 9}), "format 1"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_keyword_index_is_refused_in_one_line(make_bundle: Callable[..., Path], case: str) -> None:
    name, tamper, reason = TAMPERED[case]
    root = make_bundle(count=30, dim=8)
    tamper(root / name)
    reseal(root)  # checksums that match: only the content checks stand in the way
    with pytest.raises(BundleError, match=reason) as error:
        Bundle.load(root)
    assert "\n" not in str(error.value) and str(root) not in str(error.value)


def test_a_partial_keyword_index_is_refused(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle(count=30, dim=8)
    manifest = manifest_of(root)
    del manifest["files"][KEYWORD_WEIGHTS_FILE]
    write_manifest(root, manifest)
    with pytest.raises(BundleError, match=f"lacks {KEYWORD_WEIGHTS_FILE}"):
        Bundle.load(root)


def _ranker(count: int = 40) -> tuple[HybridRanker, np.ndarray]:
    embeddings = unit_vectors(count, 8, seed=3)
    texts = ["lisbon tram" if row in (5, 30) else f"street {row}" for row in range(count)]
    return HybridRanker(KeywordIndex.build(pa.table({"description": texts})), embeddings), embeddings


def test_fusion_keeps_cosines_as_scores_and_the_threshold_only_removes() -> None:
    ranker, embeddings = _ranker()
    vector = unit_vectors(1, 8, seed=99)[0]  # not an item: no cosine of 1 standing far above the rest
    cosines = np.round(embeddings @ vector, 6)
    ann = np.argsort(-cosines)[:10]  # an ANN answer that misses the keyword matches 5 and 30
    assert not {5, 30} & set(ann.tolist())
    rows, scores = ranker.rerank("lisbon", vector, ann, cosines[ann])
    assert set(rows.tolist()) == set(ann.tolist()) | {5, 30} and rows[0] in (5, 30)
    np.testing.assert_allclose(scores, cosines[rows], atol=2e-6)  # each hit's score is its own cosine
    threshold = float(np.sort(scores)[4])
    kept_rows, kept_scores = ranker.rerank("lisbon", vector, ann, cosines[ann], threshold)
    assert (kept_scores >= threshold).all() and kept_rows.tolist() == [r for r in rows if cosines[r] >= threshold]


def test_fusion_without_a_keyword_match_is_clip_order() -> None:
    ranker, embeddings = _ranker()
    cosines = np.round(embeddings @ embeddings[1], 6)
    ann = np.argsort(-cosines)[:15]
    rows, scores = ranker.rerank("zebra crossing", embeddings[1], ann, cosines[ann])
    assert rows.tolist() == ann.tolist() and scores.tolist() == cosines[ann].tolist()


@pytest.fixture(scope="module")
def place_results(demo_encoder, tmp_path_factory) -> dict[str, dict[str, dict[str, float]]]:
    """R@k of CLIP alone and hybrid per query kind, on a place gallery of another seed than the tuning one."""
    gallery = write_place_gallery(tmp_path_factory.mktemp("places") / "b", demo_encoder, 240, TUNING_SEED + 1)
    bundle = Bundle.load(gallery.root)
    results = {}
    for kind, queries in gallery.queries().items():
        vectors = demo_encoder.encode_text(list(queries))
        results[kind] = compare(queries, vectors, gallery.ids, bundle_rankers(bundle))
    print({kind: {name: round(m["r5"], 3) for name, m in r.items()} for kind, r in results.items()})
    return results


def test_hybrid_finds_places_clip_cannot_read(place_results) -> None:
    clip, hybrid = place_results["place"]["clip"], place_results["place"]["hybrid"]
    assert clip["r5"] <= 0.3 and hybrid["r5"] >= 0.9 and hybrid["ndcg10"] >= 0.8
    both_clip, both_hybrid = place_results["both"]["clip"], place_results["both"]["hybrid"]
    assert both_hybrid["r1"] >= both_clip["r1"] + 0.5


def test_hybrid_does_not_hurt_visual_queries(place_results) -> None:
    clip, hybrid = place_results["visual"]["clip"], place_results["visual"]["hybrid"]
    assert clip["r5"] >= 0.9  # CLIP reads these well: the fixture tests "no harm", not an easy win
    for metric in ("r1", "r5", "r10", "ndcg10"):
        assert hybrid[metric] >= clip[metric] - 0.02, metric  # seeds 0-3: within 0.01 (docs/keyword-search.md)


def test_the_engine_fuses_text_queries_only_where_asked(demo_encoder, tmp_path) -> None:
    gallery = write_place_gallery(tmp_path / "b", demo_encoder, 96, TUNING_SEED + 2)
    engine = SearchEngine(demo_encoder, Bundle.load(gallery.root))
    city = PLACES[1][0]
    in_city = {item for item, where in zip(gallery.ids, gallery.cities, strict=True) if where == city}
    fused = [hit.id for hit in engine.search_text(city, 5)]
    clip_only = [hit.id for hit in engine.search_text(city, 5, options=SearchOptions(keywords=False))]
    # The demo CLIP cannot read a city's name; its keywords can (R@5 on 240 items: tests above).
    assert len(set(fused) & in_city) >= 4 > len(set(clip_only) & in_city)
    # The score stays the CLIP cosine: each fused hit scores what the plain ranking gives it.
    plain = {hit.id: hit.score for hit in engine.search_text(city, 96, -1.0, SearchOptions(keywords=False))}
    assert all(hit.score == plain[hit.id] for hit in engine.search_text(city, 5))
    # A filter holds for keyword matches too; picture queries and "more like this" are never fused.
    elsewhere = PLACES[2][1]
    filtered = engine.search_text(city, 5, -1.0, SearchOptions.from_params({"country": elsewhere}))
    assert len(filtered) == 5 and all(hit.country == elsewhere for hit in filtered)
    assert [h.id for h in engine.similar(gallery.ids[0], 5)] == [
        h.id for h in engine.similar(gallery.ids[0], 5, options=SearchOptions(keywords=False))]
    assert SearchOptions.from_params({"keywords": "off"}) == SearchOptions(keywords=False)
    with pytest.raises(BadQueryError, match="keywords must be true or false"):
        SearchOptions.from_params({"keywords": "maybe"})
