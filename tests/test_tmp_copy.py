from __future__ import annotations

import re

import httpx
import pytest

from tests.test_browser import DESKTOP, PHONE, browser, status_after  # noqa: F401
from tests.test_understand_app import QUERY, gallery_url  # noqa: F401


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_copy_note(browser, gallery_url, viewport) -> None:  # noqa: F811
    context = browser.new_context(viewport=viewport, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(gallery_url.rstrip("/") + "/?" + str(httpx.QueryParams({"q": QUERY})))
    status_after(page, re.escape(QUERY))
    page.locator("#results button.reading-chip").wait_for()
    page.locator("#copy-link").click()
    page.wait_for_function("() => document.querySelector('#copy-note').textContent.length > 0")
    page.screenshot(path=f"/tmp/s29/copy-{viewport['width']}.png")
    note = page.locator("#copy-note").bounding_box()
    boxes = page.evaluate("""() => [...document.querySelectorAll('#results button.reading-chip, #status, textarea, button')]
        .filter(e => e.offsetParent).map(e => { const r = e.getBoundingClientRect(); return [e.id || e.className || e.tagName, e.innerText?.slice(0,20), r.x, r.y, r.width, r.height]; })""")
    print("NOTE", note)
    for b in boxes:
        x, y, w, h = b[2:]
        if x < note["x"] + note["width"] and note["x"] < x + w and y < note["y"] + note["height"] and note["y"] < y + h:
            print("OVERLAP", b)
    context.close()
