"""Image URLs on a host that accepts and never answers: they hold no event or model slot, are bounded in total and
per client, and each ends at the fetch deadline with a clear error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from app import launch
from bench.stalled_urls import call_api, call_ui
from bench.upload_burst import image_tab_event
from search.build import netguard
from search.config import DEMO_INDEX_DIR
from search.web.gradio_api import CONCURRENCY_ID
from search.web.handlers import SearchUI
from search.web.layout import build_app
from search.web.url_fetches import (
    IMAGE_CONCURRENCY_ID,
    FetchBounds,
    FetchSlots,
    TooManyFetchesError,
    UrlFetches,
    url_inputs_for_the_handler,
)
from tests.app_server import free_port
from tests.loopback import SilentServer

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

STAND_IN = "127.0.0.2"  # a loopback address these tests treat as public
DEADLINE_S = 4.0
BOUNDS = FetchBounds(total=20, per_client=2, timeout_s=DEADLINE_S)
DEMO_IMAGE = DEMO_INDEX_DIR / "images" / "shape-007.jpg"


@pytest.fixture(scope="module")
def served(demo_startup) -> Iterator[tuple[str, UrlFetches, gr.Blocks]]:
    """The demo app with a short fetch deadline and room for 20 fetches at once (2 per client)."""
    fetches = UrlFetches(BOUNDS)
    ui = SearchUI(demo_startup)
    demo = build_app(demo_startup, ui, fetches)
    _, url, _ = launch(demo, demo_startup, ui, server_name="127.0.0.1", server_port=free_port(),
                       prevent_thread_lock=True, quiet=True)
    try:
        yield url.rstrip("/"), fetches, demo
    finally:
        demo.close()


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """A 'public' host that accepts every connection and never answers."""
    real = netguard.is_public_address
    monkeypatch.setattr(netguard, "is_public_address", lambda address: address == STAND_IN or real(address))
    with SilentServer(STAND_IN) as server:
        yield server


def options(url: str) -> list[object]:
    """The search options' defaults, which the call route wants after the three first parameters."""
    info = httpx.get(f"{url}/gradio_api/info", timeout=30).json()
    return [param["parameter_default"] for param in info["named_endpoints"]["/search_image"]["parameters"][3:]]


def stalled_call(url: str, silent: SilentServer, number: int, source: str, page: bool = False) -> str:
    """One image search with a URL on the silent host, from `source`, through the API or the Image tab."""
    image = {"path": silent.url(f"{number}.jpg"), "meta": {"_type": "gradio.FileData"}}
    if page:
        return call_ui(url, image_tab_event(httpx.get(f"{url}/config", timeout=30).json()), image, source)
    return call_api(url, "search_image", [image, 3, 0.0, *options(url)], source, 60)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_twenty_stalled_urls_leave_text_search_answering_and_each_ends_at_the_deadline(
        served: tuple[str, UrlFetches, gr.Blocks], silent: SilentServer) -> None:
    url, fetches, _ = served
    client = Client(url, verbose=False)
    with ThreadPoolExecutor(max_workers=20) as pool:
        start = time.monotonic()
        # Twenty clients (a loopback address each), half through the API, half through the page's Image tab.
        calls = [pool.submit(stalled_call, url, silent, n, f"127.0.1.{n + 1}", n % 2 == 1) for n in range(20)]
        wait_for(lambda: silent.accepted == 20 and fetches.slots.in_flight() == 20)
        began = time.monotonic()
        hits = client.predict("a red circle", 3, 0.0, api_name="/search_text")
        answered = time.monotonic() - began
        assert not any(call.done() for call in calls)  # all twenty still waiting on the silent host
        results = [call.result(timeout=DEADLINE_S + 10) for call in calls]
        ended = time.monotonic() - start
    assert len(hits) == 3 and answered < 1.0, answered
    assert all("cannot fetch the image URL: timed out (no complete response within 4 s)" in result
               for result in results), results
    assert ended < DEADLINE_S + 5  # each at its own deadline, not one after another
    wait_for(lambda: fetches.slots.in_flight() == 0)


