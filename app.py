"""Gradio app: search a photo collection by text or by example image, with a JSON API for gradio_client."""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from search.config import EngineConfig
from search.engine import MAX_NEGATIVES, MAX_QUERY_CHARS, Query, SearchEngine
from search.errors import BadQueryError, SearchError
from search.types import Hit
from upload_inputs import (
    MAX_FILE_BYTES,
    MAX_FILE_SIZE,
    body_limits,
    explain_unreadable_uploads,
    fetch_url_inputs_within_limits,
    without_server_paths,
)
from webapp import (
    Startup,
    caption,
    combined_query,
    credits_html,
    hits_json,
    mode_defaults,
    negatives,
    number,
    start_engine,
    status_text,
    thumbnail,
    whole_number,
)

logger = logging.getLogger(__name__)

UPLOAD_LIFETIME_S = (300, 1800)  # gradio's delete_cache: (how often to look, how old a file may get) in seconds
# Two slots on a 2-vCPU Space: a query is mostly transfer and bookkeeping around a few ms to ~100 ms of model
# time, so a second slot keeps a slow upload from holding up everyone else without oversubscribing the CPU.
# Measured with bench/load_test.py (demo bundle, 2 cores shared with the load generator, 20 s per run):
# 1 slot: 18.1 rps at 4 clients, 16.4 at 32; 2 slots: 20.7 and 20.4; 4 slots: 16.7 and 19.5. Two slots give the
# most throughput and hold it flat from 4 to 32 clients (p95 grows with the queue, not from contention).
CONCURRENCY = 2
CONCURRENCY_ID = "search"  # one group: the limit above holds for all events together, not per event
# Waiting requests beyond this are refused at once ("queue is full") instead of waiting: at ~20 requests/s,
# 64 waiting is about 3 s of work, so a caller is told quickly rather than timing out.
MAX_QUEUE = 64
SCORE_HINT = ("**Score** = cosine similarity of CLIP vectors (−1 to 1). With real CLIP, a matching *text* scores "
              "about 0.2–0.35 while a similar *image* scores 0.7–1.0, so each tab keeps its own threshold. "
              "Click a result for more like it.")
CSS = """
#notice { border-left: 4px solid #f59e0b; padding: 0.5em 1em; background: rgba(245, 158, 11, 0.08); }
.credits { font-size: 0.85em; margin: 0; }
"""


def checked_query(text: str) -> str:
    """Refuse a runaway query instead of silently searching only its first part."""
    if isinstance(text, str) and len(text) > MAX_QUERY_CHARS:
        raise BadQueryError(f"the query has {len(text)} characters; keep it under {MAX_QUERY_CHARS} "
                            "(CLIP reads only the first ~77 tokens)")
    return text


def checked_exclude(text: str | None) -> str | None:
    """Refuse an Exclude field that would cost more than a few text encodes, before any of them runs."""
    if not isinstance(text, str):
        return text
    if len(text) > MAX_QUERY_CHARS:
        raise BadQueryError(f"the Exclude field has {len(text)} characters; keep it under {MAX_QUERY_CHARS}")
    if (count := len(negatives(text))) > MAX_NEGATIVES:
        raise BadQueryError(f"the Exclude field lists {count} terms; keep it to {MAX_NEGATIVES} or fewer, "
                            "separated by commas")
    return text


