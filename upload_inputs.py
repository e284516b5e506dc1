"""How the app receives pictures: an uploaded file's header checked before gradio opens it, and a URL given
instead of a file fetched through the build's own download boundary (search/fetch.py), not gradio's.

Gradio downloads a URL that a caller puts in a file input (`{"path": "https://…"}`, or `handle_file(url)` in
gradio_client) with no size or time limit, outside the request-body limits. Here the same ImageFetcher as the
builder does it: public http(s) addresses only, every redirect hop checked, the body capped while streaming at
the upload limit, one deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

import gradio as gr
from gradio_client.utils import is_http_url_like

from search.errors import FetchError
from search.fetch import FetchConfig, ImageFetcher

URL_FETCH_TIMEOUT_S = 15.0


def fetch_url_inputs_within_limits(component: gr.components.Component, max_bytes: int) -> gr.components.Component:
    """Make `component` fetch a URL input through ImageFetcher (public hosts, `max_bytes`, a deadline)."""
    fetcher = ImageFetcher(FetchConfig(width=None, timeout_s=URL_FETCH_TIMEOUT_S, retries=0, max_bytes=max_bytes))
    move = component.async_move_resource_to_block_cache

    async def bounded(url_or_file_path: str | Path | None) -> str | None:
        if not (isinstance(url_or_file_path, str) and is_http_url_like(url_or_file_path)):
            return await move(url_or_file_path)
        try:
            data = await asyncio.to_thread(fetcher.fetch_url, url_or_file_path)
        except FetchError as exc:
            raise gr.Error(f"cannot fetch the image URL: {exc}", print_exception=False) from exc
        path = _save_download(Path(component.GRADIO_CACHE), url_or_file_path, data)
        component.temp_files.add(path)
        return path

    # An instance override, as for preprocess in app.py: gradio calls it for every file input of this component.
    component.async_move_resource_to_block_cache = bounded  # type: ignore[method-assign]
    return component


def _save_download(cache: Path, url: str, data: bytes) -> str:
    """The bytes in a new folder of gradio's cache, under a name taken from nothing the caller chose."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=hashlib.sha256(url.encode()).hexdigest()[:16], dir=cache))
    path = folder / "download"
    with path.open("xb") as handle:  # a new file in a new folder: nothing to follow or overwrite
        handle.write(data)
    return str(path)
