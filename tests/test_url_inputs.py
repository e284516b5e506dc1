"""A URL given instead of an uploaded file: fetched by ImageFetcher within the upload limits, never by gradio."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from search.build import netguard
from tests.loopback import LoopbackServer

STAND_IN = "127.0.0.2"  # a loopback address the test treats as public, as a CDN would be
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo" / "index" / "images" / "shape-007.jpg"


@pytest.fixture
def cdn(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A 'public' server holding the demo's shape-007 and a 12 MB body (over the 10 MB upload limit)."""
    real = netguard.is_public_address
    monkeypatch.setattr(netguard, "is_public_address", lambda address: address == STAND_IN or real(address))
    with LoopbackServer(host=STAND_IN, large_bytes=12_000_000) as server:
        server.add("shape.jpg", DEMO_IMAGE.read_bytes())
        server.add("big.jpg", b"")  # the fault serves large_bytes under this name
        yield server


def test_a_public_image_url_is_searched(client: Client, cdn: LoopbackServer) -> None:
    hits = client.predict(handle_file(cdn.url("shape.jpg")), 3, 0.0, api_name="/search_image")
    assert hits[0]["id"] == "shape-007" and hits[0]["score"] >= 0.99
    assert cdn.hits["/ok/shape.jpg"] == 1  # fetched by the server, once


def test_a_body_over_the_upload_limit_is_refused_while_streaming(client: Client, cdn: LoopbackServer) -> None:
    with pytest.raises(Exception, match="cannot fetch the image URL: body is over the limit of 10,485,760 bytes"):
        client.predict(handle_file(cdn.url("big.jpg", "too-large-unsized")), 3, 0.0, api_name="/search_image")


def test_a_loopback_url_is_refused_without_a_request(client: Client) -> None:
    with LoopbackServer() as internal:
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32)).save(buffer, "PNG")
        internal.add("x.png", buffer.getvalue(), "image/png")
        with pytest.raises(Exception, match="cannot fetch the image URL: refused: the host is not a public address"):
            client.predict(handle_file(internal.url("x.png")), 3, 0.0, api_name="/search_image")
        assert sum(internal.hits.values()) == 0


def test_uploads_are_deleted_after_half_an_hour(demo_startup) -> None:
    from app import UPLOAD_LIFETIME_S, build_app

    assert build_app(demo_startup).delete_cache == UPLOAD_LIFETIME_S == (300, 1800)
