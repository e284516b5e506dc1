"""Journeys in Chromium on a person's own folder (EXIF dates, cameras, GPS; built with `build_index.py
--images-dir`), at 1400x900 and 390x844: many steps, each checked against what the folder holds.

A tile is known by its picture: the thumbnail file in its src maps to the item id through the bundle's metadata,
so the checks hold whatever captions the page writes. One build, one server per module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from search.bundle.store import Bundle
from search.query.engine import SearchEngine
from search.web.startup import Startup
from tests.app_server import serve
from tests.folder_gallery import TRIPS, PhotoFolder, build_folder_bundle, write_photo_folder
from tests.test_browser import DESKTOP, PHONE, TILES, TIMEOUT_MS, browser, open_options, status_after  # noqa: F401
from tests.test_options_layout import MIN_CONTROL_CHARS, PANEL_PROBLEMS_JS, accessibility_problems

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


class Folder:
    """The served folder collection: its pictures' facts and, per thumbnail file name, the item id."""

    def __init__(self, photos: PhotoFolder, bundle: Path, url: str) -> None:
        rows = pq.read_table(bundle / "metadata.parquet").select(["id", "image"]).to_pylist()
        self.photos, self.url = photos, url
        self.by_thumbnail = {Path(row["image"]).name: row["id"] for row in rows}

    def ids_shown(self, page) -> list[str]:
        """The ids of the pictures the grid shows, in order."""
        sources = page.locator(f"{TILES} img").evaluate_all("(imgs) => imgs.map((img) => img.getAttribute('src'))")
        return [self.id_of(src) for src in sources]

    def id_of(self, src: str) -> str:
        return self.by_thumbnail[Path(unquote(src)).name]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, demo_encoder) -> Iterator[Folder]:
    root = tmp_path_factory.mktemp("folder-journeys")
    photos = write_photo_folder(root / "photos", seed=23)
    bundle = build_folder_bundle(root / "photos", root / "bundle")
    with serve(Startup(SearchEngine(demo_encoder, Bundle.load(bundle)), None, False)) as url:
        yield Folder(photos, bundle, url)


@pytest.fixture
def open_folder(browser, folder: Folder):  # noqa: F811
    """Factory: a new page at `viewport` on the folder collection (plus a query string), its status shown."""
    contexts = []

    def open_at(viewport: dict, query: str = "", dark: bool = False):
        context = browser.new_context(viewport=viewport, color_scheme="dark" if dark else "light")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=folder.url.rstrip("/"))
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(folder.url.rstrip("/") + "/" + query)
        page.locator("#status p").first.wait_for()
        return page

    yield open_at
    for context in contexts:
        context.close()


def search(page, text: str) -> str:
    """Type `text` in the query box, press Enter, and return the status line once it reports the search."""
    box = page.locator("#query textarea, #query input").first
    box.fill(text)
    box.press("Enter")
    return status_after(page, rf"results? for “{re.escape(text)}”")


def type_filter(page, key: str, value: str) -> None:
    """Type a filter value in the options panel (open), press Enter and leave the box, as a person moving on does;
    return once the searches that started have ended (leaving the box re-runs the search too), in results or in
    an error."""
    box = page.locator(f"#opt-{key} input, #opt-{key} textarea").first
    box.fill(value)
    box.press("Enter")
    box.blur()
    page.wait_for_timeout(100)
    page.wait_for_function("() => Array.from(document.querySelectorAll('#results [data-testid=status-tracker], "
                           "#status [data-testid=status-tracker]'))"
                           ".every((e) => e.classList.contains('hide') || e.textContent.includes('Error'))")


def wait_for_ids(page, folder: Folder, keep, what: str, tries: int = 60) -> list[str]:
    """Wait (`tries` quarter seconds at most) until the grid shows results that all pass `keep(id)`; the ids."""
    ids: list[str] = []
    for _ in range(tries):
        ids = folder.ids_shown(page)
        if ids and all(keep(item) for item in ids):
            return ids
        page.wait_for_timeout(250)
    raise AssertionError(f"the grid never showed only {what}: {ids}")


def open_detail(page, folder: Folder, index: int) -> tuple[str, str]:
    """Click tile `index`; the clicked tile's id and the id the dialog that opens shows."""
    tile = page.locator(TILES).nth(index)
    clicked = folder.id_of(tile.locator("img").get_attribute("src"))
    tile.click()
    dialog = page.locator("dialog.detail[open]")
    dialog.wait_for()
    facts = dict(zip(dialog.locator("dt").all_inner_texts(), dialog.locator("dd").all_inner_texts(), strict=True))
    return clicked, facts.get("Id", "")


def close_errors(page, text: str) -> int:
    """Wait for an error toast with `text`, close every toast shown; how many had `text`."""
    toasts = page.locator("[data-testid='toast-body']")
    toasts.filter(has_text=text).first.wait_for()
    page.wait_for_timeout(300)  # a second toast for the same error comes within a few frames
    count = toasts.filter(has_text=text).count()
    page.evaluate("() => document.querySelectorAll(\"[data-testid='toast-close']\").forEach((b) => b.click())")
    page.wait_for_function("() => !document.querySelector(\"[data-testid='toast-body']\")")
    return count


