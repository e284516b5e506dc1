"""An image URL given instead of a file: fetched by the search's own handler, never in gradio's preprocessing.

Gradio's preprocessing runs inside the event's concurrency slot, so a URL fetched there would hold a slot shared
with every page load, search and MCP call for as long as the remote host keeps the connection open. Here the file inputs
pass a URL through untouched (`url_inputs_for_the_handler`), and `ImageSearchEvents` makes the image-search events
fetch it on threads of their own before any search work starts. Those events run in a concurrency group of their
own with no gradio limit: the network wait is bounded by `UrlFetches` (in total and per client, a client over its
bound refused at once), the search after it by a limiter of the model's size, and the model work, as everywhere,
by search/model/limits.py's WorkLimiter.

The fetch itself is ImageFetcher's (search/build/fetch.py), as for the build: public http(s) addresses only, every
redirect hop checked, the body capped while streaming at the upload limit, one deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import typing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from anyio import CapacityLimiter, to_thread
from gradio_client.utils import is_http_url_like

from search.build.fetch import FetchConfig, ImageFetcher
from search.errors import FetchError, SearchError
from search.web.disk_budget import StorageFullError
from search.web.public_errors import shown_error
from search.web.uploads import MAX_FILE_BYTES, save_download

MAX_FETCHES = 16
"""Image URLs being fetched at once, all clients together: well under gradio's 40 running events, so fetches that
wait out their deadline leave most of them to everything else."""
MAX_FETCHES_PER_CLIENT = 2
"""Image URLs one client (remote address) may have in flight: a page runs one image search at a time."""
URL_FETCH_TIMEOUT_S = 15.0
IMAGE_CONCURRENCY_ID = "image"
"""The image searches' own gradio concurrency group (no gradio limit: the bounds above and the limiter hold)."""


class TooManyFetchesError(SearchError):
    """A client, or all clients together, already have as many image URLs being fetched as allowed."""


@dataclass(frozen=True, slots=True)
class FetchBounds:
    """How many image URLs are fetched at once (in total, per client), the deadline of each, the largest body."""

    total: int = MAX_FETCHES
    per_client: int = MAX_FETCHES_PER_CLIENT
    timeout_s: float = URL_FETCH_TIMEOUT_S
    max_bytes: int = MAX_FILE_BYTES


