"""A plain REST API under /api, served by Gradio's own FastAPI app (same process, same port, same limits).

The handlers are the Gradio API's own (handlers.SearchUI.search_text / search_image / similar): the same validation,
the same messages, the same hit JSON and the same process-wide limit on model work (search/model/limits.py). Only the
transport differs: query parameters and a multipart upload in, JSON out, errors as `{"error": "..."}`.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
from anyio import CapacityLimiter, to_thread
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from search.bundle.hub import snapshot_label
from search.errors import BadImageError, SearchError, UnknownItemError
from search.model.limits import BusyError
from search.model.onnx_text import text_precision_record
from search.query.option_spec import ALIASES, OPTIONS, canonical, refuse_unknown
from search.types import Hit  # the response schema in the docs: every route answers hits_json
from search.web.api_docs import add_docs
from search.web.public_errors import bug_message, without_server_paths
from search.web.startup import Startup

logger = logging.getLogger(__name__)
Options = dict[str, str] | None

PREFIX = "/api"
IMAGE_ROUTE = "/search/image"  # the one route with a body: uploads.UPLOAD_BODY names it for its size limit
DEFAULT_K = 12
LIGHT_DEPTH = 100
"""A search reaching at most this many hits deep (offset + top_k) without folding costs a few milliseconds at most."""
HEAVY_SLOTS = 1
"""Heavy searches at once: each is bounded (search/query/retrieval.py, at most ~0.1 s of one core on 40 000 items), and
one at a time leaves the other core to everyone else."""
READ_HEADER = "X-Understood"
"""A text search's readings (search/query/understand.py): [{"kind", "label", "words", "filters"}], ASCII JSON."""
CLIENT_GONE = 499  # nginx's "client closed request": logged, never seen by the client that left
# One status per kind of failure; anything else a SearchError says is a bad parameter value (400).
STATUS = ((UnknownItemError, 404), (BadImageError, 422), (BusyError, 503), (SearchError, 400))


class Handlers(Protocol):
    """The Gradio API handlers (handlers.SearchUI) the routes call: validation lives there, once."""

    def search_text(self, query: str, top_k: float, threshold: float, options: Options = None) -> list[dict]: ...
    def search_image(self, image: Any, top_k: float, threshold: float, options: Options = None) -> list[dict]: ...
    def similar(self, id: str, top_k: float, threshold: float, options: Options = None) -> list[dict]: ...
    def understood(self, query: str, options: Options = None) -> list[dict]: ...


class ErrorOut(BaseModel):
    """Every failure: one line saying what is wrong and what to do."""

    error: str


@dataclass(frozen=True, slots=True)
class SearchParams:
    """The parameters every search route shares; the search options travel as raw text to the handler."""

    top_k: float
    threshold: float
    options: Options = None


def option_params(**given: str | None) -> Options:
    """The search options given (filters, sort, pages…) under their one names, as raw text:
    SearchOptions.from_params checks them."""
    chosen = canonical({name: value for name, value in given.items() if value is not None})
    return chosen or None


# The options of search/query/option_spec.py as query parameters; their earlier names too, accepted and undocumented.
option_params.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    *(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                        annotation=Annotated[str | None, Query(description=spec.help)]) for spec in OPTIONS),
    *(inspect.Parameter(alias, inspect.Parameter.KEYWORD_ONLY, default=None,
                        annotation=Annotated[str | None, Query(include_in_schema=False)]) for alias in ALIASES)])
ROUTE_PARAMS = ("top_k", "threshold", "k")  # and `q` on the text search: each route refuses what it would ignore


