"""The page: results first (query box, then pictures), secondary controls in a collapsed Options panel."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr

from search.engine import SearchEngine
from ui_handlers import SearchUI, Session, as_gr_error
from ui_page import COPY_LINK_JS, FOCUS_MIX_TEXT_JS, RESULTS_JS
from ui_render import picture_url
from upload_inputs import MAX_FILE_BYTES, explain_unreadable_uploads, fetch_url_inputs_within_limits
from webapp import Startup, notice_summary, score_hint

UPLOAD_LIFETIME_S = (300, 1800)  # gradio's delete_cache: (how often to look, how old a file may get) in seconds
CONCURRENCY_ID = "search"  # one group: the queue's limit holds for all events together, not per event
PRIVATE = {"api_visibility": "private", "show_progress": "minimal", "concurrency_id": CONCURRENCY_ID}


def build_app(startup: Startup) -> gr.Blocks:
    """The Blocks UI and API over one engine."""
    ui = SearchUI(startup)
    # Uploads and fetched URLs are deleted 30 minutes after they arrive (checked every 5), so repeated uploads
    # cannot fill the disk; examples stay (gradio keeps them).
    with gr.Blocks(title="Semantic image search", analytics_enabled=False, delete_cache=UPLOAD_LIFETIME_S) as demo:
        gr.Markdown("# Semantic image search", elem_id="title")
        if startup.notice is not None:
            with gr.Accordion(notice_summary(startup), open=False, elem_id="notice"):
                gr.Markdown(startup.notice)
        page = _controls(ui)
        _wire(ui, demo, page)
        add_api(ui)
    return demo


def _controls(ui: SearchUI) -> dict[str, Any]:
    """The components, top to bottom; returned by name for the wiring."""
    d, c = ui.defaults, {}
    with gr.Tabs(elem_id="tabs") as c["tabs"]:
        with gr.Tab("Text", id="text", elem_id="tab-text") as c["text_tab"], gr.Row(elem_id="query-row"):
            c["query"] = gr.Textbox(label="Describe the picture", elem_id="query", max_lines=1, scale=5,
                                    placeholder=next(iter(d.text_examples), "a dog on a beach"), min_width=120)
            c["text_button"] = gr.Button("Search", variant="primary", elem_id="text-search", scale=0, min_width=80)
        with gr.Tab("Image", id="image", elem_id="tab-image") as c["image_tab"]:
            c["image"] = explain_unreadable_uploads(fetch_url_inputs_within_limits(gr.Image(
                type="filepath", image_mode=None, label="Example picture", elem_id="image",
                sources=["upload", "webcam", "clipboard"], height=200), MAX_FILE_BYTES))
            with gr.Row(elem_id="mix-row"):
                c["mix_text"] = gr.Textbox(label="And this text (optional)", max_lines=1, elem_id="mix-text",
                                           min_width=120)
                c["image_button"] = gr.Button("Search", variant="primary", elem_id="image-search", scale=0,
                                              min_width=80)
            if examples := [[path] for path in example_images(ui.engine)]:
                gr.Examples(examples, [c["image"]], cache_examples=False, label="Example pictures")
    with gr.Accordion("Options", open=False, elem_id="options"), gr.Row():
        c["top_k"] = gr.Slider(1, 100, value=12, step=1, label="Results (top k)", elem_id="top-k")
        c["text_threshold"] = gr.Slider(-1, 1, value=d.text_threshold, step=0.01, elem_id="text-threshold",
                                        label="Similarity threshold (text)")
        c["image_threshold"] = gr.Slider(-1, 1, value=d.image_threshold, step=0.01, elem_id="image-threshold",
                                         label="Similarity threshold (picture and “more like this”)")
        c["weight"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Text weight when mixing with a picture")
        c["exclude"] = gr.Textbox(label="Exclude (comma-separated terms to steer away from)", max_lines=1,
                                  elem_id="exclude")
        gr.Markdown(score_hint(d), elem_id="score-hint")
        # Filters and sort (search-features issue) go here.
    with gr.Row(elem_id="examples"):
        c["examples"] = [gr.Button(text, size="sm", variant="secondary") for text in d.text_examples]
    with gr.Row(elem_id="status-row"):
        c["status"] = gr.Markdown(elem_id="status")
        gr.HTML('<span id="copy-note" role="status"></span>', padding=False, elem_id="copy-note-box")
        c["copy"] = gr.Button("Copy link", size="sm", elem_id="copy-link", scale=0, min_width=90)
    c["results"] = gr.HTML(elem_id="results", js_on_load=RESULTS_JS, padding=False)
    # A "Load more" button for the next page (search-features issue) goes here.
    c["session"] = gr.State(Session())
    return c


def _wire(ui: SearchUI, demo: gr.Blocks, c: dict[str, Any]) -> None:
    """The page's events; all private (not in the API or MCP), one concurrency group with the API."""
    shown = [c["results"], c["status"], c["session"]]
    thresholds = [c["top_k"], c["text_threshold"], c["image_threshold"]]
    text_in = [c["query"], c["exclude"], c["top_k"], c["text_threshold"], c["session"]]
    gr.on([c["text_button"].click, c["query"].submit], as_gr_error(ui.ui_text), text_in, shown, **PRIVATE)
    gr.on([c["image_button"].click, c["image"].upload, c["mix_text"].submit], as_gr_error(ui.ui_image),
          [c["image"], c["mix_text"], c["weight"], c["exclude"], c["top_k"], c["image_threshold"], c["session"]],
          shown, **PRIVATE)
    for button in c["examples"]:
        button.click(as_gr_error(_example(ui)), [button, *text_in[1:]], [c["query"], *shown], **PRIVATE)
    c["results"].similar(as_gr_error(ui.ui_similar), [c["top_k"], c["image_threshold"], c["session"]], shown,
                         **PRIVATE)
    c["results"].mix(as_gr_error(_mix(ui)), [c["top_k"], c["image_threshold"], c["session"]],
                     [c["image"], c["tabs"], *shown], **PRIVATE).then(None, js=FOCUS_MIX_TEXT_JS, **PRIVATE)
    # change, not release: typing a number and pressing Enter, and the arrow keys on a slider, re-run too.
    gr.on([slider.change for slider in thresholds], as_gr_error(ui.ui_rerun), [*thresholds, c["session"]], shown,
          trigger_mode="always_last", **PRIVATE)
    for tab, name in ((c["text_tab"], "text"), (c["image_tab"], "image")):
        tab.select(lambda session, name=name: ui.ui_tab(name, session), c["session"], shown, **PRIVATE)
    c["copy"].click(None, js=COPY_LINK_JS, **PRIVATE)
    demo.load(as_gr_error(ui.ui_load), thresholds, [c["query"], *shown], **PRIVATE)


