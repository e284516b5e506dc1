"""The REST API under /api: same hits and same error texts as the Gradio endpoints, same limits, JSON errors."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import uvicorn
from gradio_client import Client, handle_file

from search.config import DEMO_INDEX_DIR
from search.model.limits import shared_limiter
from search.web.rest import SearchParams, is_heavy, rest_app

pytestmark = pytest.mark.slow
DEMO_IMAGE = DEMO_INDEX_DIR / "images" / "shape-007.jpg"


@pytest.fixture(scope="module")
def rest(app_url: str) -> Iterator[httpx.Client]:
    """An HTTP client for the in-process app (the module's gradio_client talks to the same server)."""
    with httpx.Client(base_url=app_url, timeout=30) as http:
        yield http


def gradio_error(client: Client, *args: object, api_name: str) -> str:
    """The message a gradio_client caller gets for a failing call."""
    with pytest.raises(Exception) as failure:  # gradio_client raises AppError (a plain Exception subclass)
        client.predict(*args, api_name=api_name)
    return str(failure.value)


def test_text_search_returns_the_gradio_endpoints_hits(rest: httpx.Client, client: Client) -> None:
    answer = rest.get("/api/search", params={"q": "a red circle", "k": 5, "threshold": 0.2})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    hits = answer.json()
    assert len(hits) == 5 and all("red circle" in hit["description"] for hit in hits)
    assert hits == client.predict("a red circle", 5, 0.2, api_name="/search_text")
    assert rest.get("/api/search", params={"q": "a red circle"}).json()[:5] == hits  # k defaults to 12
    assert len(rest.get("/api/search", params={"q": "a red circle"}).json()) == 12


def test_image_upload_finds_that_image_first(rest: httpx.Client, client: Client) -> None:
    files = {"file": ("mine.jpg", DEMO_IMAGE.read_bytes(), "image/jpeg")}
    hits = rest.post("/api/search/image", params={"k": 4, "threshold": 0.0}, files=files).json()
    assert hits[0]["id"] == "shape-007" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits == client.predict(handle_file(str(DEMO_IMAGE)), 4, 0.0, api_name="/search_image")


def test_similar_leaves_the_item_out_and_matches_gradio(rest: httpx.Client, client: Client) -> None:
    hits = rest.get("/api/similar/shape-007", params={"k": 6, "threshold": -1}).json()
    assert len(hits) == 6 and "shape-007" not in {hit["id"] for hit in hits}
    assert hits == client.predict("shape-007", 6, -1.0, api_name="/similar")


def test_hit_images_are_urls_the_client_can_fetch(rest: httpx.Client) -> None:
    image = rest.get("/api/similar/shape-007", params={"k": 1}).json()[0]["image"]
    assert image.startswith("/gradio_api/file=")  # from the app's root, never a bare server path
    picture = rest.get(image)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(("request_", "status", "gradio_call"), [
    (("/api/search", {"q": "a red circle", "k": 2.5}), 400, ("a red circle", 2.5, 0.0, "/search_text")),
    (("/api/search", {"q": "a red circle", "k": 5000}), 400, ("a red circle", 5000, 0.0, "/search_text")),
    (("/api/search", {"q": "a red circle", "threshold": 1.5}), 400, ("a red circle", 5, 1.5, "/search_text")),
    (("/api/search", {"q": "   "}), 400, ("   ", 5, 0.0, "/search_text")),
    (("/api/search", {"q": "x" * 1001}), 400, ("x" * 1001, 5, 0.0, "/search_text")),
    (("/api/similar/no-such-id", {}), 404, ("no-such-id", 5, 0.0, "/similar")),
])
def test_refusals_carry_the_gradio_endpoints_texts(rest: httpx.Client, client: Client, request_: tuple[str, dict],
                                                    status: int, gradio_call: tuple) -> None:
    answer = rest.get(request_[0], params=request_[1])
    assert answer.status_code == status
    message = answer.json()["error"]
    assert message and message in gradio_error(client, *gradio_call[:3], api_name=gradio_call[3])


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 5}, "q is required"),
    ({"q": "a red circle", "k": "many"}, "k must be a number, got 'many'"),
    ({"q": "a red circle", "threshold": "nan"}, "threshold must be a number, got nan"),
])
def test_malformed_parameters_are_422_or_400_with_one_line(rest: httpx.Client, params: dict, message: str) -> None:
    answer = rest.get("/api/search", params=params)
    assert answer.json() == {"error": message}
    assert answer.status_code == (400 if "nan" in message else 422)  # NaN parses as a number; our check refuses it