def search_params(*own: str) -> Callable[..., SearchParams]:
    """The dependency reading the parameters every search route shares, refusing any that is neither those, an
    option, nor one of the route's `own` parameters (read by the route itself)."""
    known = (*own, *ROUTE_PARAMS)

    def shared(
            request: Request,
            top_k: Annotated[float | None, Query(description="how many hits at most, 0 to 1000 (default 12)")] = None,
            threshold: Annotated[float, Query(description="lowest cosine similarity kept, -1 to 1")] = 0.0,
            options: Annotated[Options, Depends(option_params)] = None,
            k: Annotated[float | None, Query(include_in_schema=False)] = None,  # top_k's earlier name
    ) -> SearchParams:
        refuse_unknown(request.query_params.keys(), known)
        chosen = top_k if top_k is not None else k
        return SearchParams(DEFAULT_K if chosen is None else chosen, threshold, options)

    return shared


TextParams = Annotated[SearchParams, Depends(search_params("q"))]
Params = Annotated[SearchParams, Depends(search_params())]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 404, 413, 422, 503)}


def rest_app(handlers: Handlers, startup: Startup) -> FastAPI:
    """The REST routes over `handlers`, with OpenAPI docs at /api/docs."""
    api = FastAPI(title="Semantic image search", docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  responses=ERRORS,
                  description="Search a photo collection by text, by example image or by a collection item.")

    lanes = Lanes()

    @api.get("/search", response_model=list[Hit], summary="Items matching a text description",
             description=f"The filters read from the query's words (option `understand`) are in the {READ_HEADER} "
                         "header, as a JSON list.")
    async def search(request: Request, q: Annotated[str, Query(description="what the picture shows")],
                     params: TextParams) -> Any:
        response = await lanes.answer(request, handlers.search_text, q, params)
        if response.status_code == 200:  # the options were checked; reading is bounded (MAX_READINGS), off the loop
            readings = await to_thread.run_sync(handlers.understood, q, params.options)
            response.headers[READ_HEADER] = json.dumps(readings, ensure_ascii=True)  # a header is Latin-1
        return response

    # Every upload needs a model slot, so more upload threads than slots would only wait, holding worker threads
    # that cached text queries and "more like this" need (64 clients: those waited ~0.9 s behind the uploads).
    uploads = CapacityLimiter(startup.engine.limiter.slots)

    @api.post(IMAGE_ROUTE, response_model=list[Hit], summary="Items that look like an uploaded picture")
    async def search_image(request: Request,
                           file: Annotated[UploadFile, File(description="a JPEG, PNG, GIF, WebP, BMP or TIFF file")],
                           params: Params) -> Any:
        # The spooled upload itself: search/model/images.py reads it within the same pixel and decode limits.
        return await lanes.answer(request, handlers.search_image, file.file, params, light=uploads)

    @api.get("/similar/{id}", response_model=list[Hit], summary="Items like a collection item")
    async def similar(request: Request, id: Annotated[str, PathParam(description="an item id from a hit")],
                      params: Params) -> Any:
        return await lanes.answer(request, handlers.similar, id, params)

    @api.get("/health", summary="Whether the index is loaded, which one, and with which model")
    async def health() -> dict[str, Any]:  # on the event loop: no worker thread to wait for, however busy
        return health_record(startup)

    add_docs(api)  # at /docs, with Swagger UI from this server, not a CDN
    add_error_handlers(api)
    return api


def is_heavy(params: SearchParams) -> bool:
    """Whether a search may cost more than a plain one: it reaches past LIGHT_DEPTH hits, or folds duplicates.

    Only a routing decision: values that do not parse count as heavy, and the handler refuses them."""
    options = params.options or {}
    offset = (options.get("offset") or "0").strip()
    whole = offset.isascii() and offset.isdigit() and len(offset) < 10  # "²" is a digit int() refuses
    deep = not whole or not params.top_k + int(offset) <= LIGHT_DEPTH
    return deep or (options.get("collapse_radius") or "").strip().lower() not in {"", "off"}


