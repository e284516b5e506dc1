"""Relevance feedback in the query layer: marks move the ranking; ids are checked once, bounded and named."""

from __future__ import annotations

import pytest

from search.errors import BadQueryError
from search.query.engine import SearchEngine
from search.query.feedback import MAX_MARKS
from search.query.options import SearchOptions


def _marked(**params: object) -> SearchOptions:
    return SearchOptions.from_params(params)


def _red(engine: SearchEngine, hits: list) -> int:
    return sum("red triangle" in hit.description for hit in hits)


def test_liked_items_move_the_ranking_toward_their_class(demo_engine: SearchEngine) -> None:
    before = demo_engine.search_text("a triangle", top_k=10)
    good = [hit.id for hit in demo_engine.search_text("a red triangle", top_k=3)]
    after = demo_engine.search_text("a triangle", top_k=10, options=_marked(like=",".join(good)))
    assert _red(demo_engine, after) > _red(demo_engine, before)
    assert _red(demo_engine, after) >= 8
    assert all("triangle" in hit.description for hit in after)  # the text still counts


def test_unliked_items_sink_and_likes_alone_search(demo_engine: SearchEngine) -> None:
    plain = demo_engine.search_text("a red shape", top_k=10)
    unliked = [hit.id for hit in plain[:2]]
    steered = demo_engine.search_text("a red shape", top_k=10, options=_marked(unlike=unliked))
    ranks = [hit.id for hit in steered]
    assert all(item not in ranks[:2] for item in unliked)
    liked = [hit.id for hit in demo_engine.search_text("a blue star", top_k=2)]
    alone = demo_engine.search_text("", top_k=5, options=_marked(like=liked))
    assert all("blue star" in hit.description for hit in alone)
    similar = demo_engine.similar(plain[0].id, top_k=5, options=_marked(like=liked))
    assert sum("blue star" in hit.description for hit in similar) >= 1  # "more like this", steered by the marks


@pytest.mark.parametrize(("params", "message"), [
    ({"like": "shape-000,no-such-item"}, "like names 'no-such-item', which is not in this index"),
    ({"unlike": "missing"}, "unlike names 'missing'"),
])
def test_an_id_not_in_the_index_is_refused_by_name(demo_engine: SearchEngine, params: dict, message: str) -> None:
    with pytest.raises(BadQueryError, match=message):
        demo_engine.search_text("a circle", options=_marked(**params))


@pytest.mark.parametrize(("params", "message"), [
    ({"like": ",".join(f"shape-{row:03d}" for row in range(MAX_MARKS + 1))}, f"mark at most {MAX_MARKS}"),
    ({"like": "shape-001", "unlike": "shape-001"}, "in both like and unlike"),
    ({"unlike": "x" * 201}, "at most 200"),
    ({"like": 5}, "item ids separated by commas"),
])
def test_marks_are_bounded_and_checked_once(params: dict, message: str) -> None:
    with pytest.raises(BadQueryError, match=message):
        _marked(**params)


def test_marks_parse_from_text_and_lists_and_nothing_else_to_search_is_refused(demo_engine: SearchEngine) -> None:
    options = _marked(like=" shape-001, shape-002,,shape-001 ", unlike=["shape-003"])
    assert (options.like, options.unlike) == (("shape-001", "shape-002"), ("shape-003",))
    assert options.plain and options.marked
    with pytest.raises(BadQueryError, match="empty query"):
        demo_engine.search_text("", options=_marked(unlike="shape-003"))


@pytest.mark.parametrize(("item_id", "offered"), [
    ("IMG_0001.jpg", True), ("holiday/a b.jpg", True), ("a,b.jpg", False), (" a.jpg", False), ("a.jpg ", False),
    ("a  b.jpg", False), ("x" * 201, False)])
def test_a_tile_offers_marks_only_for_an_id_that_comes_back_whole(item_id: str, offered: bool) -> None:
    from search.types import Hit
    from search.web.marks import markable
    assert markable(Hit(item_id, 0.5, "x.jpg", None, "", None)) is offered
