"""The page: results first (query box, then pictures), secondary controls in a collapsed Options panel."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr
from anyio import CapacityLimiter

from search.bundle.colour import PALETTE
from search.query.engine import SearchEngine
from search.query.option_spec import BY_NAME
from search.query.options import ORIENTATIONS, READING_KINDS
from search.web.gradio_api import CONCURRENCY_ID, add_api
from search.web.handlers import SearchUI, Session, as_gr_error
from search.web.links import parse_query_string
from search.web.options_panel import FILTER_COLUMNS, available_sorts, control_value
from search.web.page_assets import COPY_LINK_JS, FOCUS_MIX_TEXT_JS, MORE_FAILED_JS, RESULTS_JS, rerun_once_js
from search.web.page_settings import DEFAULT_TOP_K, DEFAULT_WEIGHT, Settings
from search.web.reading_chips import UNREAD_FAILED_JS, unread_handler
from search.web.render import picture_url
from search.web.startup import Startup, notice_summary, score_hint
from search.web.uploads import explain_unreadable_uploads
from search.web.url_fetches import ImageSearchEvents, UrlFetches, url_inputs_for_the_handler

UPLOAD_LIFETIME_S = (300, 1800)  # gradio's delete_cache: (how often to look, how old a file may get) in seconds
PRIVATE = {"api_visibility": "private", "show_progress": "minimal", "concurrency_id": CONCURRENCY_ID}
# A re-run's refusal (a bad typed filter) is said once, in its toast: no "Error" badge drawn over the results.
RERUN = PRIVATE | {"show_progress": "hidden"}


def build_app(startup: Startup, ui: SearchUI | None = None, fetches: UrlFetches | None = None) -> gr.Blocks:
    """The Blocks UI and API over one engine (through `ui`, made here when not given); image URLs are fetched by
    `fetches` (default bounds when not given)."""
    ui = ui or SearchUI(startup)
    # One count of fetches for the page and the API; image searches at once as many as the model has slots.
    images = ImageSearchEvents(fetches or UrlFetches(), CapacityLimiter(ui.engine.limiter.slots))
    # Uploads and fetched URLs are deleted 30 minutes after they arrive (checked every 5), which frees their room
    # in the cache's size budget (uploads.UPLOAD_SPACE_BYTES); examples stay (gradio keeps them).
    with gr.Blocks(title="Semantic image search", analytics_enabled=False, delete_cache=UPLOAD_LIFETIME_S) as demo:
        gr.Markdown("# Semantic image search", elem_id="title")
        if startup.notice is not None:
            with gr.Accordion(notice_summary(startup), open=False, elem_id="notice"):
                gr.Markdown(startup.notice)
        page = _controls(ui)
        _wire(ui, demo, page, images)
        add_api(ui, images)
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
            # Outermost, the URL pass-through: a URL is the handler's to fetch, not a file to check.
            c["image"] = url_inputs_for_the_handler(explain_unreadable_uploads(gr.Image(
                type="filepath", image_mode=None, label="Example picture", elem_id="image",
                sources=["upload", "webcam", "clipboard"], height=200)))
            with gr.Row(elem_id="mix-row"):
                c["mix_text"] = gr.Textbox(label="And this text (optional)", max_lines=1, elem_id="mix-text",
                                           min_width=120)
                c["image_button"] = gr.Button("Search", variant="primary", elem_id="image-search", scale=0,
                                              min_width=80)
            if examples := [[path] for path in example_images(ui.engine)]:
                gr.Examples(examples, [c["image"]], cache_examples=False, label="Example pictures")
    with gr.Accordion("Options", open=False, elem_id="options"), gr.Row():
        c["top_k"] = gr.Slider(1, 100, value=DEFAULT_TOP_K, step=1, label="Results (top k)", elem_id="top-k")
        c["text_threshold"] = gr.Slider(-1, 1, value=d.text_threshold, step=0.01, elem_id="text-threshold",
                                        label="Similarity threshold (text)")
        c["image_threshold"] = gr.Slider(-1, 1, value=d.image_threshold, step=0.01, elem_id="image-threshold",
                                         label="Similarity threshold (picture and “more like this”)")
        c["weight"] = gr.Slider(0, 1, value=DEFAULT_WEIGHT, step=0.05, label="Text weight when mixing with a picture",
                                elem_id="weight")
        c["exclude"] = gr.Textbox(label="Exclude (comma-separated terms to steer away from)", max_lines=1,
                                  elem_id="exclude")
        gr.Markdown(score_hint(d), elem_id="score-hint")
        c["options"] = option_controls(ui)
    with gr.Row(elem_id="examples"):
        c["examples"] = [gr.Button(text, size="sm", variant="secondary") for text in d.text_examples]
    with gr.Row(elem_id="status-row"):
        c["status"] = gr.Markdown(elem_id="status", latex_delimiters=[])  # it quotes queries: no $$…$$ maths
        gr.HTML('<span id="copy-note" role="status"></span>', padding=False, elem_id="copy-note-box")
        c["copy"] = gr.Button("Copy link", size="sm", elem_id="copy-link", scale=0, min_width=90)
    c["results"] = gr.HTML(elem_id="results", js_on_load=RESULTS_JS, padding=False)  # "Load more" is inside it
    c["session"] = gr.State(Session())
    return c


def _wire(ui: SearchUI, demo: gr.Blocks, c: dict[str, Any], images: ImageSearchEvents) -> None:
    """The page's events; all private (not in the API or MCP); the image search in the image group (`images`),
    the rest in one concurrency group with the API."""
    shown = [c["results"], c["status"], c["session"]]
    names, opts = list(c["options"]), list(c["options"].values())  # every search reads the options panel
    thresholds = [c["top_k"], c["text_threshold"], c["image_threshold"]]
    text_in = [c["query"], c["exclude"], c["top_k"], c["text_threshold"], c["session"], *opts]
    gr.on([c["text_button"].click, c["query"].submit], _with_options(ui.ui_text, names), text_in, shown, **PRIVATE)
    gr.on([c["image_button"].click, c["image"].upload, c["mix_text"].submit],
          images.fetching_first(_with_options(ui.ui_image, names), c["image"]),
          [c["image"], c["mix_text"], c["weight"], c["exclude"], c["top_k"], c["image_threshold"], c["session"],
           *opts], shown, **(PRIVATE | images.CONCURRENCY))
    for button in c["examples"]:
        button.click(_with_options(_example(ui), names), [button, *text_in[1:]], [c["query"], *shown], **PRIVATE)
    picked_in = [c["top_k"], c["image_threshold"], c["session"], *opts]
    c["results"].similar(_with_options(ui.ui_similar, names, event=True), picked_in, shown, **PRIVATE)
    c["results"].mix(_with_options(_mix(ui), names, event=True), picked_in, [c["image"], c["tabs"], *shown],
                     **PRIVATE).then(None, js=FOCUS_MIX_TEXT_JS, **PRIVATE)
    c["results"].marks(as_gr_error(ui.ui_marks), [*thresholds, c["session"]], shown, **PRIVATE)  # "Search again"
    c["results"].more(as_gr_error(ui.ui_more), [c["session"]], shown, **PRIVATE).failure(
        None, js=MORE_FAILED_JS, **PRIVATE)
    # input, not release: typing a number and pressing Enter, and the arrow keys on a slider, re-run too. Typed
    # filters re-run on Enter or leaving the box, not on every key; Exclude on Enter. Sliders and chosen options
    # re-run on a visitor's input only: their change event also fires when the page sets them (a deep link, Back),
    # one control at a time, and would re-run the search with the others not yet set.
    typed = [event for opt in opts if isinstance(opt, gr.Textbox | gr.Number) for event in (opt.submit, opt.blur)]
    chosen = [opt.input for opt in opts if not isinstance(opt, gr.Textbox | gr.Number)]
    sliders = [slider.input for slider in (*thresholds, c["weight"])]
    rerun_in = [*thresholds, c["weight"], c["exclude"], c["session"], *opts]
    gr.on([*sliders, c["exclude"].submit, *typed, *chosen], _with_options(_rerun(ui), names), rerun_in, shown,
          js=rerun_once_js(rerun_in.index(c["session"])), trigger_mode="always_last", **RERUN)
    for tab, name in ((c["text_tab"], "text"), (c["image_tab"], "image")):
        tab.select(lambda session, name=name: ui.ui_tab(name, session), c["session"], shown, **PRIVATE)
    c["copy"].click(None, js=COPY_LINK_JS, **PRIVATE)
    if "not_understood" in c["options"]:  # a reading's chip removed: the search again without that kind
        c["results"].unread(_with_options(unread_handler(ui), names, event=True), [*thresholds, c["session"], *opts],
                            [*shown, c["options"]["not_understood"]], **PRIVATE).failure(
            None, js=UNREAD_FAILED_JS, **PRIVATE)
    settings = [c["query"], c["exclude"], *thresholds, c["weight"], c["tabs"], *opts, *shown]
    demo.load(as_gr_error(_load(ui, names)), None, settings, **PRIVATE)
    c["results"].restore(as_gr_error(_restore(ui, names)), [c["session"]], settings, trigger_mode="always_last",
                         **PRIVATE)  # Back twice quickly: the second address counts


def _with_options(fn: Any, names: list[str], event: bool = False) -> Any:
    """`fn` taking its own inputs then the options panel's values (one input each, in `names` order)."""
    fixed = len(names)

    def split(values: tuple) -> tuple[tuple, dict[str, Any]]:
        cut = len(values) - fixed
        return values[:cut], dict(zip(names, values[cut:], strict=True))

    def handler(*values: Any) -> Any:
        own, options = split(values)
        return fn(*own, options=options)

    def picked(evt: gr.EventData, *values: Any) -> Any:  # gradio passes the event data first, by its type
        own, options = split(values)
        return fn(*own, evt, options=options)

    chosen = picked if event else handler
    chosen.__name__ = getattr(fn, "__name__", "handler")
    return as_gr_error(chosen)