@pytest.mark.parametrize(("viewport", "dark"), [(DESKTOP, False), (PHONE, True)], ids=["desktop-light", "phone-dark"])
def test_search_filter_search_again_open_close_and_change_the_filter(open_folder, folder: Folder, viewport: dict,
                                                                      dark: bool) -> None:
    page = open_folder(viewport, "?__theme=dark" if dark else "", dark)
    assert page.evaluate("document.body.classList.contains('dark')") == dark
    search(page, "a blue square")
    # every trip, no filter yet
    assert {folder.photos.trips[item][0] for item in folder.ids_shown(page)} == {trip[0] for trip in TRIPS}
    open_options(page)
    assert page.evaluate(PANEL_PROBLEMS_JS, MIN_CONTROL_CHARS) == []  # the many-filter panel reads well
    assert "country, city" in page.locator("#options-missing").inner_text()  # no data for them in a folder
    type_filter(page, "camera", "fuji")
    kyoto = wait_for_ids(page, folder, lambda item: item.startswith("2021 Kyoto/"), "the Kyoto trip (FUJIFILM)")
    assert folder.photos.specs[kyoto[0]].label == "blue square"
    search(page, "a red circle")
    kyoto = wait_for_ids(page, folder, lambda item: item.startswith("2021 Kyoto/"), "the Kyoto trip (FUJIFILM)")
    assert folder.photos.specs[kyoto[0]].label == "red circle" and "camera=fuji" in page.url
    # Whether the dialog shows the clicked picture after a second search: its own test below.
    clicked, _ = open_detail(page, folder, 0)
    assert page.locator("dialog.detail[open] img.detail-img").get_attribute("alt")
    page.keyboard.press("Escape")
    page.locator("dialog.detail[open]").wait_for(state="detached")
    type_filter(page, "camera", "canon")
    lisbon = wait_for_ids(page, folder, lambda item: item.startswith("2019 Lisbon/"), "the Lisbon trip (Canon)")
    assert folder.photos.specs[lisbon[0]].label == "red circle" and "camera=canon" in page.url
    assert clicked not in lisbon
    assert accessibility_problems(page) == []
    open_detail(page, folder, 1)  # and with the detail view open
    assert accessibility_problems(page) == []


def test_the_detail_view_shows_the_clicked_tile_after_a_filtered_search_again(open_folder, folder: Folder) -> None:
    page = open_folder(DESKTOP)
    search(page, "a blue square")
    open_options(page)
    type_filter(page, "camera", "apple")
    wait_for_ids(page, folder, lambda item: item.startswith("2023 Reykjavik/"), "the Reykjavik trip (Apple)")
    search(page, "a green star")
    wait_for_ids(page, folder, lambda item: item.startswith("2023 Reykjavik/"), "the Reykjavik trip (Apple)")
    for index in (0, 2):
        clicked, shown = open_detail(page, folder, index)
        assert shown == clicked
        page.keyboard.press("Escape")


def test_a_bad_typed_date_then_a_good_one_on_a_phone(open_folder, folder: Folder) -> None:
    page = open_folder(PHONE)
    search(page, "a green triangle")
    before = folder.ids_shown(page)
    open_options(page)
    type_filter(page, "date-from", "2021-13-45")
    assert close_errors(page, "2021-13-45") == 1  # one toast for one mistake
    assert folder.ids_shown(page) == before  # the results stay as they were
    type_filter(page, "date-from", "2021-01-01")
    later = wait_for_ids(page, folder, lambda item: not item.startswith("2019 "), "pictures from 2021 on")
    assert folder.photos.specs[later[0]].label == "green triangle" and "date_from=2021-01-01" in page.url
    assert page.locator("[data-testid='toast-body']").count() == 0


def test_a_copied_link_opens_the_same_screen_in_a_fresh_page(open_folder, folder: Folder) -> None:
    page = open_folder(DESKTOP)
    search(page, "a yellow circle")
    open_options(page)
    type_filter(page, "date-to", "2021-12-31")
    shown = wait_for_ids(page, folder, lambda item: not item.startswith("2023 "), "pictures up to 2021")
    status = page.locator("#status").inner_text()
    page.locator("#copy-link").click()
    page.locator("#copy-note").filter(has_text="Link copied").wait_for()
    link = page.evaluate("navigator.clipboard.readText()")
    fresh = open_folder(DESKTOP, link[link.index("?"):])
    status_after(fresh, re.escape(status.split(" in ")[0]))
    assert folder.ids_shown(fresh) == shown
    open_options(fresh)
    assert fresh.locator("#opt-date-to input, #opt-date-to textarea").first.input_value() == "2021-12-31"


def test_a_copied_link_keeps_the_threshold_and_exclude(open_folder, folder: Folder) -> None:
    page = open_folder(DESKTOP)
    search(page, "a blue triangle")
    open_options(page)
    page.locator("#exclude input, #exclude textarea").first.fill("circle")
    page.locator("#text-threshold input[type=number]").fill("0.3")
    page.locator("#text-threshold input[type=number]").press("Enter")
    status_after(page, r"threshold 0\.30")
    link = page.url
    fresh = open_folder(DESKTOP, link[link.index("?"):])
    fresh.set_default_timeout(3_000)  # the page has loaded: its status says which threshold it used
    status_after(fresh, r"threshold 0\.30")
    open_options(fresh)
    assert fresh.locator("#exclude input, #exclude textarea").first.input_value() == "circle"


def test_a_folder_collection_opens_on_a_sample_of_its_pictures(open_folder, folder: Folder) -> None:
    page = open_folder(PHONE)
    ids = wait_for_ids(page, folder, lambda item: True, "any picture", tries=12)
    assert len({folder.photos.trips[item][0] for item in ids}) == 3  # from every trip
