"""How the app receives pictures and request bodies: size and time limits on every body (413/408, partial
uploads deleted), an uploaded file's header checked before gradio opens it, error messages without server
paths. A URL given instead of a file is fetched by url_fetches.py, not here and not by gradio.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware

from search.errors import BadImageError
from search.images import check_image
from search.limits import BodyLimits, BodyRefusedError, BodyRule

MAX_FILE_SIZE = "10mb"  # gradio's per-file upload limit
MAX_FILE_BYTES = 10 * 1024 * 1024  # what gradio reads MAX_FILE_SIZE as
# Request bodies: an upload carries one picture (plus the multipart framing); any other body is a JSON call whose
# longest legitimate field is a 1000-character query (~12 KB even as escaped emoji). Both must arrive within
# BODY_DEADLINE_S, so a slow client cannot hold a connection and a temporary file for long.
BODY_DEADLINE_S = 30.0
UPLOAD_BODY = BodyRule(MAX_FILE_BYTES + 1024 * 1024, BODY_DEADLINE_S,
                       ("/upload", "/process_recording", "/component_server", "/api/search/image"))
JSON_BODY = BodyRule(1024 * 1024, BODY_DEADLINE_S)


# An absolute path's folders: a slash not inside a word, a number or a URL, then names each ending in a slash.
_FOLDERS = re.compile(r"(?<![\w.:/~-])/(?:[^\s/:]+/)+")


def without_server_paths(message: str, paths: tuple[Any, ...] = ()) -> str:
    """`message` naming files as the caller knows them: each of `paths` by its name, any other absolute
    path without its folders (an upload's temporary path says where the server keeps its files)."""
    for path in paths:
        if isinstance(path, str) and os.path.isabs(path):
            message = message.replace(path, Path(path).name)
    return _FOLDERS.sub("", message)


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
            raise gr.Error(without_server_paths(str(bad).replace(str(path), name)), print_exception=False) from bad
        except Exception as exc:  # whatever gradio's own reading raises on a hostile file
            raise gr.Error(f"{name}: cannot be read as a picture; use a JPEG, PNG, GIF, WebP, BMP or TIFF image",
                           print_exception=False) from exc

    image.preprocess = checked  # type: ignore[method-assign]
    return image


class _RefusedBodyError(BodyRefusedError, MultiPartException):
    """A refused body, raised as Starlette's multipart error so gradio's upload parser deletes its partial files."""


def body_limits() -> Middleware:
    """The request-body limits, as Starlette middleware for gradio's FastAPI app."""
    return Middleware(BodyLimits, rules=(UPLOAD_BODY,), default=JSON_BODY, refused=_RefusedBodyError)
