"""Readings of a query on the served app, over a dated place gallery: the REST and Gradio APIs say what they applied
and the off switch turns it off; in Chromium, a chip shows the reading, removing it re-runs the search without it,
and the link carries that through a reload. One app server for the module."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.place_gallery import TUNING_SEED, write_place_gallery
from tests.test_browser import DESKTOP, PHONE, TILES, browser, status_after  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]
QUERY = "red circle in Lisbon"


@pytest.fixture(scope="module")
def gallery_url(tmp_path_factory: pytest.TempPathFactory, demo_encoder) -> Iterator[str]:
    from search.bundle.store import Bundle
    from search.query.engine import SearchEngine
    from search.web.startup import Startup
    from tests.app_server import serve

    gallery = write_place_gallery(tmp_path_factory.mktemp("understand") / "b", demo_encoder, 96, TUNING_SEED + 2,
                                  dated=True)
    with serve(Startup(SearchEngine(demo_encoder, Bundle.load(gallery.root)), None, False)) as url:
        yield url


def rest_search(url: str, **params: str) -> tuple[list[dict], list[dict]]:
    answer = httpx.get(url.rstrip("/") + "/api/search", params={"q": QUERY, "top_k": "8", **params}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json(), json.loads(answer.headers["x-understood"])


def test_the_rest_api_applies_the_place_and_says_so_and_understand_false_does_not(gallery_url: str) -> None:
    hits, read = rest_search(gallery_url)
    assert [(reading["kind"], reading["filters"]) for reading in read] == [("place", {"city": "Lisbon"})]
    known = [hit["city"] for hit in hits if hit["city"] is not None]
    assert known and set(known) == {"Lisbon"}  # items known to be elsewhere are gone; those without a place stay
    plain, nothing = rest_search(gallery_url, understand="false")
    assert nothing == []
    assert plain[0]["city"] not in (None, "Lisbon")  # the demo CLIP cannot read a place: red circles of anywhere
    assert [hit["id"] for hit in rest_search(gallery_url, not_understood="place")[0]] == [hit["id"] for hit in plain]


def test_the_gradio_api_says_what_it_reads(gallery_url: str) -> None:
    client = Client(gallery_url, verbose=False)
    read = client.predict("beach in Portugal 2019", api_name="/understood")
    assert [(reading["kind"], reading["label"]) for reading in read] == [("place", "Portugal"), ("date", "2019")]
    assert client.predict("beach in Portugal 2019", understand=False, api_name="/understood") == []
    hits = client.predict(QUERY, 8, 0.0, api_name="/search_text")
    assert {hit["city"] for hit in hits} <= {"Lisbon", None}


def shots(page, name: str) -> None:
    if folder := os.environ.get("JOURNEY_SHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}-{page.viewport_size['width']}.png"))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_chip_shows_the_reading_and_removing_it_is_kept_in_the_link(browser, gallery_url: str,  # noqa: F811
                                                                        viewport: dict) -> None:
    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(gallery_url.rstrip("/") + "/?" + str(httpx.QueryParams({"q": QUERY})))
    status_after(page, re.escape(QUERY))
    chip = page.locator("#results button.reading-chip")
    chip.wait_for()
    assert "Lisbon" in chip.inner_text() and chip.get_attribute("data-kind") == "place"
    before = page.locator(f"{TILES} img").evaluate_all("(images) => images.map((image) => image.src)")
    bad = [v["id"] for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == []
    shots(page, "understand-chip")
    chip.focus()
    page.keyboard.press("Enter")  # a keyboard user removes it as a mouse user would
    chip.wait_for(state="detached")
    page.wait_for_function("() => window.location.search.includes('not_understood=place')")
    after = page.locator(f"{TILES} img").evaluate_all("(images) => images.map((image) => image.src)")
    assert after != before
    page.reload()
    page.locator(TILES).first.wait_for()
    status_after(page, re.escape(QUERY))
    assert page.locator("#results button.reading-chip").count() == 0
    assert page.locator(f"{TILES} img").evaluate_all("(images) => images.map((image) => image.src)") == after
    context.close()