class Lanes:
    """Where a REST search runs. A light one at once, on the server's worker threads. A heavy one (is_heavy) in
    a lane of HEAVY_SLOTS: it waits for the lane on the event loop, holding no thread, so a burst of heavy
    requests never leaves light ones (or /health) without a thread; and it is dropped, unanswered, when its
    client has gone by the time its turn comes."""

    def __init__(self, heavy_slots: int = HEAVY_SLOTS) -> None:
        self.heavy = CapacityLimiter(heavy_slots)

    async def answer(self, request: Request, handler: Callable[..., list[dict]], source: Any,
                     params: SearchParams, light: CapacityLimiter | None = None) -> Response:
        """`answer(handler, source, params)` on a worker thread, in the lane its cost calls for (a light one under
        `light` when given, else on the server's worker threads)."""
        if not is_heavy(params):
            return await to_thread.run_sync(answer, handler, source, params, limiter=light)
        async with self.heavy:
            if await client_gone(request):
                return error(CLIENT_GONE, "the client went away before its search ran")
            return await to_thread.run_sync(answer, handler, source, params)


async def client_gone(request: Request) -> bool:
    """Whether the client has closed the connection (a GET's empty body may come first: look past it)."""
    return await request.is_disconnected() or await request.is_disconnected()


def health_record(startup: Startup) -> dict[str, Any]:
    """Ready, index name and revision, item count, model; no server paths."""
    bundle = startup.engine.bundle
    name, _, revision = (snapshot_label(bundle.root) or Path(bundle.root).name).partition("@")
    return {"ready": True, "index": name, "revision": revision or bundle.manifest.info.source_revision,
            "count": len(bundle.catalog), "model": str(bundle.manifest.info.encoder), "demo": startup.is_demo,
            "text_encoder": "onnx" if startup.engine.encoder.onnx_text is not None else "torch",
            "text_precision": text_precision_record(startup.engine.encoder)}


def add_error_handlers(api: FastAPI) -> None:
    """Every failure as {"error": one line}: the handlers' own messages, FastAPI's shape errors, HTTP errors."""

    @api.exception_handler(SearchError)
    async def search_error(request: Request, exc: SearchError) -> Response:
        status = next(code for kind, code in STATUS if isinstance(exc, kind))
        return error(status, without_server_paths(str(exc)))

    @api.exception_handler(RequestValidationError)
    async def shape_error(request: Request, exc: RequestValidationError) -> Response:
        return error(422, "; ".join(validation_message(problem) for problem in exc.errors()))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail))



def answer(handler: Callable[..., list[dict]], source: Any, params: SearchParams) -> Response:
    """The handler's hits as JSON; a SearchError goes on to its error handler, a bug becomes a logged 500."""
    try:
        return json_response(handler(source, params.top_k, params.threshold, options=params.options))
    except SearchError:
        raise
    except Exception as exc:  # a bug: say what kind, log the rest (as handlers.as_gr_error does for the UI)
        logger.exception("unexpected failure in %s", getattr(handler, "__name__", "a REST route"))
        return error(500, bug_message(exc))


def validation_message(problem: dict[str, Any]) -> str:
    """One of FastAPI's validation problems as a line naming the parameter: `k must be a number, got 'x'`."""
    name = str(problem.get("loc", ("", "?"))[-1])
    if problem.get("type") == "missing":
        return f"{name} is required"
    if problem.get("type", "").startswith("float"):
        return f"{name} must be a number, got {problem.get('input')!r}"
    return f"{name}: {problem.get('msg', 'invalid')}"


def json_response(content: Any, status: int = 200) -> Response:
    """`content` as JSON, serialised by orjson (as gradio's own routes do): no per-field validation pass."""
    return Response(orjson.dumps(content), status, media_type="application/json")


def error(status: int, message: str) -> Response:
    """The JSON body of every failure."""
    return json_response({"error": message}, status)


def mounted(handlers: Handlers, startup: Startup) -> Mount:
    """The REST app as a route of Gradio's FastAPI app (pass it in launch's app_kwargs `routes`)."""
    return Mount(PREFIX, app=rest_app(handlers, startup))
