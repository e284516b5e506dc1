"""The JSON API (gradio_client) and MCP tools: search_text, search_image and similar, with optional search options.

Each endpoint takes its three first parameters (query or image or id, top_k, threshold), then the search options as
optional parameters with defaults, so a call with only the first three gets the plain ranking. The options are
checked by SearchOptions.from_params (the one place), like the CLI's flags and the REST API's fields.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr

from search.bundle.colour import PALETTE
from search.query.options import MAX_OFFSET, MAX_RADIUS, SUGGESTED_RADIUS
from search.web.handlers import SearchUI, as_gr_error
from search.web.url_fetches import ImageSearchEvents, url_inputs_for_the_handler

CONCURRENCY_ID = "search"  # one group: the queue's limit holds for its events together (image searches: their own)
ANY = "; empty: any"
API_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("orientation", "", "landscape, portrait or square" + ANY),
    ("colour", "", f"dominant colour: {', '.join(PALETTE)}" + ANY),
    ("date_from", "", "taken or submitted on or after this day, YYYY-MM-DD (UTC)" + ANY),
    ("date_to", "", "taken or submitted on or before this day, YYYY-MM-DD (UTC)" + ANY),
    ("country", "", "country name, any case" + ANY),
    ("city", "", "city name, any case" + ANY),
    ("camera", "", "part of the camera make and model, any case (e.g. canon)" + ANY),
    ("photographer", "", "Unsplash username of the photographer" + ANY),
    ("featured", "", "true: only featured photos; false: only the others" + ANY),
    ("min_downloads", "", "at least this many downloads" + ANY),
    ("sort", "relevance", "order of the hits above the threshold: relevance, date (newest first) or popularity"),
    ("collapse_radius", "", f"fold hits within this cosine distance (0 to {MAX_RADIUS}) of a better-ranked hit into "
                            f"it, counted in its duplicates (suggested {SUGGESTED_RADIUS}); empty: no folding"),
    ("offset", 0, f"skip this many hits, 0 to {MAX_OFFSET}: the next page starts at offset + top_k"),
    ("cutoff", "flat", "flat: the threshold only; relative: also drop hits far below the best; gap: cut at the "
                       "largest score drop"),
    ("keywords", True, "also rank by keyword (BM25) matches of the text where the index has a keyword index"),
)
"""Optional parameters after (query | image | id, top_k, threshold): name, default, description."""


def _component(name: str, default: Any) -> gr.components.Component:
    if isinstance(default, bool):
        return gr.Checkbox(label=name, value=default)
    if isinstance(default, int):
        return gr.Number(label=name, value=default, precision=0)
    return gr.Textbox(label=name, value=default)


def endpoint(method: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
    """`method`(first, top_k, threshold, options=…) as a function of named parameters: the options spelled out."""
    base = [param for name, param in inspect.signature(method).parameters.items() if name != "options"]
    names = [name for name, _, _ in API_OPTIONS]

    def call(*values: Any) -> list[dict]:
        return method(*values[:len(base)], options=dict(zip(names, values[len(base):], strict=False)))

    # gradio names the API's parameters, and MCP describes them, from the signature and the docstring's Args.
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                               annotation=type(default)) for name, default, _ in API_OPTIONS]
    call.__signature__ = inspect.Signature([*base, *extra], return_annotation=list[dict])  # type: ignore[attr-defined]
    call.__annotations__ = {param.name: param.annotation for param in [*base, *extra]} | {"return": list[dict]}
    call.__name__ = method.__name__
    call.__doc__ = "\n".join([inspect.getdoc(method) or "", *(f"    {name}: {text}" for name, _, text in API_OPTIONS)])
    return call


def add_api(ui: SearchUI, images: ImageSearchEvents) -> None:
    """API-only endpoints (no trigger in the page) on hidden inputs, each with one JSON output; also MCP tools."""
    with gr.Column(visible=False):
        text, item_id = gr.Textbox(label="query"), gr.Textbox(label="id")
        # Our loader, not gr.Image, judges odd files; a URL instead of a file is fetched by the handler (`images`).
        image = url_inputs_for_the_handler(gr.File(label="image", type="filepath"))
        top_k = gr.Number(label="top_k", value=10)
        threshold = gr.Number(label="threshold", value=0.0)
        options = [_component(name, default) for name, default, _ in API_OPTIONS]
        result = gr.JSON(label="hits")
    for name, source in (("search_text", text), ("search_image", image), ("similar", item_id)):
        handler = as_gr_error(endpoint(getattr(ui, name)))
        concurrency = {"concurrency_id": CONCURRENCY_ID}
        if source is image:
            handler, concurrency = images.fetching_first(handler, image), images.CONCURRENCY
        gr.on([], handler, [source, top_k, threshold, *options], result, api_name=name,
              api_description=(handler.__doc__ or "").split("\n")[0], **concurrency)
