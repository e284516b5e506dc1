"""The options panel in Chromium at 1400, 1024 and 390 px, for the demo (one filter) and a collection with every
filter: no word broken inside, no control or dropdown choice cut, no control squeezed below a readable width.

Screenshots of each go to the test's temporary folder (printed), to look at; one server per collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from search.bundle.store import Bundle
from search.query.engine import SearchEngine
from search.web.startup import Startup
from tests.app_server import serve
from tests.folder_gallery import write_all_filters_bundle
from tests.test_browser import TIMEOUT_MS, browser, open_options  # noqa: F401  (browser: the module's fixture)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]
WIDTHS = (1400, 1024, 390)
MIN_CONTROL_CHARS = 12  # a control narrower than this many characters shows its label a word or two per line

# Problems in the open panel, as "what: text" lines: a word wider than the box it is set in (the browser breaks
# it inside), an element whose content overflows its box, a dropdown choice wider than its input, a control
# narrower than MIN_CONTROL_CHARS. Widths are measured with each element's own font.
PANEL_PROBLEMS_JS = """(minChars) => {
  const panel = document.querySelector('#options'), ctx = document.createElement('canvas').getContext('2d');
  const measure = (el, text) => { const s = getComputedStyle(el);
    ctx.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`; return ctx.measureText(text).width; };
  const shown = (el) => el.getClientRects().length > 0, problems = [];
  for (const el of panel.querySelectorAll('span, p, label, li, button')) {
    const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join(' ');
    if (!text.trim() || !shown(el)) continue;
    const widest = Math.max(...text.split(/\\s+/).map((word) => measure(el, word)));
    if (widest > el.getBoundingClientRect().width + 1) problems.push(`word broken: ${text.trim().slice(0, 40)}`);
  }
  for (const el of panel.querySelectorAll('.form > .block, [data-testid=block-info], input, textarea, label'))
    if (shown(el) && el.scrollWidth > el.clientWidth + 1)
      problems.push(`overflows: ${el.id || el.getAttribute('aria-label') || el.textContent.trim().slice(0, 40)}`);
  const components = window.gradio_config.components;
  for (const input of panel.querySelectorAll('input[role=combobox]')) {
    const block = input.closest('.block'), spec = components.find((c) => c.props && c.props.elem_id === block.id);
    const room = input.clientWidth - parseFloat(getComputedStyle(input).paddingLeft)
               - parseFloat(getComputedStyle(input).paddingRight);
    for (const [label] of spec.props.choices)
      if (measure(input, label) > room + 1) problems.push(`choice cut: ${block.id} ${label}`);
  }
  const ch = measure(panel, '0');
  for (const el of panel.querySelectorAll('.form > .block'))
    if (shown(el) && el.clientWidth < minChars * ch) problems.push(`narrow: ${el.id} ${el.clientWidth}px`);
  return problems;
}"""


def open_panel_page(browser, url: str, width: int, dark: bool = False):  # noqa: F811
    """A new page at `width` x 900 on `url`, loaded, with its options panel open."""
    page = browser.new_context(viewport={"width": width, "height": 900},
                               color_scheme="dark" if dark else "light").new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url.rstrip("/") + ("/?__theme=dark" if dark else "/"))
    page.locator("#status").filter(has_text="results").wait_for()
    return page


@pytest.fixture(scope="module")
def all_filters_url(tmp_path_factory: pytest.TempPathFactory, demo_encoder) -> Iterator[str]:
    """The app on the demo's pictures with every optional column, so every filter is offered."""
    root = write_all_filters_bundle(tmp_path_factory.mktemp("all-filters") / "bundle")
    with serve(Startup(SearchEngine(demo_encoder, Bundle.load(root)), None, False)) as url:
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("options-panel")
    print(f"\noptions panel screenshots: {folder}")
    return folder


def accessibility_problems(page) -> list:
    """axe-core's serious and critical violations on the page as shown: the rule and its first nodes, with why."""
    from axe_playwright_python.sync_playwright import Axe

    # Not mid-update: Gradio draws an updating output at 20 % opacity and fades it back.
    page.wait_for_function("() => !document.querySelector('.pending') && "
                           "!document.getAnimations().some((a) => a instanceof CSSTransition)")
    violations = Axe().run(page).response["violations"]
    return [(v["id"], [(n["target"], n["any"][0]["message"][:160] if n["any"] else "") for n in v["nodes"][:3]])
            for v in violations if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("collection", ["demo", "all-filters"])
def test_every_word_and_choice_in_the_options_panel_fits(browser, request: pytest.FixtureRequest,  # noqa: F811
                                                         shots: Path, collection: str) -> None:
    url = request.getfixturevalue("page_app_url" if collection == "demo" else "all_filters_url")
    page = open_panel_page(browser, url, WIDTHS[0])
    try:
        open_options(page)
        assert page.locator("#options .form > .block[id^=opt-]").count() == (3 if collection == "demo" else 17)
        for width in WIDTHS:  # the same page narrowed: the panel lays itself out again
            page.set_viewport_size({"width": width, "height": 900})
            page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
            page.locator("#options").screenshot(path=str(shots / f"options-{collection}-{width}.png"))
            assert (width, page.evaluate(PANEL_PROBLEMS_JS, MIN_CONTROL_CHARS)) == (width, [])
            if collection == "all-filters" and width == 1024:  # light here; dark: the test below
                assert accessibility_problems(page) == []
    finally:
        page.context.close()


def test_the_open_panel_with_every_filter_has_no_serious_accessibility_violations_in_dark(
        browser, all_filters_url: str) -> None:  # noqa: F811
    page = open_panel_page(browser, all_filters_url, 1024, dark=True)
    try:
        open_options(page)
        assert accessibility_problems(page) == []
    finally:
        page.context.close()