def test_a_client_over_its_bound_is_refused_at_once(served: tuple[str, UrlFetches, gr.Blocks],
                                                   silent: SilentServer) -> None:
    url, fetches, _ = served
    with ThreadPoolExecutor(max_workers=2) as pool:
        waiting = [pool.submit(stalled_call, url, silent, n, "127.0.2.1") for n in range(2)]
        wait_for(lambda: fetches.slots.in_flight("127.0.2.1") == 2)
        began = time.monotonic()
        third = stalled_call(url, silent, 3, "127.0.2.1", page=True)
        assert time.monotonic() - began < 1.0
        assert "you already have 2 image URLs being fetched" in third
        other: Future[str] = pool.submit(stalled_call, url, silent, 4, "127.0.2.2")  # another client is let in
        wait_for(lambda: fetches.slots.in_flight("127.0.2.2") == 1)
        wait_for(lambda: silent.accepted == 3)  # the slot is counted before its thread connects: wait for both
        assert silent.accepted == 3
        assert all("timed out" in call.result(timeout=DEADLINE_S + 10) for call in [*waiting, other])


def test_the_rest_image_route_takes_uploads_only_and_answers_while_fetches_stall(
        served: tuple[str, UrlFetches, gr.Blocks], silent: SilentServer) -> None:
    url, fetches, _ = served
    with ThreadPoolExecutor(max_workers=4) as pool, httpx.Client(base_url=url, timeout=30) as rest:
        calls = [pool.submit(stalled_call, url, silent, n, f"127.0.3.{n + 1}") for n in range(4)]
        wait_for(lambda: fetches.slots.in_flight() == 4)
        began = time.monotonic()
        hits = rest.post("/api/search/image", params={"k": 3},
                         files={"file": ("mine.jpg", DEMO_IMAGE.read_bytes(), "image/jpeg")})
        assert hits.status_code == 200 and hits.json()[0]["id"] == "shape-007"
        as_text = rest.post("/api/search/image", data={"file": silent.url("x.jpg")})
        assert time.monotonic() - began < 1.0
        assert as_text.status_code == 422 and silent.accepted == 4  # a URL is not an upload: never fetched
        assert all("timed out" in call.result(timeout=DEADLINE_S + 10) for call in calls)


def test_image_searches_have_their_own_unlimited_group_and_the_rest_share_one(
        served: tuple[str, UrlFetches, gr.Blocks]) -> None:
    _, _, demo = served
    image_events = [fn for fn in demo.fns.values() if fn.concurrency_id == IMAGE_CONCURRENCY_ID]
    assert {fn.api_name for fn in image_events} >= {"search_image"} and len(image_events) == 2  # API and page
    assert all(fn.concurrency_limit is None for fn in image_events)
    texts = [fn for fn in demo.fns.values() if fn.api_name == "search_text" or fn.name == "ui_text"]
    assert len(texts) == 2 and all(fn.concurrency_id == CONCURRENCY_ID for fn in texts)


def test_fetch_slots_count_in_total_and_per_client() -> None:
    slots = FetchSlots(total=3, per_client=2)
    slots.take("a"), slots.take("a")
    with pytest.raises(TooManyFetchesError, match="you already have 2 image URLs"):
        slots.take("a")
    slots.take("b")
    with pytest.raises(TooManyFetchesError, match="the server is already fetching 3 image URLs"):
        slots.take("c")
    slots.give_back("a")
    slots.take("c")
    assert (slots.in_flight(), slots.in_flight("a"), slots.in_flight("c")) == (3, 1, 1)


def test_a_fetch_whose_caller_stopped_waiting_counts_until_its_thread_ends(silent: SilentServer) -> None:
    fetches = UrlFetches(FetchBounds(total=2, per_client=1, timeout_s=1.0))

    async def abandon() -> None:
        waiting = asyncio.ensure_future(fetches.fetch(silent.url("x.jpg"), "me"))
        await asyncio.sleep(0.2)
        waiting.cancel()  # the client went away

    asyncio.run(abandon())
    assert fetches.slots.in_flight("me") == 1  # its thread still waits on the host: a new fetch would be refused
    with pytest.raises(TooManyFetchesError):
        asyncio.run(fetches.fetch(silent.url("y.jpg"), "me"))
    wait_for(lambda: fetches.slots.in_flight() == 0, timeout=3.0)


def test_the_page_image_refuses_data_urls_and_passes_http_urls_through(tmp_path: Path) -> None:
    from gradio.data_classes import ImageData

    image = url_inputs_for_the_handler(gr.Image(type="filepath", image_mode=None))
    assert image.preprocess(ImageData(path="https://images.example/a.jpg")) == "https://images.example/a.jpg"
    with pytest.raises(gr.Error, match="not a data: URL"):
        image.preprocess(ImageData(path=str(tmp_path / "x.png"), url="data:image/png;base64,AAAA"))
    moved = asyncio.run(image.async_move_resource_to_block_cache("https://images.example/a.jpg"))
    assert moved == "https://images.example/a.jpg"  # not downloaded here: the handler fetches it
