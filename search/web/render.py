"""HTML for the results grid and the detail view (pure: no gradio). Every text is escaped, every link http(s).

The grid asks for pictures at the size shown (Unsplash's CDN resizes with `?w=`), lazily, with the item's
blur_hash (when the bundle has one) decoded in the browser as the placeholder. Each tile's button carries its detail
view in an attribute, so opening one, and moving between them with the arrow keys, costs no round trip. Not in a
<template>: gradio updates the results in place, node by node, and a template's content is no child node, so it would
keep the first search's details.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from search.types import Hit
from search.web.marks import mark_buttons, marks_bar
from search.web.page_text import (
    credit_html,
    detail_field,
    html_text,
    is_unsplash,
    safe_link,
    served_path,
    shown_score,
    thumbnail,
    with_utm,
)

TILE_WIDTHS = (240, 480)  # CSS width of a tile is ~160-240 px: 1x and 2x screens
DETAIL_WIDTH = 1080
BLURHASH_CHARS = 100  # a 9x9-component hash is 4 + 2 * 80 = 164; the data set's are ~30; longer is not a hash
BLURHASH_ALPHABET = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~")
# The detail view's extra lines, each shown when the hit carries that field (bundles with those metadata columns).
EXTRA_FIELDS = (("location", "Location"), ("date", "Date"), ("camera", "Camera"),
                ("words_in_picture", "Words in the picture"))


def picture_url(hit: Hit, width: int) -> str:
    """A URL for the picture at `width`: the CDN's resized rendition, or a bundle file served by gradio."""
    if "://" in hit.image:
        return thumbnail(hit, width)
    return served_path(hit.image)  # relative: works under a Space's root path too


def srcset(hit: Hit) -> str:
    """1x/2x renditions for a resizing CDN, else nothing (a local picture has one size)."""
    if "://" not in hit.image or thumbnail(hit, 1) == hit.image:
        return ""
    return ", ".join(f"{picture_url(hit, width)} {width}w" for width in TILE_WIDTHS)


def blur_hash(hit: Hit) -> str | None:
    """The hit's blur_hash when its bundle has one and it looks like one (untrusted text, bounded)."""
    value = getattr(hit, "blur_hash", None)
    if isinstance(value, str) and 6 <= len(value) <= BLURHASH_CHARS and set(value) <= BLURHASH_ALPHABET:
        return value
    return None


def alt_text(hit: Hit) -> str:
    """What the picture shows, for screen readers: its description, else its id."""
    return (hit.description or "").strip() or f"picture {hit.id}"


def credit_line(hit: Hit) -> str:
    """The short credit under a tile (linked as Unsplash asks); local files need none."""
    link = safe_link(hit.page_url)
    name = html_text(hit.photographer or "unknown")
    if link and is_unsplash(hit):
        return (f'Photo by <a href="{html_text(with_utm(link))}" target="_blank" rel="noopener">{name}</a> on '
                f'<a href="{html_text(with_utm("https://unsplash.com/"))}" target="_blank" rel="noopener">Unsplash</a>')
    if hit.photographer:
        return f"Photo by {name}"
    return ""


def tile_html(index: int, hit: Hit, detail: str = "", marks: Mapping[str, str] | None = None) -> str:
    """One result: a button with the picture (opens the `detail` view), its description and credit below; with
    `marks` (the search's like and unlike), its "good" and "not this" buttons."""
    alt = html_text(alt_text(hit))
    sources = srcset(hit)
    extra = f' srcset="{html_text(sources)}" sizes="(max-width: 600px) 45vw, 220px"' if sources else ""
    hash_attr = f' data-blurhash="{html_text(code)}"' if (code := blur_hash(hit)) else ""
    credit = credit_line(hit)
    return (f'<li class="tile"><button type="button" class="tile-open" data-index="{index}" '
            f'data-detail="{html_text(detail)}" aria-label="Details: {alt}">'
            f'<img src="{html_text(picture_url(hit, TILE_WIDTHS[0]))}"{extra} alt="{alt}" '
            f'loading="lazy" decoding="async" width="240" height="240"{hash_attr}></button>'
            f'{"" if marks is None else mark_buttons(hit, marks, alt)}<p class="tile-text" title="{alt}">{alt}</p>'
            f'<p class="tile-meta"><span class="score">{shown_score(hit.score, 2)}</span>'
            f'{" · " + credit if credit else ""}</p></li>')


