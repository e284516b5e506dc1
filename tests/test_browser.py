"""The app in a real browser: headless Debian Chromium driven by Playwright, against the app served in-process.

Chromium comes from Debian (apt-get), because Playwright's own browser download needs network access we do not
have. The test installs it when /usr/bin/chromium is missing and fails (never skips) when it cannot.
One browser serves the whole module, and one app server on the demo all the browser modules (`page_app_url`);
each test opens its own page (1400×900 or 390×844).
Set UPDATE_SCREENSHOT=1 to refresh assets/screenshot*.png, the pictures the README and docs/using-the-page.md show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from search.config import REPO_ROOT
from tests.conftest import DEMO_INDEX_DIR
from tests.odd_images import text_as_jpg

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000
TILES = "#results button.tile-open"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing; a clear failure when that is impossible."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and cannot be installed here (needs apt-get as root): run "
                    "`apt-get update && apt-get install -y chromium chromium-driver` and re-run the tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=900, check=False)
        if result.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed ({result.returncode}); the browser test needs Debian's "
                        f"chromium package:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, page_app_url: str):
    """Factory: a new page at `viewport` on the app (plus a query string), waited until its results show.

    Pages close when their test ends: each open page holds a connection to the app, and Chromium opens at most
    six per host, so pages left open would starve later ones.
    """
    contexts = []

    def open_at(viewport: dict, query: str = "", dark: bool = False):
        context = browser.new_context(viewport=viewport, color_scheme="dark" if dark else "light")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=page_app_url.rstrip("/"))
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        logs = []
        page.on("console", lambda message: logs.append(f"{message.type}: {message.text}"))
        page.goto(page_app_url.rstrip("/") + "/" + query)
        try:
            page.locator(TILES).first.wait_for()
        except PlaywrightTimeoutError:  # say what the page showed instead
            pytest.fail(f"no results on {page.url} within {TIMEOUT_MS} ms: status "
                        f"{page.locator('#status').inner_text()!r}, console {logs[-5:]}")
        return page

    yield open_at
    for context in contexts:
        context.close()


def status_after(page, pattern: str) -> str:
    """Wait until the status line matches `pattern`, then return it."""
    status = page.locator("#status")
    status.filter(has_text=re.compile(pattern)).wait_for()
    return status.inner_text()


def expect_error(page, text: str) -> None:
    """Wait for Gradio's error toast with `text`, then close it."""
    toast = page.locator("[data-testid='toast-body']").filter(has_text=text)
    toast.wait_for()
    toast.locator("[data-testid='toast-close']").click()
    toast.wait_for(state="detached")


def open_options(page) -> None:
    """Open the Options panel and wait until its controls have mounted: Gradio mounts them on opening and then sets
    their values, so a value typed within those milliseconds was overwritten (no visitor types that fast)."""
    page.locator("#options").get_by_text("Options").click()
    page.locator("#text-threshold input[type=number]").wait_for()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def tile_count(page) -> int:
    """How many results the grid shows."""
    return page.locator(TILES).count()


def first_painted_ms(page, alt_part: str) -> float:
    """Milliseconds from now until the first tile's picture (alt containing `alt_part`) is decoded and painted."""
    return page.evaluate("""async (part) => {
        const start = performance.now();
        return await new Promise((resolve) => {
            const look = () => {
                const img = document.querySelector('#results button.tile-open img');
                if (img && img.alt.includes(part) && img.complete && img.naturalWidth > 0)
                    requestAnimationFrame(() => resolve(performance.now() - start));
                else requestAnimationFrame(look);
            };
            look();
        });
    }""", alt_part)


def visible_without_scrolling(page, selector: str) -> bool:
    """Whether the element lies entirely inside the viewport as the page first shows it."""
    box = page.locator(selector).first.bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_page_opens_on_results_with_the_query_box_and_a_row_visible(open_page, viewport: dict) -> None:
    page = open_page(viewport)
    example = page.locator("#query textarea, #query input").first.input_value()
    assert example, "the page should open on an example query"
    status_after(page, rf"\d+ results for “{re.escape(example)}”")
    assert page.url.endswith("?q=" + example.replace(" ", "+"))  # the page's own deep link
    assert visible_without_scrolling(page, "#query")
    assert visible_without_scrolling(page, f"{TILES} >> nth=0")  # a whole first row: one tile's bottom edge
    for img in page.locator(f"{TILES} img").all():
        assert img.get_attribute("loading") == "lazy" and example.split()[0] in (img.get_attribute("alt") or "")
    save_screenshot(page, "screenshot.png" if viewport is DESKTOP else "screenshot-phone.png")
    assert not page.evaluate("document.body.classList.contains('dark')")
    detail_has_no_serious_accessibility_violations(page)  # light; dark: test_no_serious_accessibility_violations
    if viewport is PHONE:
        save_screenshot(page, "screenshot-detail-phone.png")