def option_controls(ui: SearchUI) -> dict[str, Any]:
    """Filter, sort, cut-off, near-duplicate and keyword controls: only those this collection has data for."""
    made = {key: _option_control(key, ui) for key in ui.available}
    missing = [key.replace("_", " ") for key in FILTER_COLUMNS if key not in made]
    if missing:
        gr.Markdown(f"Not offered for this collection (it has no data for them): {', '.join(missing)}.",
                    elem_id="options-missing")
    return made


def _option_control(key: str, ui: SearchUI) -> Any:
    value, elem, label = control_value(key, {}), f"opt-{key.replace('_', '-')}", BY_NAME[key].label
    common = {"value": value, "elem_id": elem, "min_width": 140, "label": label}
    if key in {"collapse_radius", "keywords", "understand"}:  # the page folds at the suggested radius, or not at all
        return gr.Checkbox(**common)
    if key == "not_understood":  # also set by removing a reading's chip (reading_chips.py)
        return gr.CheckboxGroup(list(READING_KINDS), **common)
    if key == "min_downloads":
        return gr.Number(minimum=0, precision=0, **common)
    sort_labels = {"relevance": "relevance", "date": "newest first", "popularity": "most downloaded"}
    cutoff_labels = {"flat": "threshold only", "relative": "relative to the best", "gap": "at the largest score gap"}
    choices = {"orientation": ["any", *ORIENTATIONS], "colour": ["any", *PALETTE],
               "featured": [("any", "any"), ("featured only", "true"), ("not featured", "false")],
               "has_text": [("any", "any"), ("with words", "true"), ("without words", "false")],
               "sort": [(sort_labels[sort], sort) for sort in available_sorts(ui.engine)],
               "cutoff": [(cutoff_labels[cutoff], cutoff) for cutoff in BY_NAME["cutoff"].choices]}.get(key)
    if choices is None:
        return gr.Textbox(max_lines=1, **common)
    return gr.Dropdown(choices, **common)


