"""Journeys on the demo in real Chromium: what a person sees at every step of a search, the tenth click as the first.

Each journey runs at 1400×900 (light), and those that reach a screen no other journey shows also at 390×844 (dark),
where that screen's layout and colours differ (`@both_sizes`); one app server for the module. Each checks axe-core
(no serious or critical violation) in its states. JOURNEY_SHOTS=DIR saves screenshots of key states there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC
from tests.test_browser import DESKTOP, PHONE, TILES, browser, expect_error, open_options, status_after  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]
DESKTOP_LIGHT = pytest.param((DESKTOP, False), id="desktop-light")
PHONE_DARK = pytest.param((PHONE, True), id="phone-dark")
both_sizes = pytest.mark.parametrize("journey", [DESKTOP_LIGHT, PHONE_DARK], indirect=True)
QUERY = "#query textarea, #query input"
DIALOG = "dialog.detail[open]"


@pytest.fixture
def journey(request, browser, page_app_url: str):  # noqa: F811
    """Factory: a fresh page on the app at this journey's size and theme (plus a query string), results shown;
    1400×900 light unless the test asks for sizes (`@both_sizes`)."""
    viewport, dark = getattr(request, "param", (DESKTOP, False))
    contexts = []

    def open_at(query: str = "", url: str = page_app_url):
        context = browser.new_context(viewport=viewport, color_scheme="dark" if dark else "light")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url.rstrip("/"))
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url.rstrip("/") + "/" + query)
        page.locator(TILES).first.wait_for()
        return page

    yield open_at
    for context in contexts:
        context.close()


def screen(page) -> tuple:
    """What a person sees of a search: the query box, the status (less its timing) and the pictures in order."""
    lines = [line for line in page.locator("#status").inner_text().splitlines() if line.strip()]
    status = re.sub(r" in \d+ ms", "", lines[-1] if lines else "")  # not a progress timer drawn above it
    pictures = [img.get_attribute("src") for img in page.locator(f"{TILES} img").all()]
    return page.locator(QUERY).first.input_value(), status, pictures


def search(page, text: str) -> tuple:
    """Type a query, press Enter, wait for its results; returns the screen."""
    box = page.locator(QUERY).first
    box.fill(text)
    box.press("Enter")
    status_after(page, rf"results? for “{re.escape(text)}”")
    page.wait_for_function(f"document.querySelector('{TILES} img')?.alt.includes({text.rsplit(maxsplit=1)[-1]!r})")
    return screen(page)


def detail_matches_tile(page, index: int, click: bool = True) -> str:
    """Open (or, with click=False, expect open) the detail of result `index`: its picture, title and id are the
    tile's own. Returns the id."""
    tile = page.locator(TILES).nth(index)
    src, alt = tile.locator("img").get_attribute("src"), tile.locator("img").get_attribute("alt")
    if click:
        tile.click()
    dialog = page.locator(DIALOG)
    dialog.wait_for()
    assert dialog.locator("img.detail-img").get_attribute("src") == src
    assert dialog.locator(".detail-title").inner_text() == alt
    shown_id = dialog.locator("dd").nth(1).inner_text()
    assert f"{shown_id}.jpg" in src  # the demo's pictures are named by their id
    return shown_id


def close_detail(page) -> None:
    page.keyboard.press("Escape")
    page.locator(DIALOG).wait_for(state="detached")


def threshold_box(page, which: str = "text"):
    return page.locator(f"#{which}-threshold input[type=number]")


