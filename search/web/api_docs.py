"""The REST API's interactive docs (Swagger UI) served from this server: no CDN, so /api/docs works offline.

FastAPI's own docs page loads Swagger UI from cdn.jsdelivr.net; here the same page names files from the installed
swagger-ui-bundle-v2 package instead, served by one route that knows only those files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

DOCS = "/docs"
ASSETS = "/docs/assets"
SERVED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
"""The only Swagger UI files the page needs, with their types."""


def add_docs(api: FastAPI) -> None:
    """/docs (the page) and /docs/assets/NAME (its script, style and icon) on `api`, which has docs_url=None."""

    @api.get(DOCS, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # where the REST app is mounted (/api)
        return get_swagger_ui_html(
            openapi_url=f"{root}{api.openapi_url}", title=f"{api.title} - docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")

    @api.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in SERVED:
            return Response(status_code=404)
        return FileResponse(Path(str(swagger_ui_path)) / name, media_type=SERVED[name],
                            headers={"cache-control": "public, max-age=86400"})