def test_unreadable_missing_and_oversized_uploads(rest: httpx.Client) -> None:
    text_file = rest.post("/api/search/image", files={"file": ("notes.jpg", b"just some text\n", "image/jpeg")})
    assert text_file.status_code == 422 and "is a text file, not an image" in text_file.json()["error"]
    assert rest.post("/api/search/image").json() == {"error": "file is required"}
    huge = rest.post("/api/search/image", files={"file": ("big.jpg", b"\xff" * (12 * 1024 * 1024), "image/jpeg")})
    assert huge.status_code == 413 and "over the limit of 11,534,336 bytes" in huge.json()["error"]

    def trickle() -> Iterator[bytes]:  # no Content-Length: refused while it streams, past the upload limit
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    streamed = rest.post("/api/search/image", content=trickle(), headers={"content-type": "multipart/form-data; "
                                                                                           "boundary=x"})
    assert streamed.status_code == 413 and "over the limit" in streamed.json()["error"]


def test_health_names_index_count_and_model_without_server_paths(rest: httpx.Client) -> None:
    health = rest.get("/api/health").json()
    assert health["ready"] is True and health["count"] == 300 and health["demo"] is True
    assert health["index"] == DEMO_INDEX_DIR.name and health["model"].startswith("local-dir:")
    assert str(DEMO_INDEX_DIR.parent) not in str(health)
    assert rest.get("/api/nowhere").json() == {"error": "Not Found"}


def test_openapi_docs_list_the_routes(rest: httpx.Client) -> None:
    assert "swagger" in rest.get("/api/docs").text.lower()
    paths = rest.get("/api/openapi.json").json()["paths"]
    assert set(paths) == {"/search", "/search/image", "/similar/{id}", "/health"}
    names = [p["name"] for p in paths["/search"]["get"]["parameters"]]
    assert names[:3] == ["q", "top_k", "threshold"] and {"colour", "sort", "offset", "keywords"} <= set(names)
    assert not {"k", "collapse", "color"} & set(names)  # earlier names: accepted, not documented