class FetchSlots:
    """Fetches in flight, counted in total and per client; one over either bound is refused at once, not queued."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._by_client: Counter[str] = Counter()
        self._lock = threading.Lock()  # taken on the event loop, given back on a fetch thread

    def take(self, client: str) -> None:
        """Count one more fetch for `client`; TooManyFetchesError when a bound is reached."""
        with self._lock:
            if self._by_client[client] >= self.per_client:
                raise TooManyFetchesError(f"you already have {self.per_client} image URLs being fetched; wait for "
                                          "them to finish, or upload the picture instead")
            if sum(self._by_client.values()) >= self.total:
                raise TooManyFetchesError(f"the server is already fetching {self.total} image URLs; try again in "
                                          "a few seconds, or upload the picture instead")
            self._by_client[client] += 1

    def give_back(self, client: str) -> None:
        """One fetch of `client` ended."""
        with self._lock:
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]

    def in_flight(self, client: str | None = None) -> int:
        """Fetches in flight, of `client` or of everyone."""
        with self._lock:
            return self._by_client[client] if client is not None else sum(self._by_client.values())


PRIVATE_HOSTS = "the app fetches pictures from public addresses only; upload the picture as a file instead"


class UrlFetches:
    """Image URLs fetched by ImageFetcher on threads of their own, within `bounds`."""

    def __init__(self, bounds: FetchBounds | None = None) -> None:
        self.bounds = bounds or FetchBounds()
        self.slots = FetchSlots(self.bounds.total, self.bounds.per_client)
        self.fetcher = ImageFetcher(FetchConfig(width=None, timeout_s=self.bounds.timeout_s, retries=0,
                                                max_bytes=self.bounds.max_bytes, private_hosts_hint=PRIVATE_HOSTS))
        # As many threads as fetches may be in flight: a fetch that was let in never waits for a thread.
        self._threads = ThreadPoolExecutor(max_workers=self.bounds.total, thread_name_prefix="url-fetch")

    async def fetch(self, url: str, client: str) -> bytes:
        """The bytes at `url` for `client`; TooManyFetchesError at once when a bound is reached, else FetchError."""
        self.slots.take(client)
        try:
            running = self._threads.submit(self.fetcher.fetch_url, url)
        except BaseException:
            self.slots.give_back(client)
            raise
        # Given back when the thread ends, not when the caller stops waiting: a caller that went away must not
        # let more threads wait on the network than the bounds allow.
        running.add_done_callback(lambda _: self.slots.give_back(client))
        try:
            return await asyncio.wrap_future(running)
        except FetchError as exc:
            raise FetchError(f"cannot fetch the image URL: {exc}") from exc


def client_address(request: gr.Request | None) -> str:
    """Who a fetch is counted against: the request's remote address."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def url_inputs_for_the_handler(component: gr.components.Component) -> gr.components.Component:
    """Make `component` pass an http(s) URL input through unfetched, as the URL itself, for the search's handler
    (ImageSearchEvents.fetching_first) to fetch."""
    move, preprocess = component.async_move_resource_to_block_cache, component.preprocess

    async def moved(url_or_file_path: str | Path | None) -> str | None:
        if isinstance(url_or_file_path, str) and is_http_url_like(url_or_file_path):
            return url_or_file_path  # gradio's own download would run in the event's slot, unbounded
        return await move(url_or_file_path)

    def processed(payload: Any) -> Any:
        path, url = getattr(payload, "path", None), getattr(payload, "url", None)
        if isinstance(path, str) and is_http_url_like(path):
            return path
        if isinstance(url, str) and url.startswith("data:"):
            # Gradio decodes a data: URL here, outside the model limiter; the page uploads files instead.
            raise shown_error("send the picture as a file upload or an http(s) URL, not a data: URL")
        if isinstance(path, str) and _inside(path, component.GRADIO_CACHE):
            # Gradio's MCP layer writes a base64 picture into the cache without telling the component: deleted with
            # the uploads, not kept until a restart outside the cache's size budget.
            component.temp_files.add(path)
        return preprocess(payload)

    # Instance overrides, not a subclass: gradio writes a .pyi stub beside any module defining a component.
    component.async_move_resource_to_block_cache = moved  # type: ignore[method-assign]
    component.preprocess = processed  # type: ignore[method-assign]
    return component


class ImageSearchEvents:
    """What the image-search events share: the URL fetches, and the limiter their search work runs under."""

    # Their own group, no gradio limit: a stalled fetch holds none of the shared group's slots.
    CONCURRENCY: typing.ClassVar[dict[str, Any]] = {"concurrency_id": IMAGE_CONCURRENCY_ID, "concurrency_limit": None}

    def __init__(self, fetches: UrlFetches, work: CapacityLimiter) -> None:
        self.fetches, self.work = fetches, work

    def fetching_first(self, handler: Callable[..., Any], component: gr.components.Component) -> Callable[..., Any]:
        """`handler`(image, *rest) as an event function that first fetches an image URL into `component`'s cache,
        then runs `handler` on a thread of `work`'s."""

        async def run(request: gr.Request, image: str | None, *rest: Any) -> Any:
            if isinstance(image, str) and is_http_url_like(image):
                image = await self._local_copy(image, request, component)
            return await to_thread.run_sync(handler, image, *rest, limiter=self.work)

        # gradio passes the gr.Request to the parameter annotated so, and names the API's parameters after the rest.
        signature = inspect.signature(handler)
        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
        run.__signature__ = signature.replace(parameters=[request, *signature.parameters.values()])  # type: ignore[attr-defined]
        run.__annotations__ = {"request": gr.Request, **typing.get_type_hints(handler)}
        run.__name__ = getattr(handler, "__name__", "handler")
        run.__doc__ = handler.__doc__
        return run

    async def _local_copy(self, url: str, request: gr.Request | None, component: gr.components.Component) -> str:
        try:
            data = await self.fetches.fetch(url, client_address(request))
            path = await asyncio.to_thread(save_download, Path(component.GRADIO_CACHE), url, data)
        except (SearchError, StorageFullError) as exc:
            raise shown_error(str(exc)) from exc
        component.temp_files.add(path)  # deleted with the uploads (gradio's delete_cache)
        return path


def _inside(path: str, folder: str | Path) -> bool:
    """Whether `path`, symlinks followed, lies inside `folder`."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))
    except (OSError, ValueError):
        return False