def _example(ui: SearchUI) -> Any:
    def example(text: str, exclude: str, top_k: float, threshold: float, session: Session) -> tuple:
        """An example button: put its text in the query box and search for it."""
        return (text, *ui.ui_text(text, exclude, top_k, threshold, session))

    return example


def _mix(ui: SearchUI) -> Any:
    def mix(top_k: float, threshold: float, session: Session, evt: gr.EventData) -> tuple:
        """"Search with this picture and a text": the picture into the Image tab, its neighbours shown there."""
        hit = ui.picked(session, evt)
        image = hit.image if "://" not in hit.image else picture_url(hit, 480)
        results = ui.similar_to(hit.id, top_k, threshold, replace(session, tab="image"))
        return (image, gr.Tabs(selected="image"), *results)

    return mix


def add_api(ui: SearchUI) -> None:
    """API-only endpoints (no trigger in the page) on hidden inputs, each with one JSON output; also MCP tools."""
    with gr.Column(visible=False):
        text, item_id = gr.Textbox(label="query"), gr.Textbox(label="id")
        # Our loader, not gr.Image, judges odd files; a URL instead of a file is fetched within the upload limits.
        image = fetch_url_inputs_within_limits(gr.File(label="image", type="filepath"), MAX_FILE_BYTES)
        top_k = gr.Number(label="top_k", value=10)
        threshold = gr.Number(label="threshold", value=0.0)
        result = gr.JSON(label="hits")
    for name, source in (("search_text", text), ("search_image", image), ("similar", item_id)):
        handler = as_gr_error(getattr(ui, name))
        gr.on([], handler, [source, top_k, threshold], result, api_name=name,
              api_description=(handler.__doc__ or "").split("\n")[0], concurrency_id=CONCURRENCY_ID)


def example_images(engine: SearchEngine, count: int = 4) -> list[str]:
    """A few local pictures of the collection to try in the Image tab (none for remote collections)."""
    # Gradio copies example files into its cache at launch and serves them to every visitor, so only files inside
    # the bundle qualify: the catalog admits no other local path, and this second look costs four stat calls.
    bundle = engine.bundle
    hits = [bundle.catalog.hit(row, 1.0) for row in range(min(count, len(bundle.catalog)))]
    return [hit.image for hit in hits if "://" not in hit.image and bundle.folder.contains(hit.image)]