def detail_html(hit: Hit, root: Path, extras: dict[str, str] | None = None) -> str:
    """The detail view of one hit: large picture, description, credit, known place/date/camera, score, links."""
    alt = html_text(alt_text(hit))
    rows = [("Score", shown_score(hit.score, 3)), ("Id", hit.id)]
    rows += [(label, (extras or {}).get(key) or detail_field(hit, key)) for key, label in EXTRA_FIELDS]
    facts = "".join(f"<dt>{html_text(label)}</dt><dd>{html_text(value)}</dd>" for label, value in rows if value)
    page = safe_link(hit.page_url)
    links = [f'<a href="{html_text(with_utm(page) if is_unsplash(hit) else page)}" target="_blank" rel="noopener">'
             f'{"Unsplash page" if is_unsplash(hit) else "Source page"}</a>'] if page else []
    original = safe_link(hit.image) or picture_url(hit, 0)
    links.append(f'<a href="{html_text(original)}" target="_blank" rel="noopener">Open original</a>')
    return (f'<img class="detail-img" src="{html_text(picture_url(hit, DETAIL_WIDTH))}" alt="{alt}">'
            f'<div class="detail-info"><h2 class="detail-title">{alt}</h2>'
            f'<p class="detail-credit">{credit_html(hit, root)}</p><dl>{facts}</dl>'
            f'<p class="detail-links">{" · ".join(links)}</p></div>')


DIALOG = ('<dialog class="detail" aria-label="Picture details"><div class="detail-body"></div>'
          '<div class="detail-actions">'
          '<button type="button" data-action="similar" class="primary" autofocus>More like this</button>'
          '<button type="button" data-action="mix">Search with this picture and a text</button>'
          '<button type="button" data-action="mark-like" class="mark" aria-pressed="false" hidden>Good (+)</button>'
          '<button type="button" data-action="mark-unlike" class="mark" aria-pressed="false" hidden>Not this (−)'
          '</button>'
          '<button type="button" data-action="prev" aria-label="Previous result">‹ Previous</button>'
          '<button type="button" data-action="next" aria-label="Next result">Next ›</button>'
          '<button type="button" data-action="close">Close</button></div>'
          '<p class="detail-keys">Keys: ← → previous and next<span class="marks-keys" hidden> · + good · − not this'
          '</span> · Esc close</p></dialog>')


def query_card(hit: Hit) -> str:
    """The picture a "more like this" search started from, kept in view above its results."""
    alt = html_text(alt_text(hit))
    return (f'<div class="query-card"><img src="{html_text(picture_url(hit, TILE_WIDTHS[0]))}" alt="{alt}" '
            f'width="64" height="64"><p>More like <strong>{alt}</strong> <small>({html_text(hit.id)})</small>'
            f'</p></div>')


MORE = '<button type="button" class="load-more" data-action="more">Load more</button>'


def results_html(hits: list[Hit], root: Path, link: str, query_hit: Hit | None = None,  # noqa: PLR0917
                 more: bool = False, marks: Mapping[str, str] | None = None) -> str:
    """The results area: the query picture (more like this), the grid, "Load more", each tile's detail, the dialog;
    with `marks` (a search's like and unlike), the marks bar and each tile's mark buttons."""
    card = query_card(query_hit) if query_hit is not None else ""
    card += marks_bar(marks) if marks is not None and hits else ""
    tiles = "".join(tile_html(index, hit, detail_html(hit, root), marks) for index, hit in enumerate(hits))
    grid = f'<ul class="grid" aria-label="Results">{tiles}</ul>' if hits else ""
    grid += MORE if more and hits else ""
    page = (f'<div class="results" data-link="{html_text(link)}" data-count="{len(hits)}">'
            f'{card}{grid}{DIALOG}</div>')
    return page.replace("{", "&#123;").replace("}", "&#125;")  # braces only come from data: credit lines too
