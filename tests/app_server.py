"""Serving the app in-process for tests: a free port, the server's lifetime, a health check."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from gradio_client import Client

from app import SearchUI, build_app, launch
from search.web.startup import Startup


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(startup: Startup) -> Iterator[str]:
    """The app for `startup` served on a free loopback port; yields its URL and closes it afterwards."""
    ui = SearchUI(startup)
    demo = build_app(startup, ui)
    _, url, _ = launch(demo, startup, ui, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True)
    try:
        yield url
    finally:
        demo.close()


def assert_serving(client: Client) -> None:
    """The server still answers a normal query correctly."""
    hits = client.predict("a red circle", 3, 0.0, api_name="/search_text")
    assert len(hits) == 3 and all("red circle" in hit["description"] for hit in hits)