def test_enter_searches_and_thresholds_rerun_on_enter_and_arrow_keys(open_page) -> None:
    page = open_page(DESKTOP)
    query = page.locator("#query textarea, #query input").first
    query.fill("a red circle")
    query.press("Enter")
    painted = first_painted_ms(page, "red circle")
    status_after(page, r"12 results for “a red circle” in \d+ ms")
    print(f"\nEnter → first thumbnail painted: {painted:.0f} ms")
    assert "?q=a+red+circle" in page.url

    open_options(page)
    box = page.locator("#text-threshold input[type=number]")
    box.fill("0.86")
    box.press("Enter")  # no need to leave the box
    fewer = int(status_after(page, r"\d+ results? for “a red circle”.*threshold 0\.86").split()[0])
    assert 0 < fewer < 12
    page.wait_for_function(f"document.querySelectorAll('{TILES}').length === {fewer}")
    page.locator("#text-threshold input[type=range]").press("ArrowRight")  # the keyboard moves the slider
    status_after(page, r"for “a red circle”.*threshold 0\.87")
    box.fill("0.98")
    box.press("Enter")
    status_after(page, r"Nothing above 0\.98 .*closest scores 0\.8\d+.*lower the threshold")
    assert tile_count(page) == 0


def test_detail_view_keyboard_and_more_like_this(open_page) -> None:
    page = open_page(DESKTOP, "?q=a+yellow+star")
    status_after(page, r"results for “a yellow star”")
    page.locator(TILES).nth(1).click()
    dialog = page.locator("dialog.detail[open]")
    dialog.wait_for()
    second = dialog.locator("dd").nth(1).inner_text()  # the id
    assert "yellow star" in dialog.locator(".detail-title").inner_text()
    assert "Score" in dialog.inner_text() and dialog.locator("img.detail-img").get_attribute("alt")
    page.keyboard.press("ArrowRight")
    assert dialog.locator("dd").nth(1).inner_text() != second
    page.keyboard.press("ArrowLeft")
    assert dialog.locator("dd").nth(1).inner_text() == second
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    assert page.evaluate("document.activeElement.classList.contains('tile-open')")  # focus back on the grid
    page.keyboard.press("ArrowRight")  # arrows move between results in the grid too
    assert page.evaluate("document.activeElement.dataset.index") == "2"
    # The dialog's "close" event comes a moment after Esc; a key pressed before it keeps the focus it moved.
    page.evaluate("document.querySelector('#results dialog.detail').dispatchEvent(new Event('close'))")
    assert page.evaluate("document.activeElement.dataset.index") == "2"

    page.locator(TILES).nth(1).click()
    dialog.get_by_role("button", name="More like this").click()
    status_after(page, rf"results? for more like {second} in \d+ ms")
    card = page.locator("#results .query-card")
    assert second in card.inner_text() and "yellow star" in card.locator("img").get_attribute("alt")
    assert page.url.endswith(f"?id={second}")
    assert second not in [page.locator(TILES).nth(i).get_attribute("aria-label") for i in range(tile_count(page))]
    page.locator(TILES).first.wait_for()

    # Copy link gives the URL of what is on screen, and that URL restores it.
    page.locator("#copy-link").click()
    page.locator("#copy-note").filter(has_text="Link copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.url
    restored = open_page(DESKTOP, copied[copied.index("?"):])
    status_after(restored, rf"results? for more like {second}")
    assert second in restored.locator("#results .query-card").inner_text()


def test_image_tab_has_its_own_results_and_detail_mixes_picture_and_text(open_page, tmp_path: Path) -> None:
    page = open_page(DESKTOP, "?q=a+green+triangle")
    status_after(page, r"results for “a green triangle”")
    page.get_by_role("tab", name="Image").click()
    page.wait_for_function(f"document.querySelectorAll('{TILES}').length === 0")  # not the Text tab's results
    page.locator("#image input[type=file]").set_input_files(str(text_as_jpg(tmp_path)))
    expect_error(page, "notes.jpg: is a text file, not an image")
    page.locator("#image input[type=file]").set_input_files(str(DEMO_INDEX_DIR / "images" / "shape-007.jpg"))
    status_after(page, r"results? for the image in \d+ ms")
    assert "1.00" in page.locator("#results .tile-meta").first.inner_text()  # the picture itself comes first
    page.get_by_role("tab", name="Text").click()
    status_after(page, r"results for “a green triangle”")  # the Text tab's own results are back
    assert "green triangle" in page.locator(f"{TILES} img").first.get_attribute("alt")

    page.locator(TILES).first.click()
    page.locator("dialog.detail[open]").get_by_role("button", name="Search with this picture and a text").click()
    status_after(page, r"results? for more like shape-\d+")
    assert page.get_by_role("tab", name="Image").get_attribute("aria-selected") == "true"
    mix = page.locator("#mix-text textarea, #mix-text input").first
    page.wait_for_function("document.activeElement && document.activeElement.closest('#mix-text') !== null")
    mix.fill("a red square")
    mix.press("Enter")
    status_after(page, r"results? for the image in")
    alts = [page.locator(f"{TILES} img").nth(i).get_attribute("alt") for i in range(3)]
    assert any("red" in alt for alt in alts) and any("triangle" in alt for alt in alts), alts


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_options_panel_deep_link_load_more_and_copy_link(open_page, viewport: dict) -> None:
    page = open_page(viewport, "?q=a+circle&colour=blue&collapse=off")
    open_options(page)
    colour = page.locator("#opt-colour input").first
    assert colour.input_value() == "blue" and not page.locator("#opt-collapse-radius input").is_checked()
    assert page.locator("#opt-sort").count() == 0  # the demo has no date or popularity data to sort by
    assert "date from" in page.locator("#options-missing").inner_text()
    alts = [img.get_attribute("alt") for img in page.locator(f"{TILES} img").all()]
    assert len(alts) >= 3 and all("blue" in alt for alt in alts), alts
    if viewport is PHONE:  # the panel stacks its controls: show the filters rather than the sliders above them
        page.locator("#opt-colour").scroll_into_view_if_needed()
    save_screenshot(page, "screenshot-options.png" if viewport is DESKTOP else "screenshot-options-phone.png")
    if viewport is PHONE:
        return
    box = page.locator("#text-threshold input[type=number]")
    box.fill("0")
    box.press("Enter")
    status_after(page, r"12 results for “a circle”.*threshold 0\.00")
    colour.click()
    page.get_by_role("option", name="green", exact=True).click()  # a changed option re-runs the search
    page.wait_for_function(f"Array.from(document.querySelectorAll('{TILES} img')).every((i) => i.alt.includes"
                           "('green circle'))")
    assert "colour=green" in page.url and "collapse_radius=off" in page.url
    page.locator("#results button.load-more").click()
    status_after(page, r"24 results for “a circle”")
    assert tile_count(page) == 24 and page.evaluate("document.activeElement.dataset.index") == "12"
    page.locator("#copy-link").click()
    page.locator("#copy-note").filter(has_text="Link copied").wait_for()
    assert "colour=green" in page.evaluate("navigator.clipboard.readText()")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop-dark", "phone-dark"])
def test_no_serious_accessibility_violations(open_page, viewport: dict) -> None:
    page = open_page(viewport, "?__theme=dark")  # light: in the test of the page as it opens
    assert page.evaluate("document.body.classList.contains('dark')")
    detail_has_no_serious_accessibility_violations(page)


def detail_has_no_serious_accessibility_violations(page) -> None:
    """Open the first result's detail view (the open dialog is checked too) and run axe-core on the page: no
    serious or critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    page.locator(TILES).first.click()
    page.locator("dialog.detail[open]").wait_for()
    violations = Axe().run(page).response["violations"]
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations
           if v["impact"] in ("serious", "critical")]
    assert bad == []


def save_screenshot(page, name: str) -> None:
    """A viewport screenshot as a small palette PNG; it replaces assets/NAME when UPDATE_SCREENSHOT=1."""
    if os.environ.get("UPDATE_SCREENSHOT") != "1":
        return
    page.wait_for_function(f"Array.from(document.querySelectorAll('{TILES} img')).every((i) => i.complete)")
    path = REPO_ROOT / "assets" / name
    page.screenshot(path=str(path))
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def test_missing_chromium_that_cannot_be_installed_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="is missing and cannot be installed here"):
        ensure_chromium()


def test_a_failed_load_more_gives_its_button_back(open_page) -> None:
    page = open_page(DESKTOP, "?q=a+circle")
    more = page.evaluate("""() => {
        const config = window.gradio_config;
        const results = config.components.find((c) => c.props && c.props.elem_id === "results").id;
        return config.dependencies.find((d) => d.targets.some(([id, name]) => id === results && name === "more")).id;
    }""")
    refused = []

    def refuse_more(route) -> None:  # the server answers the "Load more" event with an error, as when it is down
        if (route.request.post_data_json or {}).get("fn_index") == more:
            refused.append(more)
            route.fulfill(status=500, content_type="application/json", body='{"detail": "unavailable"}')
        else:
            route.continue_()

    page.route("**/gradio_api/queue/join*", refuse_more)
    button = page.locator("#results button.load-more")
    button.click()
    page.wait_for_function("() => { const b = document.querySelector('#results button.load-more');"
                           " return b && !b.disabled && b.textContent === 'Load more'; }")
    assert refused and tile_count(page) == 12
    page.unroute("**/gradio_api/queue/join*")
    button.click()  # and it works again
    status_after(page, r"24 results for “a circle”")


def test_markup_from_a_link_is_shown_as_text_never_rendered(browser, page_app_url: str) -> None:
    query = "red **b** [l](//x.invalid) <form><input type=password>$$x$$"  # the status line quotes 60 characters
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(page_app_url.rstrip("/") + "/?" + urlencode({"q": query}))
        status = page.locator("#status")
        status.filter(has_text="<form><input type=password>").wait_for()  # quoted as typed, whatever was found
        assert "**b** [l](//x.invalid)" in status.inner_text() and "$$x$$" in status.inner_text()
        assert status.locator("form, input, a, strong, .katex").count() == 0
    finally:
        context.close()
