"""Text that reaches the page: the one escaping function for HTML and the one for Markdown, credits and captions,
picture URLs, the status line and the hits' JSON. Pure: nothing here imports gradio."""

from __future__ import annotations

import html
import math
import re
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from search.build.sources import IMAGE_SUFFIXES, resized_url
from search.types import Hit

APP_NAME = "semantic_image_search"  # the utm_source Unsplash asks API users to send back
FILE_ROUTE = "gradio_api/file="  # where gradio serves a bundle's own pictures (guarded by served_files.py)


def is_unsplash(hit: Hit) -> bool:
    """Whether a hit's page is on unsplash.com (its attribution then follows Unsplash's guidelines)."""
    return bool(hit.page_url) and urlsplit(hit.page_url).hostname in {"unsplash.com", "www.unsplash.com"}


def with_utm(url: str) -> str:
    """`url` with the referral parameters Unsplash asks for."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("utm_source", APP_NAME), ("utm_medium", "referral")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def thumbnail(hit: Hit, width: int = 480) -> str:
    """The picture to show: a resized rendition where the CDN resizes (the builder's own rule), else as stored."""
    return resized_url(hit.image, width)


def shown_score(score: float, decimals: int) -> str:
    """A score cut (not rounded) to `decimals`: set as the threshold, the shown number keeps that hit."""
    # Rounding would show 0.8399 as 0.84, and a threshold of 0.84 drops it; the cut shows 0.83.
    if not math.isfinite(score):  # a hit no query scored (a collection's opening sample): nothing to show
        return ""
    return str(Decimal(repr(score)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_FLOOR))


def safe_link(url: str | None) -> str | None:
    """`url` as parsed when it is http(s) with a host (never javascript: or data:), else None."""
    try:  # re-joined from its parts, so the browser reads the same URL that was checked
        parts = urlsplit(url or "")
        return urlunsplit(parts) if parts.scheme in {"http", "https"} and parts.hostname else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


# What can start Markdown or HTML inside a line: escapes, code, emphasis, strike-through, links and images, tags,
# entities, maths, table cells, and autolinks (`https:` or `www.`). Line-start syntax (#, -, 1.) never applies
# where these texts go: each is quoted inside a line of our own.
_MARKDOWN_SYNTAX = re.compile(r"[\\`*_~\[\]!<>&$|:.{}#]")


def html_text(text: object, *, attribute: bool = True) -> str:
    """`text` as itself in HTML: the one escaping function for every text from outside the code (queries, ids,
    links, bundle and data set values). In an attribute (the default) quotes and braces too: gradio's HTML
    templates read {{…}}; as element text (`attribute=False`, e.g. an error toast) only &, < and >."""
    if not attribute:
        return html.escape(str(text), quote=False)
    return html.escape(str(text), quote=True).replace("{", "&#123;").replace("}", "&#125;")


def markdown_text(text: object) -> str:
    """`text` as itself inside a line of Markdown: each mark of inline syntax as a numeric character reference,
    which Markdown shows as the character and never reads as syntax; line breaks become spaces."""
    return _MARKDOWN_SYNTAX.sub(lambda mark: f"&#{ord(mark.group())};", " ".join(str(text).split()))


def credit_html(hit: Hit, root: Path) -> str:
    """One linked attribution: "Photo by NAME on Unsplash" for Unsplash, else the source page or the local file."""
    name = html_text(hit.photographer or "an unknown photographer")
    label = html_text(hit.description or hit.id)
    page_url = safe_link(hit.page_url)
    if page_url and is_unsplash(hit):
        page, home = html_text(with_utm(page_url)), html_text(with_utm("https://unsplash.com/"))
        return (f'{label} — Photo by <a href="{page}" target="_blank" rel="noopener">{name}</a> on '
                f'<a href="{home}" target="_blank" rel="noopener">Unsplash</a>')
    if page_url:
        page = html_text(page_url)
        return f'{label} — Photo by {name}, <a href="{page}" target="_blank" rel="noopener">source page</a>'
    if "://" in hit.image:  # a remote picture without a usable page: credit the name, link nothing
        return f"{label} — Photo by {name}"
    return f"{label} — local file <code>{html_text(local_file(hit, root))}</code>"


def local_file(hit: Hit, root: Path) -> str:
    """The file a local picture came from: a folder build's id is its path in the person's folder (its picture a
    hashed thumbnail), else the picture's path inside the bundle. Never a server path."""
    if Path(hit.id).suffix.lower() in IMAGE_SUFFIXES:
        return hit.id
    path = Path(hit.image)
    return str(path.relative_to(root) if path.is_relative_to(root) else path.name)


def detail_field(hit: Hit, key: str) -> str | None:
    """A hit's field as the detail view shows it: a place with its rounded position, a date in its own zone."""
    if key == "location":
        return place_text(hit)
    value = getattr(hit, key, None)
    if key == "words_in_picture" and value:
        return " · ".join(value.splitlines())  # one fragment per line, shown on one line
    return date_text(value) if key == "date" and value else value


def date_text(value: str) -> str:
    """"2021-05-03T14:22:10Z" as "2021-05-03 14:22:10 UTC"; a date without a zone (a camera's EXIF) as is."""
    moment, utc = value.removesuffix("Z"), value.endswith("Z")
    return moment.replace("T", " ", 1) + (" UTC" if utc else "")


def place_text(hit: Hit) -> str | None:
    """Where a picture was taken: its place names and its GPS position rounded to 3 decimals (about 100 m)."""
    names = [name for name in (hit.location, hit.city, hit.country) if name]
    if hit.latitude is not None and hit.longitude is not None:
        names.append(f"{abs(hit.latitude):.3f}° {'N' if hit.latitude >= 0 else 'S'}, "
                     f"{abs(hit.longitude):.3f}° {'E' if hit.longitude >= 0 else 'W'}")
    return " · ".join(dict.fromkeys(names)) or None


def status_text(hits: list[Hit], seconds: float, threshold: float, best: float | None, what: str,  # noqa: PLR0917
                filtered: bool = False) -> str:
    """The line above the gallery: count and time, or a hint when nothing passed the threshold; `best` is the
    closest score among the items the filters keep (with `filtered` and None: they keep none, so no threshold
    would help)."""
    took, what = f"{seconds * 1000:.0f} ms", markdown_text(what)  # `what` quotes the query or an item id
    if hits:
        return f"{len(hits)} result{'s' if len(hits) != 1 else ''} for {what} in {took} (threshold {threshold:.2f})"
    if best is None and filtered:
        return f"No picture passes the filters for {what} — loosen or clear them in Options. Searched in {took}."
    closest = f" (the closest scores {shown_score(best, 3)})" if best is not None else ""
    return (f"Nothing above {threshold:.2f} for {what}{closest} — lower the threshold to see more. "
            f"Searched in {took}.")


def served_path(image: str) -> str:
    """The app's relative URL for a picture in a bundle's folder (a URL from the data set stays as it is)."""
    return image if "://" in image else FILE_ROUTE + quote(image)


def unknown_item_note(item_id: str) -> str:
    """The status line's opening when a link names an item this collection lacks (the default search follows)."""
    return f"No item {markdown_text(item_id)} in this collection; showing the default search instead. "


def refused_link_note(reason: str) -> str:
    """The status line's opening when a link's search is refused as a whole (the default search follows)."""
    return f"This link's search cannot run ({markdown_text(reason)}); showing the default search instead. "


def hits_json(hits: list[Hit]) -> list[dict]:
    """Hits as the API returns them (REST, the Gradio API and MCP alike): `image` is a URL a client can fetch,
    a bundle's own picture as a path from the app's root (`/gradio_api/file=…`), never a bare server path."""
    return [{**hit.to_dict(), "image": image if "://" in (image := served_path(hit.image)) else "/" + image}
            for hit in hits]
