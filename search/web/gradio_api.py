"""The JSON API (gradio_client) and MCP tools: search_text, search_image and similar, with optional search options.

Each endpoint takes its three first parameters (query or image or id, top_k, threshold), then the search options as
optional parameters with defaults, so a call with only the first three gets the plain ranking. The options are
checked by SearchOptions.from_params (the one place), like the CLI's flags and the REST API's fields.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Callable
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
    readings = as_gr_error(endpoint(ui.understood))  # what search_text reads a query as (no model work)
    gr.on([], readings, [text, *options], gr.JSON(label="readings", visible=False), api_name="understood",
          api_description=(readings.__doc__ or "").split("\n")[0], concurrency_id=CONCURRENCY_ID)


TOOLS = ("search_text", "search_image", "similar")


def mcp_json_results(demo: gr.Blocks) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for launch's app_kwargs: once gradio has made its MCP server, the tools answer JSON.

    Gradio writes a tool's output as `str(value)` (a Python repr: single quotes, None) with no structured content;
    an MCP client wants the hits as JSON text and as `structuredContent` (`{"hits": [...]}`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        server = getattr(demo, "mcp_server_obj", None)
        if server is not None:  # gradio made it (and entered its own lifespan) before this one
            answer_json(server)
        yield

    return lifespan


def answer_json(server: Any) -> None:
    """Make gradio's MCP server (gradio.mcp.GradioMCPServer) answer our tools' hits as JSON, text and structured."""
    from mcp import types  # installed with gradio[mcp], which serves the tools at all

    handlers = server.mcp_server.request_handlers
    gradio_call = handlers[types.CallToolRequest]
    gradio_output = server.postprocess_output_data

    def output(data: Any, root_url: str) -> list[Any]:
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):  # one gr.JSON list of hits
            return [types.TextContent(type="text", text=json.dumps(data[0], ensure_ascii=False))]
        return gradio_output(data, root_url)

    async def call(request: Any) -> Any:
        answer = await gradio_call(request)
        result, tool = answer.root, request.params.name.removeprefix(server.tool_prefix)
        if tool in TOOLS and isinstance(result, types.CallToolResult) and not result.isError \
                and len(result.content) == 1 and isinstance(result.content[0], types.TextContent):
            result.structuredContent = {"hits": json.loads(result.content[0].text)}
        return answer

    server.postprocess_output_data = output
    handlers[types.CallToolRequest] = call