def as_gr_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler so every failure reaches the browser and the client as a readable one-line gr.Error."""

    @functools.wraps(fn)  # keeps the signature: API parameter names, and gr.SelectData injection
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except SearchError as exc:
            raise gr.Error(without_server_paths(str(exc), args), print_exception=False) from exc
        except Exception as exc:  # a bug: gradio would show an empty message; say what kind, log the rest
            logger.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(f"the search failed on the server ({type(exc).__name__}); try again or report it",
                           print_exception=False) from exc

    return wrapped


@dataclass(frozen=True, slots=True)
class Request:
    """One search the UI ran: enough to run it again with a new top-k or threshold."""

    mode: str  # "text", "image" or "similar"
    what: str  # for the status line
    query: Query | None = None
    item_id: str | None = None


Outputs = tuple[list[tuple[str, str]], str, str, list[dict], Request | None]


class SearchUI:
    """Handlers over one engine: the JSON API endpoints and the UI events that render a gallery."""

    def __init__(self, startup: Startup) -> None:
        self.engine: SearchEngine = startup.engine
        self.defaults = mode_defaults(self.engine)

    # --- API: exactly one output each, a JSON list of hits ---
    def search_text(self, query: str, top_k: float, threshold: float) -> list[dict]:
        """Items that match a text description, best first."""
        return hits_json(self.engine.search_text(checked_query(query), whole_number(top_k, "top_k"),
                                                 number(threshold, "threshold")))

    def search_image(self, image: str | None, top_k: float, threshold: float) -> list[dict]:
        """Items that look like an uploaded image, best first."""
        if image is None:
            raise BadQueryError("no image given: upload a JPEG, PNG, GIF, WebP, BMP or TIFF file")
        return hits_json(self.engine.search_image(image, whole_number(top_k, "top_k"),
                                                  number(threshold, "threshold")))

    def similar(self, id: str, top_k: float, threshold: float) -> list[dict]:
        """Items like a collection item (by id), the item itself left out."""
        return hits_json(self.engine.similar(str(id or "").strip(), whole_number(top_k, "top_k"),
                                             number(threshold, "threshold")))

    # --- UI events ---
    def ui_text(self, query: str, exclude: str, top_k: float, threshold: float) -> Outputs:
        """Text tab: the query minus excluded terms."""
        request = Request("text", f"“{str(query).strip()[:60]}”",
                          query=combined_query(checked_query(query), None, 1.0, checked_exclude(exclude)))
        return self.run(request, top_k, threshold)

    def ui_image(self, image: str | None, text: str, weight: float, exclude: str, top_k: float,  # noqa: PLR0917
                 threshold: float) -> Outputs:
        """Image tab: the image, optionally mixed with text, minus excluded terms."""
        # Gradio passes one positional argument per input component, hence six.
        if image is None:
            raise BadQueryError("no image yet: upload one, paste one or take a webcam picture")
        request = Request("image", "the image",
                          query=combined_query(checked_query(text), image, weight, checked_exclude(exclude)))
        return self.run(request, top_k, threshold)

    def ui_similar(self, hits: list[dict], top_k: float, threshold: float, evt: gr.SelectData) -> Outputs:
        """A gallery click: more like the clicked item, from its stored embedding."""
        item_id = hits[evt.index]["id"]
        return self.run(Request("similar", f"more like {item_id}", item_id=item_id), top_k, threshold)

    def ui_rerun(self, last: Request | None, top_k: float, text_threshold: float, image_threshold: float
                 ) -> Outputs:
        """A moved slider: repeat the last search with the new top-k and that mode's threshold."""
        if last is None:
            return [], "", "", [], None
        return self.run(last, top_k, text_threshold if last.mode == "text" else image_threshold)

    def run(self, request: Request, top_k: float, threshold: float) -> Outputs:
        """Search, time it, and render gallery, status line, credits, hits and the request for a re-run."""
        k, limit = whole_number(top_k, "top_k"), number(threshold, "threshold")
        start = time.perf_counter()
        hits = self._hits(request, k, limit)
        seconds = time.perf_counter() - start
        # Only for the empty-result hint: how far the threshold is from the closest item.
        best = None if hits else next((hit.score for hit in self._hits(request, 1, -1.0)), None)
        gallery = [(thumbnail(hit), caption(hit)) for hit in hits]
        status = status_text(hits, seconds, limit, best, request.what)
        return gallery, status, credits_html(hits, self.engine.bundle.root), hits_json(hits), request

    def _hits(self, request: Request, top_k: int, threshold: float) -> list[Hit]:
        if request.item_id is not None:
            return self.engine.similar(request.item_id, top_k, threshold)
        assert request.query is not None
        return self.engine.search(request.query, top_k, threshold)


