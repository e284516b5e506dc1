"""The Gradio app, served in-process on the demo bundle and called through gradio_client like a user would."""

from __future__ import annotations

import html
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app import parse_args
from search.bundle.store import BundleInfo, write_bundle
from search.config import REPO_ROOT, EngineConfig
from search.errors import BadQueryError
from search.query.option_spec import OPTIONS
from search.types import Hit
from search.web.handlers import SearchUI, Session
from search.web.page_text import credit_html, status_text, thumbnail
from search.web.request_values import combined_query
from search.web.startup import BUILD_COMMAND, ModeDefaults, Startup, mode_defaults, score_hint, start_engine
from search.web.uploads import explain_unreadable_uploads
from tests.app_server import assert_serving
from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC
from tests.odd_images import (
    animated_gif,
    huge_declared_png,
    pdf_file,
    svg_file,
    text_as_jpg,
    truncated_jpeg,
    zero_bytes,
)

# gradio's queue uses a pandas option that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

HIT_FIELDS = {field.name for field in fields(Hit)}  # the metadata fields included (None here)
OPTION_PARAMS = [spec.name for spec in OPTIONS]
DEMO_IMAGE = DEMO_INDEX_DIR / "images" / "shape-007.jpg"


# --- API ---

def test_api_has_exactly_three_named_endpoints_with_one_output_each(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    endpoints = api["named_endpoints"]
    understood = endpoints.pop("/understood")  # what /search_text reads a query as: the query and the options
    assert [p["parameter_name"] for p in understood["parameters"]] == ["query", *OPTION_PARAMS]
    assert set(endpoints) == {"/search_text", "/search_image", "/similar"}
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert params == {"/search_text": ["query", "top_k", "threshold", *OPTION_PARAMS],
                      "/search_image": ["image", "top_k", "threshold", *OPTION_PARAMS],
                      "/similar": ["id", "top_k", "threshold", *OPTION_PARAMS]}
    for info in endpoints.values():  # the options are optional: an old call's three arguments still suffice
        assert [p["parameter_has_default"] for p in info["parameters"]][3:] == [True] * len(OPTION_PARAMS)
    assert all(len(info["returns"]) == 1 for info in endpoints.values())
    assert api["unnamed_endpoints"] == {}


def test_search_text_returns_red_circles_best_first(client: Client) -> None:
    hits = client.predict("a red circle", 5, 0.0, api_name="/search_text")
    assert len(hits) == 5
    assert all(set(hit) == HIT_FIELDS for hit in hits)
    assert all("red circle" in hit["description"] for hit in hits)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_threshold_keeps_only_hits_at_or_above_it(client: Client) -> None:
    loose = client.predict("a red circle", 20, 0.0, api_name="/search_text")
    cut = loose[2]["score"]  # a score the caller was shown, sent back as the threshold
    strict = client.predict("a red circle", 20, cut, api_name="/search_text")
    assert strict == [hit for hit in loose if hit["score"] >= cut] and strict[:3] == loose[:3]
    assert client.predict("a red circle", 20, 0.999, api_name="/search_text") == []


def test_old_positional_calls_keep_their_hits_and_options_are_named_parameters(client: Client) -> None:
    old = client.predict("a circle", 8, 0.0, api_name="/search_text")
    defaults = {spec.name: spec.default for spec in OPTIONS}
    assert client.predict("a circle", 8, 0.0, api_name="/search_text", **defaults) == old
    blue = client.predict("a circle", 8, 0.0, api_name="/search_text", colour="blue")
    assert len(blue) == 8 and all(hit["colour"] == "blue" for hit in blue) and blue != old
    second = client.predict("a circle", 4, 0.0, api_name="/search_text", colour="blue", offset=4)
    assert second == blue[4:]  # pages: the same order, page after page
    folded = client.predict("shape-007", 5, 0.0, api_name="/similar", collapse_radius="0.05", cutoff="gap")
    assert folded and sum(hit["duplicates"] for hit in folded) > 0
    with pytest.raises(AppError, match="colour must be one of"):
        client.predict("a circle", 8, 0.0, api_name="/search_text", colour="plaid")
    with pytest.raises(AppError, match="no date data to filter on"):
        client.predict("a circle", 8, 0.0, api_name="/search_text", date_from="2020-01-01")


def test_search_image_returns_that_image_first(client: Client) -> None:
    hits = client.predict(handle_file(str(DEMO_IMAGE)), 5, 0.0, api_name="/search_image")
    assert hits[0]["id"] == "shape-007"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_similar_leaves_out_the_item_and_finds_its_kind(client: Client) -> None:
    hits = client.predict("shape-007", 5, 0.0, api_name="/similar")
    assert len(hits) == 5 and "shape-007" not in {hit["id"] for hit in hits}
    assert all("yellow circle" in hit["description"] for hit in hits)


@pytest.mark.parametrize("query", ["🔴 ⭕ a red circle 🙂", "دائرة حمراء a red circle", "  a red circle  "])
def test_odd_but_valid_text_is_searched(client: Client, query: str) -> None:
    hits = client.predict(query, 3, -1.0, api_name="/search_text")
    assert len(hits) == 3 and all(set(hit) == HIT_FIELDS for hit in hits)


def test_animated_gif_is_searched_by_its_first_frame(client: Client, tmp_path: Path) -> None:
    hits = client.predict(handle_file(str(animated_gif(tmp_path))), 3, -1.0, api_name="/search_image")
    assert len(hits) == 3


BAD_TEXT = [
    ("/search_text", "", 5, 0.0, "empty query"),
    ("/search_text", "   \n\t ", 5, 0.0, "empty query"),
    ("/search_text", "a" * 10_000, 5, 0.0, "10000 characters; keep it under 1000"),
    ("/search_text", "a red circle", -1, 0.0, "top_k must be a whole number from 0 to 1000"),
    ("/search_text", "a red circle", 1001, 0.0, "top_k must be a whole number from 0 to 1000"),
    ("/search_text", "a red circle", 2.5, 0.0, "top_k must be a whole number, got 2.5"),
    ("/search_text", "a red circle", 5, 1.5, "threshold must be a cosine similarity from -1 to 1"),
    ("/search_text", "a red circle", 5, -2, "threshold must be a cosine similarity from -1 to 1"),
    ("/similar", "no-such-item", 5, 0.0, "no item with id 'no-such-item'"),
    ("/similar", "", 5, 0.0, "no item with id ''"),
    ("/similar", "shape-007", 5000, 0.0, "top_k must be a whole number from 0 to 1000"),
]


@pytest.mark.badinput
@pytest.mark.parametrize("case", BAD_TEXT, ids=[f"{c[0]}-{str(c[1])[:20]}-{c[2]}-{c[3]}" for c in BAD_TEXT])
def test_bad_input_is_a_readable_error_and_the_server_keeps_serving(client: Client, case: tuple) -> None:
    endpoint, value, top_k, threshold, message = case
    with pytest.raises(AppError, match=message):
        client.predict(value, top_k, threshold, api_name=endpoint)
    assert_serving(client)


BAD_FILES = [
    (text_as_jpg, "notes.jpg: is a text file, not an image"),
    (truncated_jpeg, "truncated.jpg: .*truncated or corrupt"),
    (zero_bytes, "empty.jpg: the file is empty"),
    (svg_file, "SVG"),
    (pdf_file, "PDF"),
    (huge_declared_png, "too large"),
]


@pytest.mark.badinput
@pytest.mark.parametrize(("make", "message"), BAD_FILES, ids=[make.__name__ for make, _ in BAD_FILES])
def test_bad_upload_is_a_readable_error_and_the_server_keeps_serving(
        client: Client, tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(AppError, match=message) as caught:
        client.predict(handle_file(str(make(tmp_path))), 5, 0.0, api_name="/search_image")
    assert "/tmp/gradio" not in str(caught.value)  # the server's upload path is not leaked
    assert_serving(client)


@pytest.mark.badinput
def test_upload_over_the_size_limit_is_refused(client: Client, app_url: str, tmp_path: Path) -> None:
    import httpx

    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    # gradio_client reads the limit from the app's config and refuses before sending...
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        client.predict(handle_file(str(big)), 5, 0.0, api_name="/search_image")
    # ...and the server refuses a raw upload that ignores it.
    with big.open("rb") as data:
        response = httpx.post(f"{app_url.rstrip('/')}/gradio_api/upload", files={"files": ("big.jpg", data)},
                              timeout=60)
    assert response.status_code == 413
    assert_serving(client)


def test_concurrent_queries_all_get_their_own_answers(client: Client, app_url: str) -> None:
    queries = ["a red circle", "a blue square", "a green triangle", "a yellow star"] * 3
    expected = {query: client.predict(query, 4, 0.0, api_name="/search_text") for query in set(queries)}

    def as_another_user(query: str) -> list[dict]:
        # One Client per user, as in real use: a Client shares one SSE stream between its jobs, and
        # gradio_client 2.7 can cancel jobs when several threads drive the same Client at once.
        return Client(app_url, verbose=False).predict(query, 4, 0.0, api_name="/search_text")

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(as_another_user, queries))
    assert answers == [expected[query] for query in queries]


def test_page_shows_the_demo_notice_collapsed(app_url: str) -> None:
    import httpx

    config = httpx.get(f"{app_url.rstrip('/')}/config", timeout=10).json()
    notice = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "notice")
    assert notice["props"]["open"] is False and notice["props"]["label"].startswith("Demo collection")
    texts = [c["props"].get("value") for c in config["components"] if c["type"] == "markdown"]
    assert any("No index configured" in text and "build_index.py" in text for text in texts if text)


