"""Gradio app: search a photo collection by text or by example image, with a JSON API for gradio_client and MCP.

The entry point: the page lives in search/web/layout.py (layout and wiring), search/web/handlers.py (what events call),
search/web/render.py (the results HTML) and search/web/page_assets.py (its CSS and JavaScript).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from typing import Any

import gradio as gr

from search.config import EngineConfig
from search.web import rest
from search.web.gradio_api import mcp_json_results
from search.web.handlers import SearchUI
from search.web.layout import CONCURRENCY_ID, UPLOAD_LIFETIME_S, build_app
from search.web.page_assets import CSS
from search.web.process_settings import cap_malloc_arenas
from search.web.served_files import picture_files
from search.web.startup import Startup, start_engine
from search.web.uploads import MAX_FILE_SIZE, body_limits

__all__ = ["CONCURRENCY_ID", "UPLOAD_LIFETIME_S", "SearchUI", "build_app", "launch", "main", "parse_args"]

logger = logging.getLogger(__name__)

# Gradio events at once (measured per queue size: docs/performance.md, Tuning). More would answer a little faster,
# but an Image upload is opened by gradio itself, outside the model limiter, so the queue also bounds that memory
# (tests/test_uploads_hostile.py). Image searches run in a group of their own: they may wait on a URL's host, so
# their fetches are bounded in total and per client instead (search/web/url_fetches.py).
CONCURRENCY = 2
# Waiting requests beyond this are refused at once ("queue is full") instead of waiting: at the measured rates,
# 64 waiting is one or two seconds of work, so a caller is told quickly, not timed out.
MAX_QUEUE = 64
DEFAULT_PORT = 7860  # gradio's, when GRADIO_SERVER_PORT is not set


def launch(demo: gr.Blocks, startup: Startup, ui: SearchUI, **kwargs: Any) -> tuple[Any, str, Any]:
    """Queue for a CPU Space and serve; extra kwargs go to Blocks.launch (port, prevent_thread_lock...).

    `ui` is the page's SearchUI (`build_app`'s), which the REST API shares."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    # The bundle's folder, and for a Hub snapshot its repo's blobs/ (its images/* are symlinks into it).
    served = [str(folder) for folder in startup.engine.bundle.served_folders]
    # The REST API (search/web/rest.py) is a route of gradio's own app: same port, same body limits, same handlers.
    app_kwargs = {"middleware": [body_limits(), picture_files(served)], "routes": [rest.mounted(ui, startup)],
                  "lifespan": mcp_json_results(demo)}  # MCP tools answer JSON, structured too
    return demo.launch(allowed_paths=served, max_file_size=MAX_FILE_SIZE,
                       theme=gr.themes.Soft(), css=CSS, app_kwargs=app_kwargs,
                       mcp_server=True, **kwargs)  # the API endpoints are MCP tools too, at /gradio_api/mcp/


def parse_args(argv: list[str] | None = None) -> EngineConfig:
    """`--index` and `--device` over SEARCH_INDEX / SEARCH_DEVICE."""
    config = EngineConfig.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=config.index, help="bundle folder or Hub dataset repo owner/name[@rev]")
    parser.add_argument("--device", default=config.device, help="cpu, cuda or auto")
    parser.add_argument("--qdrant", default=config.qdrant_url, metavar="URL",
                        help="Qdrant server URL, or :memory: (filled from the bundle)")
    parser.add_argument("--collection", default=config.qdrant_collection, metavar="NAME", help="Qdrant collection")
    args = parser.parse_args(argv)
    return replace(config, index=args.index, device=args.device, qdrant_url=args.qdrant,
                   qdrant_collection=args.collection)


def main(argv: list[str] | None = None) -> None:
    """Load the configured index (or the demo) once, then serve the app."""
    cap_malloc_arenas()  # before the server's threads: each would otherwise keep freed memory in an arena of its own
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    startup = start_engine(parse_args(argv))
    ui = SearchUI(startup)
    demo = build_app(startup, ui)
    launch(demo, startup, ui, prevent_thread_lock=True)
    note_port(demo.server_port)
    demo.block_thread()


def note_port(port: int | None) -> None:
    """Say so when the app does not listen on the port asked for: gradio moves to the next free one silently."""
    wanted = int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    if port is not None and port != wanted:
        logger.warning("port %d is taken, so the app listens on port %d instead; set GRADIO_SERVER_PORT to choose "
                       "the port", wanted, port)


if __name__ == "__main__":
    main()
