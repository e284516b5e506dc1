"""The app in a real browser: headless Debian Chromium driven by Playwright, against the app served in-process.

Chromium comes from Debian (apt-get), because Playwright's own browser download needs network access we do not
have. The test installs it when /usr/bin/chromium is missing and fails (never skips) when it cannot.
Set UPDATE_SCREENSHOT=1 to refresh assets/screenshot.png, the picture the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from search.config import REPO_ROOT
from tests.conftest import DEMO_INDEX_DIR
from tests.odd_images import text_as_jpg

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO_ROOT / "assets" / "screenshot.png"
TIMEOUT_MS = 30_000

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
def page(app_url: str):
    """A fresh Chromium page on the app."""
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url)
        yield page
        browser.close()


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


def result_count(page) -> int:
    """How many pictures the gallery shows."""
    return page.locator("#results img").count()


def set_slider(page, elem_id: str, value: float) -> None:
    """Type a value into the slider's number box and leave it, as a user would: leaving fires the release event."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    assert float(page.locator(f"#{elem_id} input[type=range]").input_value()) == pytest.approx(value)


def test_search_threshold_more_like_this_and_image_upload_in_chromium(page, tmp_path: Path) -> None:
    started = time.monotonic()
    notice = page.locator("#notice")
    notice.filter(has_text="No index configured").wait_for()
    assert "build_index.py" in notice.inner_text()

    # An empty query is refused with a readable error, in a toast.
    query = page.locator("#query textarea, #query input").first
    query.press("Enter")
    expect_error(page, "empty query: type a description")

    # Type a query and press Enter: a full gallery of red circles.
    query.fill("a red circle")
    query.press("Enter")
    status = status_after(page, r"12 results for “a red circle” in \d+ ms")
    page.locator("#results img").nth(11).wait_for()
    assert result_count(page) == 12, status
    assert "a red circle" in page.locator("#credits").inner_text()
    save_screenshot(page, tmp_path)

    # Raise the text threshold: fewer results, without pressing Search again.
    set_slider(page, "text-threshold", 0.86)
    status = status_after(page, r"\d results? for “a red circle”.*threshold 0\.86")
    fewer = int(status.split()[0])
    assert 0 < fewer < 12
    page.wait_for_function(f"document.querySelectorAll('#results img').length === {fewer}")

    # Raise it past every score: the empty-result hint.
    set_slider(page, "text-threshold", 0.98)
    status_after(page, r"Nothing above 0\.9\d .*lower the threshold")
    assert result_count(page) == 0

    # Back to a lower threshold, then click a result: "more like this" from its stored embedding.
    set_slider(page, "text-threshold", 0.5)
    status_after(page, r"12 results for “a red circle”")
    page.locator("#results img").first.click()
    status = status_after(page, r"results? for more like shape-\d{3} in \d+ ms")
    clicked = re.search(r"shape-\d{3}", status).group(0)
    page.locator("#results img").first.wait_for()
    assert result_count(page) > 0
    assert f"{clicked}.jpg" not in page.locator("#credits").inner_text()  # the item itself is left out

    # Image tab: a text file named .jpg is refused clearly; a real picture is searched on upload and comes first.
    page.get_by_role("tab", name="Image").click()
    page.locator("#image input[type=file]").set_input_files(str(text_as_jpg(tmp_path)))
    expect_error(page, "notes.jpg: is a text file, not an image")
    page.locator("#image input[type=file]").set_input_files(str(DEMO_INDEX_DIR / "images" / "shape-007.jpg"))
    status_after(page, r"results? for the image in \d+ ms \(threshold 0\.70\)")
    first_credit = page.locator("#credits li").first.inner_text()
    assert "images/shape-007.jpg" in first_credit and "(1.000)" in first_credit
    print(f"browser test took {time.monotonic() - started:.1f} s")


def save_screenshot(page, tmp_path: Path) -> None:
    """A page screenshot, checked; it replaces assets/screenshot.png when UPDATE_SCREENSHOT=1."""
    path = tmp_path / "screenshot.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as shot:
        assert shot.width == 1200 and shot.height >= 900
        # A palette PNG keeps the README's picture small.
        small = shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, SCREENSHOT)


def test_missing_chromium_that_cannot_be_installed_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="is missing and cannot be installed here"):
        ensure_chromium()