def _controls_for(opened: tuple[str, Settings, str, str, Session], names: list[str]) -> tuple:
    """The page's controls, results and session for a link opened (ui_open): the controls show the link's values."""
    query, settings, html, status, session = opened
    options = session.view.request.options if session.view.request is not None else {}
    return (query, settings.exclude, settings.top_k, settings.text_threshold, settings.image_threshold,
            settings.weight, gr.Tabs(selected=session.tab), *(control_value(name, options) for name in names),
            html, status, session)


def _load(ui: SearchUI, names: list[str]) -> Any:
    def load(request: gr.Request) -> tuple:
        """Page load: the linked (or default) search, with the page's controls showing the link's values."""
        return _controls_for(ui.ui_load(request), names)

    return load


def _restore(ui: SearchUI, names: list[str]) -> Any:
    def restore(session: Session, evt: gr.EventData) -> tuple:
        """Browser Back or Forward: the search of the address the browser went to (its query string)."""
        data = getattr(evt, "_data", None)
        search = data.get("search") if isinstance(data, dict) else None
        return _controls_for(ui.ui_open(parse_query_string(search if isinstance(search, str) else ""), session),
                             names)

    return restore


def _rerun(ui: SearchUI) -> Any:
    def rerun(top_k: float, text_threshold: float, image_threshold: float, weight: float,  # noqa: PLR0917
              exclude: str, session: Session, options: dict[str, Any]) -> Any:
        """A moved slider, a changed option or Enter in Exclude: the open tab's search again, with them."""
        return ui.ui_rerun(top_k, text_threshold, image_threshold, session, options, (weight, exclude))

    return rerun


def _example(ui: SearchUI) -> Any:
    def example(text: str, exclude: str, top_k: float, threshold: float, session: Session,  # noqa: PLR0917
                options: dict[str, Any]) -> tuple:
        """An example button: put its text in the query box and search for it."""
        return (text, *ui.ui_text(text, exclude, top_k, threshold, session, options))

    return example


def _mix(ui: SearchUI) -> Any:
    def mix(top_k: float, threshold: float, session: Session, evt: gr.EventData, options: dict[str, Any]) -> tuple:
        """"Search with this picture and a text": the picture into the Image tab, its neighbours shown there."""
        hit = ui.picked(session, evt)
        image = hit.image if "://" not in hit.image else picture_url(hit, 480)
        results = ui.similar_to(hit.id, top_k, threshold, replace(session, tab="image"), options)
        return (image, gr.Tabs(selected="image"), *results)

    return mix


def example_images(engine: SearchEngine, count: int = 4) -> list[str]:
    """A few local pictures of the collection to try in the Image tab (none for remote collections)."""
    # Gradio copies example files into its cache at launch and serves them to every visitor, so only files inside
    # the bundle qualify: the catalog admits no other local path, and this second look costs four stat calls.
    bundle = engine.bundle
    hits = [bundle.catalog.hit(row, 1.0) for row in range(min(count, len(bundle.catalog)))]
    return [hit.image for hit in hits if "://" not in hit.image and bundle.folder.contains(hit.image)]