def accessible(page, name: str = "") -> None:
    """No serious or critical axe-core violation in this state; a screenshot of it under JOURNEY_SHOTS."""
    from axe_playwright_python.sync_playwright import Axe

    # An output Gradio is still updating is drawn at 20 % opacity, and fades back: axe would measure a state no one
    # reads (a pressed mark read at 4.35:1 at 96 % of its opacity, 5.0:1 at rest).
    page.wait_for_function("() => !document.querySelector('.pending') && "
                           "!document.getAnimations().some((a) => a instanceof CSSTransition)")
    violations = Axe().run(page).response["violations"]
    bad = [(v["id"], v["impact"], [(n["target"], n.get("failureSummary")) for n in v["nodes"]][:3])
           for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == []
    if name and (folder := os.environ.get("JOURNEY_SHOTS")):
        size = page.viewport_size
        page.screenshot(path=str(Path(folder) / f"{name}-{size['width']}.png"))


def no_error_badges(page) -> None:
    """Gradio draws a red "Error" badge over an output whose event failed: none over the status line or grid."""
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('#status-row .error, #results .error'))
        .filter((badge) => {
            const box = badge.getBoundingClientRect();
            for (let node = badge; node; node = node.parentElement) {
                const style = getComputedStyle(node);
                if (style.display === 'none' || style.visibility === 'hidden' || style.opacity === '0') return false;
            }
            return box.width > 0 && box.height > 0;
        }).map((badge) => badge.textContent)""")
    assert drawn == []


def test_second_and_third_searches_open_the_clicked_picture(journey) -> None:
    page = journey()
    search(page, "a blue square")
    detail_matches_tile(page, 0)
    page.keyboard.press("ArrowRight")  # ← and → walk this search's results
    detail_matches_tile(page, 1, click=False)
    page.keyboard.press("ArrowLeft")
    detail_matches_tile(page, 0, click=False)
    close_detail(page)
    search(page, "a green circle")
    detail_matches_tile(page, 2)
    accessible(page, "third-search-detail")


def test_an_example_button_then_the_detail(journey) -> None:
    page = journey()
    example = page.locator("#examples button").nth(1)
    text = example.inner_text()
    example.click()
    status_after(page, rf"results? for “{re.escape(text)}”")
    page.wait_for_function(f"document.querySelector('{TILES} img')?.alt === {text!r}")
    assert page.locator(QUERY).first.input_value() == text
    detail_matches_tile(page, 1)
    accessible(page)


@pytest.mark.parametrize(("journey", "button", "query", "tab"), [
    pytest.param((DESKTOP, False), "More like this", "a yellow star", "Text", id="more-like-this-desktop-light"),
    pytest.param((PHONE, True), "More like this", "a yellow star", "Text", id="more-like-this-phone-dark"),
    pytest.param((DESKTOP, False), "Search with this picture and a text", "a red triangle", "Image",
                 id="with-a-text-desktop-light"),
], indirect=["journey"])
def test_a_search_from_the_detail_then_its_detail_then_back(journey, button: str, query: str, tab: str) -> None:
    """A detail view's button searches from its picture (More like this on the Text tab, Search with this picture
    and a text on the Image tab); Back gives the text search it came from, as it was, on the Text tab."""
    page = journey()
    before = search(page, query)
    picked = detail_matches_tile(page, 1)
    page.locator(DIALOG).get_by_role("button", name=button).click()
    status_after(page, rf"results? for more like {picked}")
    assert f"?id={picked}" in page.url and ("tab=image" in page.url) == (tab == "Image")
    assert page.get_by_role("tab", name=tab).get_attribute("aria-selected") == "true"
    assert detail_matches_tile(page, 0) != picked  # the new results' first picture, not the old list's
    accessible(page, f"{tab.lower()}-tab-search-from-detail")
    close_detail(page)
    page.go_back()
    status_after(page, rf"results? for “{re.escape(query)}”")
    assert page.get_by_role("tab", name="Text").get_attribute("aria-selected") == "true"
    page.wait_for_function(f"document.querySelectorAll('{TILES}').length === {len(before[2])}")
    assert screen(page) == before
    accessible(page)
    assert detail_matches_tile(page, 1) == picked


def test_back_and_forward_step_through_searches_and_their_options(journey) -> None:
    page = journey()
    first = screen(page)
    blue = search(page, "a blue square")
    open_options(page)
    threshold_box(page).fill("0.5")
    threshold_box(page).press("Enter")
    status_after(page, r"for “a blue square”.*threshold 0\.50")
    stricter = screen(page)
    assert "threshold=0.5" in page.url and len(stricter[2]) < len(blue[2])
    page.go_back()
    status_after(page, r"for “a blue square”.*threshold 0\.42")
    assert threshold_box(page).input_value() == "0.42" and screen(page) == blue
    page.go_back()
    status_after(page, rf"for “{re.escape(first[0])}”")
    assert screen(page) == first
    page.go_forward()
    page.go_forward()
    status_after(page, r"for “a blue square”.*threshold 0\.50")
    assert threshold_box(page).input_value() == "0.5" and screen(page) == stricter
    accessible(page, "forward-with-threshold")


def test_a_copied_link_reproduces_the_screen_in_a_fresh_page(journey) -> None:
    page = journey()
    search(page, "a circle")
    open_options(page)
    exclude = page.locator("#exclude textarea, #exclude input").first
    exclude.fill("blue")
    exclude.press("Enter")  # Enter in Exclude runs the search
    page.wait_for_function("location.search.includes('exclude=blue')")
    threshold_box(page).fill("0.45")
    threshold_box(page).press("Enter")
    status_after(page, r"for “a circle”.*threshold 0\.45")
    shown = screen(page)
    assert not any("blue" in (img.get_attribute("alt") or "") for img in page.locator(f"{TILES} img").all())
    page.locator("#copy-link").click()
    page.locator("#copy-note").filter(has_text="Link copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.url and "threshold=0.45" in copied and "exclude=blue" in copied
    fresh = journey(copied[copied.index("?"):])
    status_after(fresh, r"for “a circle”.*threshold 0\.45")
    assert screen(fresh) == shown
    open_options(fresh)
    assert threshold_box(fresh).input_value() == "0.45"
    assert fresh.locator("#exclude textarea, #exclude input").first.input_value() == "blue"
    accessible(fresh, "copied-link-fresh-page")


@both_sizes
def test_load_more_then_the_detail_of_item_15(journey) -> None:
    page = journey("?q=a+circle&threshold=0")
    status_after(page, r"12 results for “a circle”.*threshold 0\.00")
    steps = page.evaluate("history.length")
    page.locator("#results button.load-more").click()
    status_after(page, r"24 results for “a circle”")
    assert page.evaluate("history.length") == steps  # another page of the same search is no step back
    detail_matches_tile(page, 14)
    page.keyboard.press("ArrowRight")
    detail_matches_tile(page, 15, click=False)
    accessible(page, "load-more-detail-15")


@both_sizes
def test_an_error_then_a_good_search(journey) -> None:
    page = journey()
    before = search(page, "a purple circle")
    open_options(page)
    exclude = page.locator("#exclude textarea, #exclude input").first
    exclude.fill(",".join("abcdefghijkl"))  # 12 terms: more than the engine takes
    exclude.press("Enter")
    expect_error(page, "lists 12 terms")
    no_error_badges(page)
    assert screen(page) == before  # the results stay as they were
    exclude.fill("dark")
    exclude.press("Enter")
    page.wait_for_function("location.search.includes('exclude=dark')")
    status_after(page, r"results? for “a purple circle”")
    assert page.locator("[data-testid='toast-body']").count() == 0
    accessible(page, "error-then-good")


@both_sizes
def test_the_image_and_text_tabs_keep_their_own_results(journey) -> None:
    page = journey()
    text = search(page, "a green triangle")
    page.get_by_role("tab", name="Image").click()
    page.wait_for_function(f"document.querySelectorAll('{TILES}').length === 0")
    page.locator("#image input[type=file]").set_input_files(str(DEMO_INDEX_DIR / "images" / "shape-007.jpg"))
    status_after(page, r"results? for the image")
    picture = screen(page)
    detail_matches_tile(page, 1)
    close_detail(page)
    page.get_by_role("tab", name="Text").click()
    status_after(page, r"results? for “a green triangle”")
    assert screen(page) == text
    detail_matches_tile(page, 2)
    close_detail(page)
    page.get_by_role("tab", name="Image").click()
    status_after(page, r"results? for the image")
    assert screen(page)[1:] == picture[1:]
    detail_matches_tile(page, 0)
    accessible(page, "image-tab-detail")


@both_sizes
def test_the_text_weight_and_exclude_rerun_a_mixed_search(journey) -> None:
    page = journey()
    page.get_by_role("tab", name="Image").click()
    page.locator("#image input[type=file]").set_input_files(str(DEMO_INDEX_DIR / "images" / "shape-007.jpg"))
    status_after(page, r"results? for the image")
    picture = screen(page)
    mix = page.locator("#mix-text textarea, #mix-text input").first
    mix.fill("a red square")
    mix.press("Enter")
    page.wait_for_function(f"document.querySelector('{TILES} img')?.src !== {picture[2][0]!r}")
    open_options(page)
    weight = page.locator("#weight input[type=number]")
    weight.fill("1")
    weight.press("Enter")  # all text: the picture no longer counts
    page.wait_for_function(f"Array.from(document.querySelectorAll('{TILES} img')).slice(0, 3)"
                           ".every((img) => img.alt.includes('red square'))")
    assert "weight=1" in page.url
    detail_matches_tile(page, 0)
    accessible(page)


def test_a_more_like_this_link_with_its_settings_in_a_fresh_page(journey) -> None:
    page = journey("?id=shape-121&top_k=5&threshold=0.6")
    status_after(page, r"results? for more like shape-121.*threshold 0\.60")
    assert page.locator(TILES).count() <= 5
    open_options(page)
    assert threshold_box(page, "image").input_value() == "0.6"
    assert page.locator("#top-k input[type=number]").input_value() == "5"
    detail_matches_tile(page, 0)
    accessible(page)


@both_sizes
def test_copy_link_says_so_on_the_button_and_covers_nothing(journey) -> None:
    page = journey()
    status, button = page.locator("#status"), page.locator("#copy-link")
    others = [page.locator(selector).first for selector in ("#examples button", "#status")]
    before = [other.bounding_box() for other in (*others, button)]
    button.click()
    page.locator("#copy-link").filter(has_text="Copied ✓").wait_for()
    assert page.locator("#copy-note").inner_text() == "Link copied"  # said to screen readers (role=status)
    assert [other.bounding_box() for other in (*others, button)] == before  # nothing moved or grew
    note = page.locator("#copy-note").bounding_box()
    assert note["width"] <= 1 and note["height"] <= 1  # out of sight: it covers no example, chip or status
    accessible(page, "link-copied")
    page.locator("#copy-link").filter(has_text="Copy link").wait_for(timeout=8000)  # and back after a few seconds
    assert page.locator("#copy-note").inner_text() == ""
    assert status.bounding_box() == before[1]
    button.click()
    page.locator("#copy-link").filter(has_text="Copied ✓").wait_for()
    page.locator("#examples button").last.click()  # another search, another link: the label goes back at once
    page.wait_for_function("(copied) => window.location.href !== copied", arg=button.get_attribute("data-copied"))
    page.locator("#copy-link").filter(has_text="Copy link").wait_for(timeout=2000)


@pytest.fixture(scope="module")
def dated_url(demo_startup, tmp_path_factory) -> str:
    """The app on 40 demo pictures given dates, so the page offers the typed date filters."""
    from search.bundle.manifest import BundleInfo
    from search.bundle.store import Bundle, write_bundle
    from search.query.engine import SearchEngine
    from search.web.startup import Startup
    from tests.app_server import serve

    root = tmp_path_factory.mktemp("dated") / "bundle"
    table = pq.read_table(DEMO_INDEX_DIR / "metadata.parquet").slice(0, 40)
    table = table.append_column("date", pa.array([f"2021-0{1 + row % 9}-1{row % 10}T10:00:00" for row in range(40)]))
    for image in table.column("image").to_pylist():
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_INDEX_DIR / image, root / image)
    write_bundle(root, np.load(DEMO_INDEX_DIR / "embeddings.npy")[:40], table, BundleInfo(DEMO_SPEC, source="t"))
    engine = SearchEngine(demo_startup.engine.encoder, Bundle.load(root))
    with serve(Startup(engine, None, False)) as url:
        yield url


@both_sizes
def test_a_bad_typed_date_is_said_once_without_error_badges(journey, dated_url: str) -> None:
    page = journey("?q=a+circle", url=dated_url)
    before = screen(page)
    open_options(page)
    date = page.locator("#opt-date-from textarea, #opt-date-from input").first
    date.fill("2021-13-45")
    date.press("Enter")
    toast = page.locator("[data-testid='toast-body']")
    toast.first.wait_for()
    page.keyboard.press("Tab")  # leaving the box after Enter: no second run, no second message
    page.wait_for_timeout(800)
    no_error_badges(page)
    assert toast.count() == 1 and toast.first.inner_text().count("date_from must be a date") == 1
    toast.locator("[data-testid='toast-close']").click()  # gradio's toast nests a button in a focusable header
    assert screen(page) == before
    accessible(page, "bad-date")


def _pressed(page) -> list[str]:
    """The ids of the tiles marked good, as the page shows them."""
    pressed = page.locator('#results .mark-like[aria-pressed="true"]').all()
    return [button.get_attribute("data-id") for button in pressed]


@both_sizes
def test_marks_search_again_and_the_link_keeps_them(journey) -> None:
    page = journey()
    before = search(page, "a triangle")
    red = page.locator("#results li.tile").filter(has=page.locator('img[alt*="red triangle"]'))
    red_before = red.count()
    red.nth(0).locator(".mark-like").press("Enter")  # a real button: the keyboard marks it
    red.nth(1).locator("button.tile-open").click()  # the detail view's key
    page.locator(DIALOG).wait_for()
    page.keyboard.press("+")
    assert page.locator(f'{DIALOG} [data-action="mark-like"]').get_attribute("aria-pressed") == "true"
    close_detail(page)
    marked = _pressed(page)
    assert len(marked) == 2 and page.locator(".marks-count").inner_text() == "Marked: 2 good, 0 not this"
    page.locator('[data-action="marks-search"]').click()
    page.wait_for_function("new URLSearchParams(location.search).has('like')")
    page.wait_for_function("document.querySelector('.marks-bar [data-action=\"marks-search\"]').disabled")
    after, shown_marked = screen(page), _pressed(page)
    assert after[2] != before[2] and red.count() > red_before  # more of what was marked good
    assert page.evaluate("new URLSearchParams(location.search).get('like')").split(",") == marked
    assert shown_marked and set(shown_marked) <= set(marked)  # liked items stay, shown marked
    accessible(page, "marked")
    page.reload()
    page.locator(TILES).first.wait_for()
    page.wait_for_function("document.querySelector('.marks-count')?.textContent.startsWith('Marked: 2')")
    assert screen(page)[2] == after[2] and _pressed(page) == shown_marked
    page.go_back()
    page.wait_for_function("!new URLSearchParams(location.search).has('like')")
    page.wait_for_function("document.querySelector('.marks-count')?.textContent === 'No results marked'")
    assert screen(page)[2] == before[2] and _pressed(page) == []
