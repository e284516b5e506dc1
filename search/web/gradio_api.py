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

from search.query.option_spec import OPTIONS, OptionSpec
from search.web.handlers import SearchUI, as_gr_error
from search.web.url_fetches import ImageSearchEvents, url_inputs_for_the_handler

CONCURRENCY_ID = "search"  # one group: the queue's limit holds for its events together (image searches: their own)
def _component(spec: OptionSpec) -> gr.components.Component:
    if isinstance(spec.default, bool):
        return gr.Checkbox(label=spec.name, value=spec.default)
    if isinstance(spec.default, int):
        return gr.Number(label=spec.name, value=spec.default, precision=0)
    return gr.Textbox(label=spec.name, value=spec.default)


def endpoint(method: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
    """`method`(first, top_k, threshold, options=…) as a function of named parameters: the options spelled out."""
    base = [param for name, param in inspect.signature(method).parameters.items() if name != "options"]
    names = [spec.name for spec in OPTIONS]

    def call(*values: Any) -> list[dict]:
        return method(*values[:len(base)], options=dict(zip(names, values[len(base):], strict=False)))

    # gradio names the API's parameters, and MCP describes them, from the signature and the docstring's Args.
    extra = [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec.default,
                               annotation=type(spec.default)) for spec in OPTIONS]
    call.__signature__ = inspect.Signature([*base, *extra], return_annotation=list[dict])  # type: ignore[attr-defined]
    call.__annotations__ = {param.name: param.annotation for param in [*base, *extra]} | {"return": list[dict]}
    call.__name__ = method.__name__
    call.__doc__ = "\n".join([inspect.getdoc(method) or "", *(f"    {spec.name}: {spec.help}" for spec in OPTIONS)])
    return call


def add_api(ui: SearchUI, images: ImageSearchEvents) -> None:
    """API-only endpoints (no trigger in the page) on hidden inputs, each with one JSON output; also MCP tools."""
    with gr.Column(visible=False):
        text, item_id = gr.Textbox(label="query"), gr.Textbox(label="id")
        # Our loader, not gr.Image, judges odd files; a URL instead of a file is fetched by the handler (`images`).
        image = url_inputs_for_the_handler(gr.File(label="image", type="filepath"))
        top_k = gr.Number(label="top_k", value=10)
        threshold = gr.Number(label="threshold", value=0.0)
        options = [_component(spec) for spec in OPTIONS]
        result = gr.JSON(label="hits")
    for name, source in (("search_text", text), ("search_image", image), ("similar", item_id)):
        handler = as_gr_error(endpoint(getattr(ui, name)))
        concurrency = {"concurrency_id": CONCURRENCY_ID}
        if source is image:
            handler, concurrency = images.fetching_first(handler, image), images.CONCURRENCY
        gr.on([], handler, [source, top_k, threshold, *options], result, api_name=name,
              api_description=(handler.__doc__ or "").split("\n")[0], **concurrency)
