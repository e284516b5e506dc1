"""like and unlike on every surface: REST, the Gradio API, MCP, the CLI and the page's link (one app server)."""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Iterator

import gradio as gr
import httpx
import pytest

from search.web.handlers import SearchUI, Session
from search.web.links import parse_query_string
from tests.test_mcp import call, hits_of

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


@pytest.fixture(scope="module")
def rest(app_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def red_triangles(demo_engine) -> list[str]:
    """Three ids of red triangles: the marks of a "a triangle" search meant for red ones."""
    return [hit.id for hit in demo_engine.search_text("a red triangle", top_k=3)]


def _red(hits: list[dict]) -> int:
    return sum("red triangle" in hit["description"] for hit in hits)


def test_rest_and_the_gradio_api_take_marks(rest: httpx.Client, client, red_triangles: list[str]) -> None:
    plain = rest.get("/api/search", params={"q": "a triangle", "top_k": 10}).json()
    liked = {"q": "a triangle", "top_k": 10, "like": ",".join(red_triangles), "unlike": plain[0]["id"]}
    marked = rest.get("/api/search", params=liked).json()
    assert _red(marked) >= 8 > _red(plain)
    assert client.predict("a triangle", 10, 0.0, like=liked["like"], unlike=liked["unlike"],
                          api_name="/search_text") == marked
    alone = rest.get("/api/search", params={"q": "", "top_k": 3, "like": red_triangles[0]}).json()
    assert _red(alone) == 3  # "more like these", no text
    refused = rest.get("/api/search", params={"q": "a triangle", "like": "shape-000,nope"})
    assert refused.status_code == 400 and "like names 'nope', which is not in this index" in refused.json()["error"]
    too_many = rest.get("/api/similar/shape-001", params={"unlike": ",".join(f"i{n}" for n in range(21))})
    assert too_many.status_code == 400 and "mark at most 20" in too_many.json()["error"]


def test_mcp_tools_take_marks(app_url: str, red_triangles: list[str]) -> None:
    tools, (marked,) = call(app_url, [("search_text", {"query": "a triangle", "top_k": 10, "threshold": 0.0,
                                                       "like": ",".join(red_triangles)})])
    assert "marked good" in tools["search_text"].inputSchema["properties"]["like"]["description"]
    assert _red(hits_of(marked)) >= 8


def test_cli_takes_marks(capsys: pytest.CaptureFixture, red_triangles: list[str]) -> None:
    from search.cli import main

    assert main(["a triangle", "--like", ",".join(red_triangles), "--json"]) == 0
    assert _red(json.loads(capsys.readouterr().out)) >= 8
    assert main(["--like", red_triangles[0], "--top-k", "3", "--json"]) == 0  # no text: more like these
    assert _red(json.loads(capsys.readouterr().out)) == 3
    assert main(["a triangle", "--unlike", "nope"]) == 1
    assert "unlike names 'nope'" in capsys.readouterr().err


def _shown_link(html: str) -> str:
    return html_lib.unescape(re.search(r'data-link="([^"]*)"', html).group(1))


def test_the_link_carries_the_marks_and_opens_them_marked(demo_startup, red_triangles: list[str]) -> None:
    ui, liked = SearchUI(demo_startup), ",".join(red_triangles)
    ids = ",".join(f"item-{n:02d}-with-a-long-name" for n in range(10))  # longer than a filter value may be
    assert parse_query_string(f"?q=x&like={ids}").options == {"like": ids}
    _, _, html, _, session = ui.ui_open(parse_query_string(f"?q=a+triangle&like={liked}"), Session())
    shown = session.view
    assert shown.request.options == {"like": liked}
    unmarked = ui.ui_open(parse_query_string("?q=a+triangle"), Session())[4].view.hits
    assert sum("red triangle" in hit.description for hit in shown.hits) > \
        sum("red triangle" in hit.description for hit in unmarked)  # near-duplicates folded, as the page does
    assert html.count('aria-pressed="true"') == sum(hit.id in red_triangles for hit in shown.hits) > 0
    assert f'data-like="{liked}"' in html
    assert parse_query_string(_shown_link(html)).options == {"like": liked}  # the link of what is shown
    moved = ui.ui_rerun(5, 0.1, 0.5, session, {})[2]  # a slider moved: the marks stay
    assert moved.view.request.options == {"like": liked} and len(moved.view.hits) == 5
    event = gr.EventData(None, {"like": [], "unlike": [shown.hits[0].id]})  # "Search again" with new marks
    html, _, again = ui.ui_marks(12, 0.1, 0.5, moved, event)
    assert again.view.request.options == {"unlike": shown.hits[0].id}
    assert parse_query_string(_shown_link(html)).options == {"unlike": shown.hits[0].id}