# --- UI handlers (what the browser events call) ---

def shown_hits(shown: tuple) -> list[Hit]:
    """The hits a page event left in the open tab."""
    return list(shown[2].view.hits)


def test_ui_text_renders_results_status_and_rerun_state(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    html, status, session = ui.ui_text("a red circle", "", 6, 0.5, Session())
    assert html.count('<li class="tile">') == len(shown_hits((html, status, session))) == 6
    assert 'data-link="?q=a+red+circle&amp;top_k=6&amp;threshold=0.5"' in html and 'alt="a red circle' in html
    assert "gradio_api/file=" in html and "local file &lt;code&gt;images/shape-" in html  # the detail, in its tile
    assert status.startswith("6 results for “a red circle” in ") and " ms " in status
    again = ui.ui_rerun(6, 0.999, 0.0, session)
    assert again[0].count('<li class="tile">') == 0 and again[1].startswith("Nothing above 1.00")  # text threshold


def test_ui_rerun_without_a_search_changes_nothing(demo_startup: Startup) -> None:
    import gradio as gr

    assert all(isinstance(out, type(gr.skip())) for out in SearchUI(demo_startup).ui_rerun(6, 0.5, 0.5, Session()))


def test_ui_exclude_steers_away_from_a_term(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    plain = [hit.description for hit in shown_hits(ui.ui_text("a circle", "", 10, -1.0))]
    steered = [hit.description for hit in shown_hits(ui.ui_text("a circle", "green, blue", 10, -1.0))]
    assert sum("green" in text or "blue" in text for text in plain) >= 5  # what excluding has to undo
    assert all("circle" in text and "green" not in text and "blue" not in text for text in steered)


def test_ui_empty_result_says_how_close_the_best_item_was(demo_startup: Startup) -> None:
    html, status, _ = SearchUI(demo_startup).ui_text("a red circle", "", 12, 0.99)
    assert '<ul class="grid"' not in html
    assert "Nothing above 0.99" in status and "lower the threshold" in status and "closest scores 0.875" in status


def test_ui_empty_result_of_a_filter_that_keeps_nothing_points_at_the_filters(demo_startup: Startup) -> None:
    html, status, _ = SearchUI(demo_startup).ui_text("a red circle", "", 12, -1.0, options={"colour": "pink"})
    assert '<ul class="grid"' not in html  # the demo has no pink shapes: no threshold would show any
    assert "No picture passes the filters" in status and "threshold" not in status


def test_ui_image_mixed_with_text_moves_towards_the_text(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    only_image = shown_hits(ui.ui_image(str(DEMO_IMAGE), "", 0.5, "", 5, -1.0))
    mixed = shown_hits(ui.ui_image(str(DEMO_IMAGE), "a blue square", 0.9, "", 5, -1.0))
    assert "yellow circle" in only_image[0].description
    assert "blue square" in mixed[0].description


class FakeEvent:
    """What gradio passes for a custom event of the results grid: its data under `_data`."""

    def __init__(self, data: object) -> None:
        self._data = data


def test_more_like_this_keeps_the_picture_in_view_and_links_to_it(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    _, _, session = ui.ui_text("a yellow circle", "", 5, 0.0)
    picked = session.view.hits[1]
    html, status, after = ui.ui_similar(5, 0.0, session, FakeEvent({"index": 1}))
    assert status.startswith(f"5 results for more like {picked.id}")
    assert '<div class="query-card">' in html and f"({picked.id})" in html
    assert f'data-link="?id={picked.id}&amp;top_k=5&amp;threshold=0"' in html
    assert picked.id not in {hit.id for hit in after.view.hits}
    for bad in ({"index": 99}, {"index": "1"}, {}, None):
        with pytest.raises(BadQueryError, match="no longer shown"):
            ui.ui_similar(5, 0.0, session, FakeEvent(bad))


def test_each_tab_shows_its_own_results(demo_startup: Startup) -> None:
    import gradio as gr

    ui = SearchUI(demo_startup)
    text_html, text_status, session = ui.ui_text("a red circle", "", 4, 0.0)
    empty = ui.ui_tab("image", session)
    assert empty[:2] == ("", "") and empty[2].tab == "image"
    image_html, _, session = ui.ui_image(str(DEMO_IMAGE), "", 0.5, "", 4, 0.0, empty[2])
    skip = type(gr.skip())
    assert all(isinstance(out, skip) for out in ui.ui_tab("image", session))  # already open: a page load's select
    back = ui.ui_tab("text", session)
    assert back[:2] == (text_html, text_status)
    assert ui.ui_tab("image", back[2])[0] == image_html != text_html


class FakeRequest:
    """The part of gr.Request that page load reads."""

    def __init__(self, **params: str) -> None:
        self.query_params = params


def test_a_link_whose_search_is_refused_opens_on_the_default_search_and_says_why(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    first = ui.defaults.text_examples[0]
    for params in ({"q": "a" * 1200}, {"q": "a red circle", "exclude": "a red circle"}):
        query, _, html, status, _ = ui.ui_load(FakeRequest(**params))
        assert query == first and html.count('class="tile"') == 12, params
        assert status.startswith("This link's search cannot run (") and f"results for “{first}”" in status


def test_page_load_restores_deep_links_else_shows_the_first_example(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    first = ui.defaults.text_examples[0]
    query, _, html, status, _ = ui.ui_load(FakeRequest())
    assert query == first and status.startswith(f"12 results for “{first}”") and html.count('class="tile"') == 12
    query, _, html, status, _ = ui.ui_load(FakeRequest(q="a blue square", __theme="dark"))
    assert query == "a blue square" and "“a blue square”" in status
    query, _, html, status, session = ui.ui_load(FakeRequest(id="shape-007", q="ignored"))
    assert session.view.request is not None and session.view.request.item_id == "shape-007"
    assert query == "" and "more like shape-007" in status and '<div class="query-card">' in html
    query, _, _, status, _ = ui.ui_load(FakeRequest(id="<script>"))  # unknown: the default instead
    assert query == first and f"12 results for “{first}”" in status
    assert status.startswith("No item &#60;script&#62; in this collection")  # said, not a generic hint


def test_ui_options_filter_fold_and_go_into_the_link(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    assert ui.available == ("colour", "cutoff", "collapse_radius")  # the demo has a colour column, no other metadata
    html, _, session = ui.ui_text("a circle", "", 6, 0.0, Session(), {"colour": "green", "collapse_radius": False,
                                                                     "cutoff": "flat", "date_from": "2020-01-01"})
    assert all(hit.colour == "green" for hit in shown_hits((html, "", session)))
    # defaults and absent filters left out
    assert 'data-link="?q=a+circle&amp;top_k=6&amp;threshold=0&amp;colour=green&amp;collapse_radius=off"' in html
    folded = shown_hits(ui.ui_similar(6, 0.0, session, FakeEvent({"index": 0}),
                                      {"colour": "any", "collapse_radius": True}))
    assert sum(hit.duplicates for hit in folded) > 0  # folding is the page's default
    with pytest.raises(BadQueryError, match="cutoff must be one of"):
        ui.ui_rerun(6, 0.0, 0.0, session, {"cutoff": "steep"})


def test_load_more_never_shows_a_hit_twice_and_fills_its_page(demo_startup: Startup,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ui = SearchUI(demo_startup)
    _, _, session = ui.ui_text("a circle", "", 5, 0.0, Session(), {"collapse_radius": False})
    shown = list(session.view.hits)
    searched = ui._hits

    def deeper_search_repeats_two(request, top_k, threshold, options):
        """What a deeper filtered search can do: rank two hits of the first page just below it."""
        found = searched(request, top_k, threshold, options)
        return [*shown[-2:], *found[:-2]] if options.offset == 5 else found

    monkeypatch.setattr(ui, "_hits", deeper_search_repeats_two)
    html, status, session = ui.ui_more(session)
    ids = [hit.id for hit in session.view.hits]
    assert len(ids) == len(set(ids)) == 10 and ids[:5] == [hit.id for hit in shown]  # full page, no repeat
    assert status.startswith("10 results") and 'data-action="more"' in html


def test_load_more_appends_the_next_page_in_a_stable_order(demo_startup: Startup) -> None:
    import gradio as gr

    ui = SearchUI(demo_startup)
    html, _, session = ui.ui_text("a circle", "", 5, 0.0, Session(), {"collapse_radius": False})
    assert 'data-action="more"' in html
    html, status, session = ui.ui_more(session)
    _, _, session = ui.ui_more(session)
    paged = [hit.id for hit in session.view.hits]
    whole = [hit.id for hit in shown_hits(ui.ui_text("a circle", "", 15, 0.0, Session(), {"collapse_radius": False}))]
    assert paged == whole and status.startswith("10 results") and html.count('class="tile"') == 10
    last, _, _ = ui.ui_text("a circle", "", 5, 0.99, Session())  # fewer than a page: nothing more to load
    assert 'data-action="more"' not in last
    with pytest.raises(BadQueryError, match="search first"):
        ui.ui_more(Session())
    unchanged = ui.ui_rerun(5, 0.0, 0.0, session, {"collapse_radius": False, "colour": "any"})
    assert all(isinstance(out, type(gr.skip())) for out in unchanged)  # keeps the pages loaded


def test_page_load_restores_the_options_of_a_link_and_ignores_bad_ones(demo_startup: Startup) -> None:
    ui = SearchUI(demo_startup)
    _, _, html, _, session = ui.ui_load(FakeRequest(q="a circle", colour="Red", collapse="off",
                                                sort="date", country="France"))
    # `collapse`, the option's earlier name, still read; no date or country data here
    assert session.view.request.options == {"colour": "Red", "collapse_radius": "off"}
    assert all(hit.colour == "red" for hit in session.view.hits) and "colour=Red" in html
    _, _, _, _, session = ui.ui_load(FakeRequest(q="a circle", colour="plaid"))
    assert session.view.request.options == {} and len(session.view.hits) == 12  # still a page of results


def test_defaults_and_examples_come_from_the_bundle(demo_startup: Startup) -> None:
    defaults = mode_defaults(demo_startup.engine)
    recorded = demo_startup.engine.bundle.manifest.ui
    assert recorded is not None and defaults == ModeDefaults(recorded.text_threshold, recorded.image_threshold,
                                                              recorded.examples)
    hint = score_hint(defaults)
    assert f"{recorded.text_threshold:.2f} for text" in hint and "0.2–0.35" not in hint


def test_a_bundle_without_recorded_hints_gets_them_measured(tmp_path: Path, demo_engine) -> None:
    from search.bundle.store import Bundle
    from search.query.engine import SearchEngine

    bundle = Bundle.load(small_demo_bundle(tmp_path))
    assert bundle.manifest.ui is None
    defaults = mode_defaults(SearchEngine(demo_engine.encoder, bundle))
    descriptions = {bundle.catalog.hit(row, 0.0).description for row in range(len(bundle.catalog))}
    assert defaults.text_examples and set(defaults.text_examples) <= descriptions  # the bundle's own texts
    assert 0.2 < defaults.text_threshold < 0.8 and 0.2 < defaults.image_threshold < 0.9  # measured, not 0.20/0.60


@pytest.mark.parametrize(("make", "message"), [(text_as_jpg, "notes.jpg: is a text file"), (pdf_file, "PDF")])
def test_ui_upload_that_pil_cannot_open_is_explained(tmp_path: Path, make: Callable[[Path], Path],
                                                     message: str) -> None:
    import gradio as gr
    from gradio.data_classes import ImageData

    path = make(tmp_path)
    payload = ImageData(path=str(path), orig_name=path.name)
    with pytest.raises(gr.Error, match=message) as caught:
        explain_unreadable_uploads(gr.Image(type="filepath", image_mode=None)).preprocess(payload)
    assert str(tmp_path) not in str(caught.value)


def test_importing_the_app_writes_nothing_into_the_repository() -> None:
    # gradio writes a .pyi stub beside any module that defines a component subclass; app.py must not.
    assert not (REPO_ROOT / "app.pyi").exists() and not (REPO_ROOT / "search.web.startup.pyi").exists()


# --- start-up ---

def test_default_start_is_the_demo_with_a_notice() -> None:
    startup = start_engine(EngineConfig())
    assert startup.is_demo and startup.notice is not None and "No index configured" in startup.notice


@pytest.mark.usefixtures("hub_offline")
def test_unreachable_hub_index_falls_back_to_the_demo_with_the_reason() -> None:
    startup = start_engine(EngineConfig(index="nobody/missing-index@main"))
    assert startup.is_demo and len(startup.engine.bundle.catalog) == 300
    assert startup.notice is not None
    shown = html.unescape(startup.notice)  # the names and the reason are escaped for Markdown
    assert "Could not load the index nobody/missing-index@main**" in shown
    assert "cannot download index bundle nobody/missing-index@main" in shown
    assert BUILD_COMMAND in startup.notice
    assert startup.engine.search_text("a red circle", 1)[0].description.startswith("a red circle")


def test_corrupt_local_index_falls_back_to_the_demo(tmp_path: Path) -> None:
    bundle = small_demo_bundle(tmp_path)
    (bundle / "index.hnsw").write_bytes(b"broken")
    startup = start_engine(EngineConfig(index=str(bundle)))
    assert startup.is_demo and "corrupt" in (startup.notice or "")


def test_configured_index_is_served_without_a_notice(tmp_path: Path) -> None:
    startup = start_engine(EngineConfig(index=str(small_demo_bundle(tmp_path))))
    assert not startup.is_demo and startup.notice is None
    assert len(startup.engine.bundle.catalog) == 20


def test_index_flag_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_INDEX", "from/env")
    assert parse_args([]).index == "from/env"
    assert parse_args(["--index", "owner/name@abc123"]).index == "owner/name@abc123"


def small_demo_bundle(tmp_path: Path) -> Path:
    """A 20-item bundle made with the demo encoder, but not the demo bundle itself (its pictures copied in)."""
    table = pq.read_table(DEMO_INDEX_DIR / "metadata.parquet").slice(0, 20)
    embeddings = np.load(DEMO_INDEX_DIR / "embeddings.npy")[:20]
    root = tmp_path / "bundle"
    for image in table.column("image").to_pylist():  # a bundle's local pictures live inside it
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_INDEX_DIR / image, root / image)
    write_bundle(root, embeddings, table, BundleInfo(DEMO_SPEC, source="unit-test"))
    return root


@pytest.mark.slow
def test_python_app_py_serves_the_demo_offline_with_a_missing_repo(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))  # the port asked for is taken: gradio moves to the next one
    port = taken.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "GRADIO_SERVER_PORT": str(port),
           "SEARCH_INDEX": "nobody/missing-index", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client = wait_for_client(f"http://127.0.0.1:{port + 1}/", process)
        hits = client.predict("a red circle", 5, 0.0, api_name="/search_text")
        assert len(hits) == 5 and all("red circle" in hit["description"] for hit in hits)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        taken.close()
    assert "cannot load index nobody/missing-index" in output
    assert ".;" not in output and "instead. " not in output  # the reason's own full stop ends the line
    assert f"port {port} is taken, so the app listens on port {port + 1} instead; set GRADIO_SERVER_PORT" in output


def wait_for_client(url: str, process: subprocess.Popen, timeout: float = 120) -> Client:
    """Connect once the server answers; fail with its output if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{process.communicate()[0]}")
        try:
            return Client(url, verbose=False)
        except Exception:  # not listening yet
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer at {url} within {timeout} s")


# --- pure helpers ---

UNSPLASH_HIT = Hit("abc", 0.3127, "https://images.unsplash.com/photo-1?ixid=x&w=1080", "https://unsplash.com/photos/abc",
                   "a foggy forest", "Jane Doe")


def test_unsplash_hit_is_credited_as_unsplash_asks() -> None:
    html = credit_html(UNSPLASH_HIT, REPO_ROOT)
    assert 'Photo by <a href="https://unsplash.com/photos/abc?utm_source=semantic_image_search&amp;utm_medium=' \
           'referral"' in html
    assert '>Jane Doe</a> on <a href="https://unsplash.com/?utm_source=' in html and ">Unsplash</a>" in html


def test_other_hits_credit_the_source_page_or_the_local_file(tmp_path: Path) -> None:
    web = Hit("w", 0.5, "https://example.com/a.jpg", "https://example.com/a", "", "<Bob>")
    assert "Photo by &lt;Bob&gt;, <a href=\"https://example.com/a\"" in credit_html(web, tmp_path)
    local = Hit("l", 0.5, str(tmp_path / "images" / "x.jpg"), None, "a thing", None)
    assert credit_html(local, tmp_path) == "a thing — local file <code>images/x.jpg</code>"


@pytest.mark.parametrize("page_url", ["javascript:alert(1)", "JaVaScRiPt://unsplash.com/%0Aalert(1)",
                                      " java\tscript:alert(1)", "data:text/html,<script>alert(1)</script>",
                                      "vbscript:msgbox", "//evil.example/x", "http://[::1", "https:///no-host"])
def test_only_http_page_urls_become_links(page_url: str) -> None:
    html = credit_html(Hit("x", 0.5, "https://images.example/x.jpg", page_url, "a thing", "Eve"), REPO_ROOT)
    assert html == "a thing — Photo by Eve"  # credited, linked nowhere
    assert "href" not in html and "script" not in html.lower()


def test_unsplash_thumbnails_are_resized_and_others_left_alone() -> None:
    assert thumbnail(UNSPLASH_HIT) == "https://images.unsplash.com/photo-1?ixid=x&w=480"
    assert thumbnail(Hit("l", 1.0, "/data/x.jpg", None, "", None)) == "/data/x.jpg"


def test_status_line_counts_times_and_hints() -> None:
    hit = Hit("a", 0.5, "x", None, "", None)
    assert status_text([hit], 0.0234, 0.2, None, "“cat”") == "1 result for “cat” in 23 ms (threshold 0.20)"
    assert status_text([], 0.01, 0.3, 0.21, "“cat”").startswith(
        "Nothing above 0.30 for “cat” (the closest scores 0.210) — lower the threshold")
    assert status_text([], 0.01, 0.3, None, "“cat”", filtered=True).startswith(
        "No picture passes the filters for “cat” — loosen or clear them in Options.")
    assert status_text([], 0.01, 0.3, None, "more like a").startswith("Nothing above 0.30 for more like a — lower")


def test_combined_query_weights_and_negatives() -> None:
    both = combined_query("a cat", "img.jpg", 0.25, "dog, , grass ")
    assert [(term.text, term.image, term.weight) for term in both.positives] == [(None, "img.jpg", 0.75),
                                                                                ("a cat", None, 0.25)]
    assert both.negatives == ("dog", "grass")
    assert [term.image for term in combined_query("a cat", "img.jpg", 0.0, "").positives] == ["img.jpg"]
    assert [term.text for term in combined_query("", "img.jpg", 1.0, "").positives] == [None]