def build_app(startup: Startup) -> gr.Blocks:
    """The Blocks UI and API over one engine."""
    ui = SearchUI(startup)
    d = ui.defaults
    # Uploads and fetched URLs are deleted 30 minutes after they arrive (checked every 5), so repeated uploads
    # cannot fill the disk; examples stay (gradio keeps them). A slider re-run of an older image search then
    # asks for the picture again.
    with gr.Blocks(title="Semantic image search", analytics_enabled=False, delete_cache=UPLOAD_LIFETIME_S) as demo:
        gr.Markdown("# Semantic image search\nFind pictures by meaning: describe one, or give an example.")
        gr.Markdown(startup.notice or "", elem_id="notice", visible=startup.notice is not None)
        top_k = gr.Slider(1, 100, value=12, step=1, label="Results (top k)", elem_id="top-k")
        with gr.Tabs():
            with gr.Tab("Text", elem_id="tab-text"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(label="Describe the picture", placeholder=d.text_examples[0], elem_id="query",
                                       max_lines=1, scale=5)
                    text_button = gr.Button("Search", variant="primary", elem_id="text-search", scale=1)
                text_threshold = gr.Slider(-1, 1, value=d.text_threshold, step=0.01, elem_id="text-threshold",
                                           label="Similarity threshold (text)")
                gr.Examples([[text] for text in d.text_examples], [query], cache_examples=False)
            with gr.Tab("Image", elem_id="tab-image"):
                image = explain_unreadable_uploads(fetch_url_inputs_within_limits(gr.Image(
                    type="filepath", image_mode=None, label="Example image", elem_id="image",
                    sources=["upload", "webcam", "clipboard"], height=260), MAX_FILE_BYTES))
                mix_text = gr.Textbox(label="Also matching this text (optional)", max_lines=1)
                text_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Text weight when mixing with the image")
                image_button = gr.Button("Search", variant="primary", elem_id="image-search")
                image_threshold = gr.Slider(-1, 1, value=d.image_threshold, step=0.01, elem_id="image-threshold",
                                            label="Similarity threshold (image and “more like this”)")
                examples = [[path] for path in example_images(ui.engine)]
                if examples:
                    gr.Examples(examples, [image], cache_examples=False)
        exclude = gr.Textbox(label="Exclude (comma-separated terms to steer away from)", max_lines=1)
        gr.Markdown(SCORE_HINT)
        status = gr.Markdown(elem_id="status")
        gallery = gr.Gallery(label="Results", columns=6, height="auto", allow_preview=False, object_fit="cover",
                             elem_id="results")
        credits = gr.HTML(elem_id="credits")
        hits, last = gr.State([]), gr.State(None)
        outputs = [gallery, status, credits, hits, last]
        private = {"api_visibility": "private", "show_progress": "minimal", "concurrency_id": CONCURRENCY_ID}
        gr.on([text_button.click, query.submit], as_gr_error(ui.ui_text), [query, exclude, top_k, text_threshold],
              outputs, **private)
        gr.on([image_button.click, image.upload], as_gr_error(ui.ui_image),
              [image, mix_text, text_weight, exclude, top_k, image_threshold], outputs, **private)
        gallery.select(as_gr_error(ui.ui_similar), [hits, top_k, image_threshold], outputs, **private)
        gr.on([top_k.release, text_threshold.release, image_threshold.release], as_gr_error(ui.ui_rerun),
              [last, top_k, text_threshold, image_threshold], outputs, **private)
        add_api(ui)
    return demo


def add_api(ui: SearchUI) -> None:
    """API-only endpoints (no trigger in the page) on hidden inputs, each with one JSON output."""
    with gr.Column(visible=False):
        text, item_id = gr.Textbox(label="query"), gr.Textbox(label="id")
        # Our loader, not gr.Image, judges odd files; a URL instead of a file is fetched within the upload limits.
        image = fetch_url_inputs_within_limits(gr.File(label="image", type="filepath"), MAX_FILE_BYTES)
        top_k = gr.Number(label="top_k", value=10)
        threshold = gr.Number(label="threshold", value=0.0)
        result = gr.JSON(label="hits")
    for name, source in (("search_text", text), ("search_image", image), ("similar", item_id)):
        handler = as_gr_error(getattr(ui, name))
        gr.on([], handler, [source, top_k, threshold], result, api_name=name, api_description=handler.__doc__,
              concurrency_id=CONCURRENCY_ID)


def example_images(engine: SearchEngine, count: int = 4) -> list[str]:
    """A few local pictures of the collection to try in the Image tab (none for remote collections)."""
    # Gradio copies example files into its cache at launch and serves them to every visitor, so only files inside
    # the bundle qualify: the catalog admits no other local path, and this second look costs four stat calls.
    bundle = engine.bundle
    hits = [bundle.catalog.hit(row, 1.0) for row in range(min(count, len(bundle.catalog)))]
    return [hit.image for hit in hits if "://" not in hit.image and bundle.folder.contains(hit.image)]


def launch(demo: gr.Blocks, startup: Startup, **kwargs: Any) -> tuple[Any, str, Any]:
    """Queue for a CPU Space and serve; extra kwargs go to Blocks.launch (port, prevent_thread_lock...)."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    # The bundle's folder, and for a Hub snapshot its repo's blobs/ (its images/* are symlinks into it).
    served = [str(folder) for folder in startup.engine.bundle.served_folders]
    return demo.launch(allowed_paths=served, max_file_size=MAX_FILE_SIZE,
                       theme=gr.themes.Soft(), css=CSS, app_kwargs={"middleware": [body_limits()]}, **kwargs)


def parse_args(argv: list[str] | None = None) -> EngineConfig:
    """`--index` and `--device` over SEARCH_INDEX / SEARCH_DEVICE."""
    config = EngineConfig.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=config.index, help="bundle folder or Hub dataset repo owner/name[@rev]")
    parser.add_argument("--device", default=config.device, help="cpu, cuda or auto")
    parser.add_argument("--qdrant", default=config.qdrant_url, metavar="URL", help="Qdrant server URL or local:DIR")
    parser.add_argument("--collection", default=config.qdrant_collection, metavar="NAME", help="Qdrant collection")
    args = parser.parse_args(argv)
    return replace(config, index=args.index, device=args.device, qdrant_url=args.qdrant,
                   qdrant_collection=args.collection)


def main(argv: list[str] | None = None) -> None:
    """Load the configured index (or the demo) once, then serve the app."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    startup = start_engine(parse_args(argv))
    launch(build_app(startup), startup)


if __name__ == "__main__":
    main()
