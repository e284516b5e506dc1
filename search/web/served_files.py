"""What gradio's file route may serve from a bundle: pictures only, as pictures.

Gradio serves every file under `allowed_paths` inline with a type guessed from its name, so an SVG or HTML file in
a bundle's folder would run script on the app's origin. This ASGI middleware stands in front of that route: a file
inside a bundle folder is served only when its name ends in a picture type (search.bundle.store.PICTURE_TYPES),
with that type forced; anything else there is a 404. Every file response also carries `nosniff` (the browser never
guesses another type) and a sandboxing Content-Security-Policy (a document opened from it runs nothing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from starlette.middleware import Middleware

from search.bundle.store import picture_type
from search.web.body_limits import AsgiApp, Message, Receive, Scope, Send

FILE_ROUTE = re.compile(r"(?:^|/)file[=/]")
"""Gradio serves files at `/gradio_api/file=PATH` and, still, at `/gradio_api/file/PATH`: both are guarded."""
NOSNIFF = (b"x-content-type-options", b"nosniff")
SANDBOX = (b"content-security-policy", b"sandbox")  # no script, whatever the file turns out to be
_REPLACED = {b"content-type", b"content-disposition", NOSNIFF[0], SANDBOX[0]}


class PictureFiles:
    """ASGI middleware: bundle folders serve pictures only, with the picture's own type and `nosniff`."""

    def __init__(self, app: AsgiApp, *, folders: Iterable[str | Path]) -> None:
        self.app = app
        self.folders = tuple(os.path.realpath(folder) for folder in folders)

    def in_bundle(self, path: str) -> bool:
        """Whether `path`, symlinks followed, lies inside one of the bundle's served folders (a path the OS cannot
        even resolve, e.g. with a NUL byte, counts as inside: it is then never served)."""
        try:
            real = os.path.realpath(path)
        except ValueError:
            return True
        return any(real == folder or real.startswith(folder + os.sep) for folder in self.folders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        route = FILE_ROUTE.search(path)
        if route is None:
            await self.app(scope, receive, send)
            return
        asked = path[route.end():]
        forced = None
        if self.in_bundle(asked):
            forced = picture_type(asked)
            if forced is None:
                await _not_found(send)
                return
        await self.app(scope, receive, _as_picture(send, forced))


def _as_picture(send: Send, forced: str | None) -> Send:
    """`send` with nosniff and the sandbox on the response, and its type replaced by `forced` when given."""

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ())
                       if name.lower() not in _REPLACED
                       or (forced is None and name.lower() in (b"content-type", b"content-disposition"))]
            if forced is not None:
                headers += [(b"content-type", forced.encode()), (b"content-disposition", b"inline")]
            message = {**message, "headers": [*headers, NOSNIFF, SANDBOX]}
        await send(message)

    return guarded


async def _not_found(send: Send) -> None:
    body = b'{"detail": "not a picture of this collection", "error": "not a picture of this collection"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            NOSNIFF]})
    await send({"type": "http.response.body", "body": body})


def picture_files(folders: Iterable[str | Path]) -> Middleware:
    """The middleware for gradio's FastAPI app, guarding the bundle's served folders."""
    return Middleware(PictureFiles, folders=tuple(folders))
