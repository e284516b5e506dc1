"""Gradio app: search a photo collection by text or by example image, with a JSON API for gradio_client and MCP.

The entry point: the page lives in ui_layout.py (layout and wiring), ui_handlers.py (what events call),
ui_render.py (the results HTML) and ui_page.py (its CSS and JavaScript).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any

import gradio as gr

from search.config import EngineConfig
from ui_handlers import SearchUI
from ui_layout import CONCURRENCY_ID, UPLOAD_LIFETIME_S, build_app
from ui_page import CSS
from upload_inputs import MAX_FILE_SIZE, body_limits
from webapp import Startup, start_engine

__all__ = ["CONCURRENCY_ID", "UPLOAD_LIFETIME_S", "SearchUI", "build_app", "launch", "main", "parse_args"]

logger = logging.getLogger(__name__)

# Two slots on a 2-vCPU Space: a query is mostly transfer and bookkeeping around a few ms to ~100 ms of model
# time, so a second slot keeps a slow upload from holding up everyone else without oversubscribing the CPU.
# Measured with bench/load_test.py (demo bundle, 2 cores shared with the load generator, 20 s per run):
# 1 slot: 18.1 rps at 4 clients, 16.4 at 32; 2 slots: 20.7 and 20.4; 4 slots: 16.7 and 19.5. Two slots give the
# most throughput and hold it flat from 4 to 32 clients (p95 grows with the queue, not from contention).
CONCURRENCY = 2
# Waiting requests beyond this are refused at once ("queue is full") instead of waiting: at ~20 requests/s,
# 64 waiting is about 3 s of work, so a caller is told quickly rather than timing out.
MAX_QUEUE = 64


def launch(demo: gr.Blocks, startup: Startup, **kwargs: Any) -> tuple[Any, str, Any]:
    """Queue for a CPU Space and serve; extra kwargs go to Blocks.launch (port, prevent_thread_lock...)."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    # The bundle's folder, and for a Hub snapshot its repo's blobs/ (its images/* are symlinks into it).
    served = [str(folder) for folder in startup.engine.bundle.served_folders]
    return demo.launch(allowed_paths=served, max_file_size=MAX_FILE_SIZE,
                       theme=gr.themes.Soft(), css=CSS, app_kwargs={"middleware": [body_limits()]},
                       mcp_server=True, **kwargs)  # the API endpoints are MCP tools too, at /gradio_api/mcp/


def parse_args(argv: list[str] | None = None) -> EngineConfig:
    """`--index` and `--device` over SEARCH_INDEX / SEARCH_DEVICE."""
    config = EngineConfig.from_env()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=config.index, help="bundle folder or Hub dataset repo owner/name[@rev]")
    parser.add_argument("--device", default=config.device, help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    return replace(config, index=args.index, device=args.device)


def main(argv: list[str] | None = None) -> None:
    """Load the configured index (or the demo) once, then serve the app."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    startup = start_engine(parse_args(argv))
    launch(build_app(startup), startup)


if __name__ == "__main__":
    main()