def test_docs_page_loads_swagger_ui_from_this_server(rest: httpx.Client) -> None:
    page = rest.get("/api/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert {url.rsplit("/", 1)[-1] for url in urls} >= {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}
    assert all(url.startswith("/api/") for url in urls), urls  # offline: no CDN, nothing outside the app
    for url in urls:
        assert rest.get(url).status_code == 200, url
    assert rest.get("/api/docs/assets/index.html").status_code == 404  # only the files the page needs


def test_search_options_are_query_parameters_checked_like_the_gradio_api(rest: httpx.Client, client: Client) -> None:
    blue = rest.get("/api/search", params={"q": "a circle", "k": 5, "colour": "blue", "offset": 5}).json()
    assert len(blue) == 5 and all(hit["colour"] == "blue" for hit in blue)
    assert blue == client.predict("a circle", 5, 0.0, colour="blue", offset=5, api_name="/search_text")
    first = rest.get("/api/search", params={"q": "a circle", "k": 10, "colour": "blue"}).json()
    assert first[5:] == blue  # the second page of 5 continues the first
    folded = rest.get("/api/similar/shape-007", params={"k": 5, "threshold": -1, "collapse_radius": 0.05}).json()
    assert any(hit["duplicates"] > 0 for hit in folded)
    refused = rest.get("/api/search", params={"q": "a circle", "sort": "colourful"})
    assert refused.status_code == 400 and "sort must be one of" in refused.json()["error"]


def test_one_limiter_for_rest_and_gradio_and_the_loop_stays_free(rest: httpx.Client, client: Client,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = shared_limiter()
    monkeypatch.setattr(limiter, "wait_s", 1.5)
    answers: dict[str, object] = {}
    with ExitStack() as held:
        for _ in range(limiter.slots):  # every model slot taken, as by long uploads elsewhere
            held.enter_context(limiter.slot())
        waiting = threading.Thread(target=lambda: answers.update(rest=rest.get(
            "/api/search", params={"q": "a never cached query about limits"})))
        waiting.start()
        time.sleep(0.2)
        start = time.perf_counter()
        assert rest.get("/api/health").status_code == 200  # the waiting model work sits in a worker thread
        assert time.perf_counter() - start < 1.0
        busy = gradio_error(client, "another never cached query", 3, 0.0, api_name="/search_text")
        waiting.join(10)
    refused = answers["rest"]
    assert isinstance(refused, httpx.Response) and refused.status_code == 503
    assert refused.json()["error"].startswith("the server is busy") and refused.json()["error"] in busy
    assert rest.get("/api/search", params={"q": "a never cached query about limits", "k": 3}).status_code == 200


# --- heavy requests: one lane, no thread held while waiting, dropped when their client has gone ---

class GatedHandlers:
    """Handlers whose "more like" search for an id starting with `slow` blocks until released; calls are recorded."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def similar(self, id: str, top_k: float, threshold: float, options: dict | None = None) -> list[dict]:
        self.calls.append(id)
        if id.startswith("slow"):
            assert self.release.wait(30)
        return []

    search_text = search_image = similar


@contextmanager
def served(app: object) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_heavy_request_whose_client_left_while_it_waited_never_runs(demo_startup) -> None:
    handlers = GatedHandlers()
    with served(rest_app(handlers, demo_startup)) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.get, f"{url}/similar/slow-first", params={"k": 1000}, timeout=30)
        while handlers.calls != ["slow-first"]:
            time.sleep(0.01)
        with pytest.raises(httpx.ReadTimeout):  # it waits for the heavy lane, and its client gives up
            httpx.get(f"{url}/similar/slow-second", params={"k": 5, "collapse_radius": "0.1"}, timeout=0.5)
        # Meanwhile light requests and the health check are answered, not queued behind the held lane (which is
        # released only after this). The bound leaves room for a busy 2-core machine; the lane would mean never.
        for path, params in (("/similar/quick", {"k": 12}), ("/health", {})):
            start = time.perf_counter()
            assert httpx.get(f"{url}{path}", params=params, timeout=10).status_code == 200
            assert time.perf_counter() - start < 5.0
        handlers.release.set()
        assert first.result().status_code == 200
        time.sleep(0.5)  # the lane is free: the abandoned request had its turn
        assert handlers.calls == ["slow-first", "quick"]


@pytest.mark.parametrize(("params", "heavy"), [
    ({"k": 12}, False), ({"k": 100}, False), ({"k": 101}, True), ({"k": 90, "offset": "10"}, False),
    ({"k": 90, "offset": "11"}, True), ({"k": 5, "offset": "x"}, True), ({"k": 5, "offset": "9" * 50}, True),
    ({"k": 5, "collapse_radius": "off"}, False), ({"k": 5, "collapse_radius": " "}, False),
    ({"k": 5, "collapse_radius": "0"}, True), ({"k": float("inf")}, True), ({"k": float("nan")}, True),
])
def test_what_counts_as_heavy(params: dict, heavy: bool) -> None:
    k = params.pop("k")
    assert is_heavy(SearchParams(k, 0.0, params or None)) is heavy


@pytest.mark.parametrize(("params", "message"), [
    ({"q": "red", "topk": 3}, "unknown parameter 'topk'; did you mean top_k?"),
    ({"q": "red", "colour": "red", "colur": "blue"}, "unknown parameter 'colur'; did you mean colour?"),
    ({"q": "red", "collapse_raduis": "0.05"}, "unknown parameter 'collapse_raduis'; did you mean collapse_radius?"),
    ({"q": "red", "zzz": "1"}, "unknown parameter 'zzz'; the parameters are q, top_k, threshold, k, orientation"),
    ({"q": "red", "offset": "²"}, "offset must be a number, got '²'"),  # a digit to isdigit(), not to int()
])
def test_a_misspelt_parameter_is_refused_naming_the_valid_ones(rest: httpx.Client, params: dict,
                                                               message: str) -> None:
    answer = rest.get("/api/search", params=params)
    assert answer.status_code == 400 and answer.json()["error"].startswith(message)


def test_one_name_per_option_and_the_earlier_names_still_work(rest: httpx.Client) -> None:
    three = rest.get("/api/search", params={"q": "a red circle", "top_k": 3}).json()
    assert len(three) == 3 and rest.get("/api/search", params={"q": "a red circle", "k": 3}).json() == three
    folded = rest.get("/api/similar/shape-007", params={"top_k": 6, "collapse_radius": "0.05"}).json()
    assert sum(hit["duplicates"] for hit in folded) > 0
    assert rest.get("/api/similar/shape-007", params={"top_k": 6, "collapse": "0.05"}).json() == folded
    refused = rest.get("/api/similar/shape-007", params={"q": "a red circle"})  # q means nothing there: refused
    assert refused.status_code == 400 and refused.json()["error"].startswith("unknown parameter 'q'")
    named = rest.get("/api/similar/search", params={"q": "a red circle"})  # an id that reads like the text route
    assert named.status_code == 400 and named.json()["error"].startswith("unknown parameter 'q'")
    assert rest.get("/api/search", params={"q": "a circle", "color": "blue"}).json() == \
        rest.get("/api/search", params={"q": "a circle", "colour": "blue"}).json()
