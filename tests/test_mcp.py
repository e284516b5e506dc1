"""The app's MCP server (gradio's `mcp_server=True`), driven by the `mcp` Python client over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from search.build import netguard
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

STAND_IN = "127.0.0.2"  # a loopback address this test treats as public, as a CDN would be
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo" / "index" / "images" / "shape-007.jpg"
TOOLS = {"search_text", "search_image", "similar"}


def call(app_url: str, steps: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[Any]]:
    """List the tools, then call each (name, arguments) in one MCP session; returns (tools by name, results)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> tuple[dict[str, Any], list[Any]]:
        async with streamable_http_client(f"{app_url.rstrip('/')}/gradio_api/mcp/") as (read, write, _), \
                ClientSession(read, write) as client:
            await client.initialize()
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            return tools, [await client.call_tool(name, arguments) for name, arguments in steps]

    return asyncio.run(asyncio.wait_for(session(), 60))


def hits_of(result: Any) -> list[dict[str, Any]]:
    """The hits a tool answered: JSON text, and the same hits as structured content."""
    assert not result.isError, result.content
    hits = json.loads(result.content[0].text)
    assert result.structuredContent == {"hits": hits}
    return hits


@pytest.fixture
def cdn(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A 'public' image server holding the demo's shape-007."""
    real = netguard.is_public_address
    monkeypatch.setattr(netguard, "is_public_address", lambda address: address == STAND_IN or real(address))
    with LoopbackServer(host=STAND_IN) as server:
        server.add("shape.jpg", DEMO_IMAGE.read_bytes())
        yield server


def test_mcp_lists_three_documented_typed_tools_and_each_finds_hits(app_url: str, cdn: LoopbackServer) -> None:
    tools, (text, image, similar, blue) = call(app_url, [
        ("search_text", {"query": "a red circle", "top_k": 3, "threshold": 0.0}),
        ("search_image", {"image": cdn.url("shape.jpg"), "top_k": 3, "threshold": 0.0}),
        ("similar", {"id": "shape-007", "top_k": 3, "threshold": 0.0}),
        ("search_text", {"query": "a circle", "top_k": 4, "threshold": 0.0, "colour": "blue", "offset": 2}),
    ])
    assert set(tools) == {*TOOLS, "understood"}  # the page's own events are private: not tools
    for tool in (tools[name] for name in TOOLS):
        assert tool.description and tool.description[0].isupper()
        properties = tool.inputSchema["properties"]
        assert properties["top_k"]["type"] == "number" and "0 to 1000" in properties["top_k"]["description"]
        assert "-1 to 1" in properties["threshold"]["description"]
        # The search options are optional, documented parameters; none of them is required.
        assert "dominant colour" in properties["colour"]["description"] and "sort" in properties
        assert set(tool.inputSchema.get("required", [])) <= {"query", "image", "id"}
    assert tools["search_text"].inputSchema["properties"]["query"]["type"] == "string"
    assert "public http(s) URL" in tools["search_image"].inputSchema["properties"]["image"]["description"]
    assert all("red circle" in hit["description"] for hit in hits_of(text)) and len(hits_of(text)) == 3
    assert hits_of(image)[0]["id"] == "shape-007" and hits_of(image)[0]["score"] >= 0.99
    assert cdn.hits["/ok/shape.jpg"] == 1  # fetched once, by the app's own fetcher
    assert len(hits_of(similar)) == 3 and "shape-007" not in {hit["id"] for hit in hits_of(similar)}
    assert len(hits_of(blue)) == 4 and all(hit["colour"] == "blue" for hit in hits_of(blue))
    assert "None" not in text.content[0].text and "'" not in text.content[0].text  # JSON, not a Python repr
    picture = httpx.get(app_url.rstrip("/") + hits_of(similar)[0]["image"], timeout=10)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"


def test_mcp_image_urls_of_private_hosts_and_bad_ids_are_refused(app_url: str) -> None:
    with LoopbackServer() as internal:
        internal.add("x.jpg", DEMO_IMAGE.read_bytes())
        _, (private, unknown) = call(app_url, [
            ("search_image", {"image": internal.url("x.jpg"), "top_k": 3, "threshold": 0.0}),
            ("similar", {"id": "no-such-item", "top_k": 3, "threshold": 0.0}),
        ])
        assert sum(internal.hits.values()) == 0  # never even asked
    assert private.isError and "not a public address" in private.content[0].text
    # What applies to an app's caller: the build's --allow-private-hosts is no flag of app.py.
    assert "upload the picture" in private.content[0].text and "--allow" not in private.content[0].text
    assert unknown.isError and "no item with id 'no-such-item'" in unknown.content[0].text
