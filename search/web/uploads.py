"""How the app receives pictures and request bodies: size and time limits on every body (413/408, partial
uploads deleted), a size budget for all the bytes gradio's upload cache holds at once (507), an uploaded file's
header checked before gradio opens it, and where a picture fetched from a URL is saved. A URL given instead of a
file is fetched by search/web/url_fetches.py, not by gradio.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware

from search.errors import BadImageError
from search.model.images import check_image
from search.web.body_limits import STORED_PER_REQUEST, BodyLimits, BodyRefusedError, BodyRule
from search.web.disk_budget import DiskBudget
from search.web.public_errors import shown_error

MAX_FILE_SIZE = "10mb"  # gradio's per-file upload limit
MAX_FILE_BYTES = 10 * 1024 * 1024  # what gradio reads MAX_FILE_SIZE as
# Request bodies: an upload carries one picture (plus the multipart framing); any other body is a JSON call whose
# longest legitimate field is a 1000-character query (~12 KB even as escaped emoji). Both must arrive within
# BODY_DEADLINE_S, so a slow client cannot hold a connection and a temporary file for long.
BODY_DEADLINE_S = 30.0
UPLOAD_BODY = BodyRule(MAX_FILE_BYTES + 1024 * 1024, BODY_DEADLINE_S,
                       ("/upload", "/process_recording", "/component_server", "/api/search/image"))
JSON_BODY = BodyRule(1024 * 1024, BODY_DEADLINE_S)
# Gradio keeps each upload (and each fetched URL) for 30 minutes (layout.UPLOAD_LIFETIME_S), so without a size
# bound the disk it holds is bandwidth × 30 min (a loopback client stored 334 MiB/s). This bounds the bytes held in
# its cache folder (uploads, fetched URLs, example copies), whatever their age: room for 50 uploads at the
# 10 MiB limit, several times what visitors upload (a few pictures of a few MiB each); once it is full, uploads
# are refused (507) until deletions free space.
UPLOAD_SPACE_BYTES = 512 * 1024 * 1024
STORED_PATHS = ("/upload",)  # the routes that keep a body in gradio's cache (the other UPLOAD_BODY routes do not)


@functools.cache
def upload_space(folder: Path, max_bytes: int) -> DiskBudget:
    """The one budget for `folder`, shared by the upload route's middleware and URL downloads."""
    return DiskBudget(folder, max_bytes)


def gradio_cache_space() -> DiskBudget:
    """The budget of gradio's upload cache (GRADIO_TEMP_DIR, as gradio reads it when the app is made)."""
    return upload_space(Path(get_upload_folder()), UPLOAD_SPACE_BYTES)


def save_download(cache: Path, url: str, data: bytes) -> str:
    """The bytes in a new folder of gradio's cache, under a name taken from nothing the caller chose, within the
    cache's size budget (StorageFullError, before anything is written)."""
    space = upload_space(cache, UPLOAD_SPACE_BYTES)
    space.measure_if_stale()
    space.charge(len(data) + STORED_PER_REQUEST)  # StorageFullError before anything is written
    cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=hashlib.sha256(url.encode()).hexdigest()[:16], dir=cache))
    path = folder / "download"
    with path.open("xb") as handle:  # a new file in a new folder: nothing to follow or overwrite
        handle.write(data)
    return str(path)


def explain_unreadable_uploads(image: gr.Image) -> gr.Image:
    """Make `image` check an upload's header with our loader before gradio opens it, and explain any refusal
    in one line that names the file as the visitor knows it."""
    # An instance override, not a subclass: gradio writes a .pyi stub beside any module defining a component.
    preprocess = image.preprocess

    def checked(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        if path is None:
            return preprocess(payload)
        name = payload.orig_name or Path(path).name
        try:
            # Header only: the declared size is refused here, before gradio's PIL.Image.open (which raises
            # DecompressionBombError, shown as an empty message, from about 179 MP).
            check_image(path)
            return preprocess(payload)
        except BadImageError as bad:
            raise shown_error(str(bad).replace(str(path), name)) from bad
        except Exception as exc:  # whatever gradio's own reading raises on a hostile file
            raise shown_error(f"{name}: cannot be read as a picture; use a JPEG, PNG, GIF, WebP, BMP or TIFF "
                              "image") from exc

    image.preprocess = checked  # type: ignore[method-assign]
    return image


class _RefusedBodyError(BodyRefusedError, MultiPartException):
    """A refused body, raised as Starlette's multipart error so gradio's upload parser deletes its partial files."""


def body_limits() -> Middleware:
    """The request-body limits, as Starlette middleware for gradio's FastAPI app; call it once gradio's cache
    folder is settled (GRADIO_TEMP_DIR)."""
    stored = replace(UPLOAD_BODY, path_suffixes=STORED_PATHS, space=gradio_cache_space())
    return Middleware(BodyLimits, rules=(stored, UPLOAD_BODY), default=JSON_BODY, refused=_RefusedBodyError)
