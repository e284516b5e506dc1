"""The results HTML and deep links: escaped text, http(s)-only links, CDN sizes, blur_hash, link round trips."""

from __future__ import annotations

import html
import re
from pathlib import Path

import gradio as gr
import pytest

from search.errors import UnknownItemError
from search.types import Hit
from search.web.handlers import as_gr_error
from search.web.links import LinkState, parse_link
from search.web.page_text import markdown_text, status_text
from search.web.render import blur_hash, detail_html, picture_url, results_html, srcset, tile_html

UNSPLASH = Hit("abc", 0.3127, "https://images.unsplash.com/photo-1?ixid=x&w=1080", "https://unsplash.com/photos/abc",
               "a foggy forest", "Jane Doe")
HOSTILE = Hit('x"><script>alert(1)</script>', 0.5, "https://img.example/a.jpg?x=\"onerror=alert(1)",
              "javascript:alert(1)", '<img src=x onerror=alert(1)> {{constructor}}', "<b>Eve</b>")


def test_tiles_ask_the_cdn_for_the_shown_size_lazily_and_the_detail_for_a_large_one() -> None:
    tile = tile_html(0, UNSPLASH)
    assert 'src="https://images.unsplash.com/photo-1?ixid=x&amp;w=240"' in tile and 'loading="lazy"' in tile
    assert srcset(UNSPLASH) == ("https://images.unsplash.com/photo-1?ixid=x&w=240 240w, "
                                "https://images.unsplash.com/photo-1?ixid=x&w=480 480w")
    assert 'alt="a foggy forest"' in tile and "Photo by <a href=\"https://unsplash.com/photos/abc?utm_source=" in tile
    detail = detail_html(UNSPLASH, Path("/bundle"))
    assert "w=1080" in detail and ">Unsplash page</a>" in detail and ">Open original</a>" in detail
    assert "<dd>0.312</dd>" in detail  # the score, cut to 3 decimals


def test_local_pictures_are_served_by_gradio_by_relative_url_without_srcset() -> None:
    local = Hit("l", 0.9, "/data/bundle/images/a b.jpg", None, "", None)
    assert picture_url(local, 240) == "gradio_api/file=/data/bundle/images/a%20b.jpg" and srcset(local) == ""
    assert 'alt="picture l"' in tile_html(0, local)  # no description: still alt text
    assert "local file <code>images/a b.jpg</code>" in detail_html(local, Path("/data/bundle"))


def test_hostile_metadata_is_escaped_and_never_linked() -> None:
    html = results_html([HOSTILE], Path("/b"), "?q=x")
    assert "<script" not in html and "<img src=x" not in html and "<b>Eve" not in html
    assert "javascript:" not in html and "{{" not in html  # gradio's template engine would read {{…}}
    assert '"onerror' not in html and "&quot;onerror" in html  # the quote in the image URL stays in its attribute


@pytest.mark.parametrize(("value", "kept"), [("LEHV6nWB2yk8pyo0adR*.7kCMdnj", True), ("short", False),
                                             ("L" + "0" * 200, False), ('LEHV6nWB2yk8"><x', False), (None, False)])
def test_blur_hash_is_passed_on_only_when_it_looks_like_one(value: object, kept: bool) -> None:
    class WithHash:
        blur_hash = value

    assert blur_hash(WithHash()) == (value if kept else None)  # type: ignore[arg-type]


def test_hits_without_blur_hash_render_without_placeholders() -> None:
    assert "data-blurhash" not in tile_html(0, UNSPLASH)


def test_results_carry_their_link_the_query_picture_and_one_detail_per_tile() -> None:
    html = results_html([UNSPLASH, UNSPLASH], Path("/b"), "?id=abc", query_hit=UNSPLASH)
    assert 'data-link="?id=abc"' in html and '<div class="query-card">' in html
    assert html.count('data-detail="&lt;img class=&quot;detail-img') == 2
    assert '<dialog class="detail"' in html and results_html([], Path("/b"), "").count("<li") == 0


def test_deep_links_round_trip_and_ignore_what_they_do_not_know() -> None:
    for state in (LinkState(text="a red circle & more"), LinkState(item_id="shape-007"), LinkState()):
        query = state.query_string()
        params = dict(pair.split("=", 1) for pair in query[1:].split("&")) if query else {}
        from urllib.parse import unquote_plus

        assert parse_link({key: unquote_plus(value) for key, value in params.items()}) == state
    assert parse_link({"q": "cats", "__theme": "dark", "zzz": "1"}) == LinkState(text="cats")
    # A long query is not cut here: the engine refuses it, with the message every route gives.
    assert parse_link({"q": "a\nb\tc"}).text == "a b c" and parse_link({"q": "x" * 5000}).text == "x" * 5000
    assert parse_link({"q": "\x00bad"}).text == "" and parse_link({}).empty


def test_the_detail_view_shows_place_date_and_camera_when_known() -> None:
    plain = detail_html(UNSPLASH, Path("/b"))
    assert "Location" not in plain and "Camera" not in plain
    known = detail_html(UNSPLASH, Path("/b"), {"location": "Oslo <Norway>", "date": "2021-05-01", "camera": "X100"})
    assert "<dt>Location</dt><dd>Oslo &lt;Norway&gt;</dd>" in known and "<dd>X100</dd>" in known


def test_markdown_text_is_shown_as_itself() -> None:
    hostile = "<form action=//x>**b** [l](javascript:alert(1)) `c` $$x$$ \\ &amp; # h\n- item www.example.com"
    escaped = markdown_text(hostile)
    assert not set(re.sub(r"&#\d+;", "", escaped)) & set("<>*[]`$\\_!|~&:.") and "\n" not in escaped
    assert html.unescape(escaped) == " ".join(hostile.split())  # what the page shows: the text, on one line


def test_the_status_line_quotes_a_query_as_text() -> None:
    status = status_text([], 0.01, 0.2, None, "“<img src=x onerror=alert(1)> **now**”")
    assert "<img" not in status and "**" not in status
    assert "“<img src=x onerror=alert(1)> **now**”" in html.unescape(status)


def test_a_failure_reaches_the_toast_escaped_and_the_api_readable() -> None:
    @as_gr_error
    def handler(item: str) -> None:
        raise UnknownItemError(f"no item with id {item!r} in this index")

    with pytest.raises(gr.Error) as failure:
        handler("<img src=x onerror=alert(1)>")
    assert failure.value.message == "no item with id '&lt;img src=x onerror=alert(1)&gt;' in this index"
