"""Filters, sort, near-duplicate collapse, pages and the cut-off: options parsing, bundle columns, search paths."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from bench.common import clip_like_queries, clip_like_vectors, synthetic_metadata
from search.build.picture_facts import file_facts
from search.bundle.colour import dominant_colour
from search.bundle.hnsw_index import VectorIndex
from search.bundle.metadata import ItemCatalog
from search.bundle.store import Bundle, write_bundle
from search.config import EncoderSpec, HnswParams
from search.errors import BadQueryError, BundleError
from search.query.engine import SearchEngine
from search.query.options import Filters, SearchOptions
from search.query.ranking import cut_count, sort_order
from search.query.retrieval import Retriever
from tests.conftest import metadata_table, unit_vectors


@pytest.fixture(scope="module")
def synthetic() -> Retriever:
    """3000 CLIP-like items with Unsplash-like columns, and a small graph (ef_search 32)."""
    vectors = clip_like_vectors(3000, 64, seed=3)
    index = VectorIndex.build(vectors, HnswParams(m=16, ef_construction=100, ef_search=32))
    return Retriever(index, vectors, ItemCatalog(synthetic_metadata(3000), {}))


def test_from_params_parses_raw_request_values() -> None:
    options = SearchOptions.from_params({
        "orientation": " Landscape ", "colour": "gray", "date_from": "2020-01-01", "date_to": "2020-12-31",
        "country": "Norway", "featured": "true", "min_downloads": "10", "sort": "date", "collapse_radius": "0.05",
        "offset": 20.0, "cutoff": "relative", "city": "", "camera": None, "unrelated": "ignored"})
    filters = options.filters
    assert (filters.orientation, filters.colour, filters.country, filters.featured) == ("landscape", "grey",
                                                                                        "Norway", True)
    assert filters.date_from == 1577836800 and filters.date_to == 1609459199  # the whole last day
    assert filters.min_downloads == 10 and filters.city is None and filters.camera is None
    assert (options.sort, options.collapse_radius, options.offset, options.cutoff) == ("date", 0.05, 20, "relative")
    assert SearchOptions.from_params({}).plain and SearchOptions.from_params({"collapse_radius": "off"}).plain


@pytest.mark.parametrize(("params", "message"), [
    ({"orientation": "diagonal"}, "orientation must be one of landscape, portrait, square"),
    ({"colour": "mauve"}, "colour must be one of"),
    ({"date_from": "2020-02-30"}, "date_from must be a date written YYYY-MM-DD"),
    ({"date_to": "yesterday"}, "date_to must be a date"),
    ({"featured": "maybe"}, "featured must be true or false"),
    ({"min_downloads": "-1"}, "min_downloads must be a whole number"),
    ({"min_downloads": "nan"}, "min_downloads must be a finite number"),
    ({"min_downloads": 2.5}, "min_downloads must be a whole number"),
    ({"country": "x" * 201}, "country must be a text of at most 200"),
    ({"country": 7}, "country must be a text"),
    ({"sort": "random"}, "sort must be one of relevance, date, popularity"),
    ({"collapse_radius": "0.9"}, "collapse_radius must be a cosine distance from 0 to 0.5"),
    ({"collapse_radius": "wide"}, "collapse_radius must be a number"),
    ({"offset": "-10"}, "offset must be a whole number from 0 to 10000"),
    ({"offset": "1.5"}, "offset must be a whole number"),
    ({"cutoff": "smart"}, "cutoff must be one of flat, relative, gap"),
])
def test_bad_request_values_are_refused_with_one_line_each(params: dict[str, Any], message: str) -> None:
    with pytest.raises(BadQueryError, match=message):
        SearchOptions.from_params(params)


def _bundle_with(tmp_path: Path, **columns: Any) -> Path:
    table = metadata_table(4)
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    root = tmp_path / "b"
    write_bundle(root, unit_vectors(4, 8), table, _info())
    return root


def _info() -> Any:
    from search.bundle.store import BundleInfo

    return BundleInfo(EncoderSpec("ViT-B-32", None), HnswParams(m=8, ef_construction=32, ef_search=16))


@pytest.mark.parametrize(("column", "values", "message"), [
    ("date", ["2020-01-01T00:00:00", "2020-13-01T00:00:00", None, None], "date that does not exist"),
    ("date", ["2020-01-01", None, None, None], "column date row 0: dates are written"),
    ("latitude", [10.0, None, 95.0, 0.0], "column latitude row 2: 95.0 is outside -90..90"),
    ("longitude", [float("nan"), 0.0, 0.0, 0.0], None),  # NaN is a missing value, not out of range
    ("downloads", [5, -1, 0, 0], "column downloads row 1: -1.0 is outside"),
    ("colour_hex", ["#a0b1c2", "#A0B1C2", None, None], "row 1: colours are written #rrggbb"),
    ("colour", ["red", "mauve", None, None], "row 1: colour names are one of"),
    ("width", ["wide", "tall", "x", "y"], "column width holds string, not int values"),
    ("featured", [1, 0, 1, 0], "column featured holds int64, not bool"),
])
def test_attribute_columns_are_checked_on_load(tmp_path: Path, column: str, values: list[Any],
                                               message: str | None) -> None:
    root = _bundle_with(tmp_path, **{column: values})
    if message is None:
        assert Bundle.load(root).catalog.hit(0, 1.0).longitude is None
        return
    with pytest.raises(BundleError, match=message):
        Bundle.load(root)


def test_attribute_columns_reach_the_hit_and_an_older_bundle_has_none(tmp_path: Path, make_bundle) -> None:
    root = _bundle_with(tmp_path, width=[4000, 3000, 100, None], height=[3000, 4000, 100, None],
                        date=["2021-05-06T07:08:09", None, None, None], featured=[True, False, None, None],
                        camera_make=["Canon", None, "SONY ", None], camera_model=["EOS 5D", None, None, None],
                        colour=["blue", None, None, None], colour_hex=["#2850d2", None, None, None],
                        latitude=[59.9, None, None, None], longitude=[10.75, None, None, None])
    catalog = Bundle.load(root).catalog
    hit = catalog.hit(0, 0.5, duplicates=2)
    assert (hit.width, hit.height, hit.date, hit.featured, hit.camera) == (4000, 3000, "2021-05-06T07:08:09Z", True,
                                                                          "Canon EOS 5D")
    assert (hit.colour, hit.colour_hex, hit.latitude, hit.longitude, hit.duplicates) == ("blue", "#2850d2", 59.9,
                                                                                         10.75, 2)
    assert catalog.hit(2, 0.5).camera == "SONY" and catalog.hit(3, 0.5).width is None
    assert Filters(orientation="portrait").mask(catalog.attributes).tolist() == [False, True, False, False]
    assert Filters(orientation="square").mask(catalog.attributes).tolist() == [False, False, True, False]
    assert Filters(camera="eos").mask(catalog.attributes).tolist() == [True, False, False, False]
    old = Bundle.load(make_bundle(count=5, dim=8)).catalog
    assert old.hit(1, 0.5).date is None and old.row_of("item-0003") == 3
    with pytest.raises(BadQueryError, match="this index has no date data to filter on"):
        Filters(date_from=0.0).mask(old.attributes)


def test_each_filtered_path_finds_the_exact_top_10_inside_the_filtered_set(synthetic: Retriever) -> None:
    attributes = synthetic.catalog.attributes
    queries = clip_like_queries(synthetic.embeddings, 20, seed=5)
    for filters in (Filters(orientation="landscape"), Filters(colour="blue"), Filters(photographer="user0042"),
                    Filters(country="country-003", featured=False, date_from=1.5e9)):
        allowed = synthetic.allowed(filters)
        assert np.array_equal(allowed.mask, filters.mask(attributes)) and 0 < len(allowed.rows) < 3000
        for vector in queries:
            truth = synthetic.exact(vector, 10, allowed.rows)[0]
            assert len(truth) == min(10, len(allowed.rows))
            for rows in (synthetic.walked(vector, 10, allowed)[0],
                         synthetic.ranked(vector, 10, -1.0, SearchOptions(filters=filters)).rows):
                assert allowed.mask[rows].all() and len(rows) == len(truth)
                assert len(set(rows.tolist()) & set(truth.tolist())) >= len(truth) - 1  # approximate: one may be missed
            found = synthetic.postfiltered(vector, 10, allowed)
            assert found is None or allowed.mask[found[0]].all()


def test_a_selective_filter_still_returns_k_hits(synthetic: Retriever) -> None:
    vector = clip_like_queries(synthetic.embeddings, 1, seed=9)[0]
    options = SearchOptions(filters=Filters(photographer="USER0007"))  # 4 of 3000 items, any case
    ranked = synthetic.ranked(vector, 10, -1.0, options)
    assert len(ranked.rows) == 4 and all(synthetic.catalog.hit(int(row), 0).photographer_username == "user0007"
                                         for row in ranked.rows)


def test_pages_continue_each_other_with_collapse_and_sort(synthetic: Retriever) -> None:
    vector = clip_like_queries(synthetic.embeddings, 1, seed=11)[0]
    for base in (SearchOptions(collapse_radius=0.08), SearchOptions(sort="popularity", collapse_radius=0.08),
                 SearchOptions(filters=Filters(orientation="portrait"), collapse_radius=0.08)):
        whole = synthetic.ranked(vector, 60, -1.0, base)
        pages = [synthetic.ranked(vector, 20, -1.0, SearchOptions(base.filters, base.sort, base.collapse_radius,
                                                                   offset)) for offset in (0, 20, 40)]
        assert np.array_equal(np.concatenate([page.rows for page in pages]), whole.rows)
        # A sort reorders the best SORT_POOL candidates; collapsed, those give fewer than 60 here.
        assert len(whole.rows) == 60 if base.sort == "relevance" else 0 < len(whole.rows) < 60
        assert np.array_equal(np.concatenate([page.duplicates for page in pages]), whole.duplicates)
    popular = synthetic.ranked(vector, 60, 0.0, SearchOptions(sort="popularity")).rows
    downloads = synthetic.catalog.attributes.numbers["downloads"][popular]
    assert (np.diff(downloads) <= 0).all() and len(popular) == 60


def test_collapse_folds_near_duplicates_into_a_better_hit(synthetic: Retriever) -> None:
    vector = clip_like_queries(synthetic.embeddings, 1, seed=13)[0]
    plain = synthetic.ranked(vector, 200, -1.0, SearchOptions(cutoff="relative"))
    folded = synthetic.ranked(vector, 200, -1.0, SearchOptions(cutoff="relative", collapse_radius=0.1))
    kept = synthetic.embeddings[folded.rows]
    similarity = kept @ kept.T
    np.fill_diagonal(similarity, -1.0)
    assert similarity.max() < 0.9 and folded.duplicates.sum() > 0  # no two kept hits within the radius
    assert len(folded.rows) + folded.duplicates.sum() == len(plain.rows)  # every hit kept or counted once
    assert set(folded.rows.tolist()) <= set(plain.rows.tolist()) and folded.rows[0] == plain.rows[0]


def test_cut_offs_and_sort_order() -> None:
    scores = np.array([0.9, 0.88, 0.87, 0.70, 0.69, 0.65])
    assert cut_count(scores, "flat") == 6 and cut_count(scores, "relative") == 3 and cut_count(scores, "gap") == 3
    assert cut_count(np.array([0.5, 0.499, 0.498]), "gap") == 3  # no drop worth a cut: all kept
    attributes = ItemCatalog(synthetic_metadata(5), {}).attributes
    attributes.numbers["date"] = np.array([5.0, np.nan, 9.0, 5.0, 1.0])
    assert sort_order(np.array([0, 1, 2, 3, 4]), attributes, "date").tolist() == [2, 0, 3, 4, 1]


def test_engine_options_on_the_demo(demo_engine: SearchEngine) -> None:
    plain = demo_engine.search_text("a red circle", top_k=20)
    assert demo_engine.search_text("a red circle", top_k=20, options=SearchOptions()) == plain
    blue = demo_engine.search_text("a red circle", top_k=10, options=SearchOptions.from_params({"colour": "blue"}))
    assert len(blue) == 10 and all(hit.colour == "blue" and "blue" in hit.description for hit in blue)
    page = demo_engine.search_text("a red circle", top_k=10, options=SearchOptions(offset=10))
    assert page == plain[10:20]
    similar = demo_engine.similar(plain[0].id, top_k=5, options=SearchOptions(filters=Filters(colour="red")))
    assert plain[0].id not in [hit.id for hit in similar] and all(hit.colour == "red" for hit in similar)
    with pytest.raises(BadQueryError, match="no date or views data|no date data to sort by"):
        demo_engine.search_text("a red circle", options=SearchOptions(sort="date"))
    with pytest.raises(BadQueryError, match="options must be a SearchOptions"):
        demo_engine.search_text("a red circle", options={"colour": "red"})


def test_picture_facts_from_exif_and_pixels() -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS R5\x00", 6  # make, model, orientation: turned
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 18:30:00"
    exif.get_ifd(0x8825).update({1: "N", 2: (59.0, 54.0, 36.0), 3: "W", 4: (10.0, 45.0, 0.0)})
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (200, 30, 30)).save(buffer, "JPEG", exif=exif)
    facts = file_facts(buffer.getvalue())
    assert facts == {"width": 80, "height": 120, "date": "2019-07-14T18:30:00", "camera_make": "Canon",
                     "camera_model": "EOS R5", "latitude": 59.91, "longitude": -10.75}
    assert file_facts(b"not a picture")["width"] is None
    picture = Image.new("RGB", (60, 60), (250, 250, 250))
    picture.paste((40, 80, 210), (0, 0, 60, 40))  # two thirds blue
    assert dominant_colour(picture) == ("blue", "#2850d2")


def test_bench_filters_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from bench import filters as bench_filters

    monkeypatch.setattr(bench_filters, "CACHE", tmp_path)  # never the user's ~/.cache
    assert bench_filters.main(["--n", "1500", "--queries", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {row["path"] for row in result["rows"]} == {"exact", "post-filter", "hnsw filter", "auto (engine)"}
    assert all(row["recall"] >= 0.9 for row in result["rows"] if row["path"] == "auto (engine)")
    assert (tmp_path / "filters-1500" / "index.hnsw").is_file()
