"""Pure helpers behind app.py: start-up with a demo fallback, per-bundle defaults, captions, credits, status text.

Nothing here imports gradio, so it is testable on its own; app.py turns SearchErrors into gr.Error.
"""

from __future__ import annotations

import html
import logging
import math
import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from search.config import DEMO_INDEX_DIR, EngineConfig
from search.engine import Query, SearchEngine, Term, load_engine
from search.errors import BadQueryError, SearchError
from search.limits import pin_blas_threads
from search.onnx_text import enable_onnx_text_in_background
from search.types import Hit
from search.ui_hints import ui_hints

logger = logging.getLogger(__name__)

APP_NAME = "semantic_image_search"  # the utm_source Unsplash asks API users to send back
BUILD_COMMAND = ("python build_index.py --out unsplash-index --push-to YOUR_NAME/unsplash-index\n"
                 "SEARCH_INDEX=YOUR_NAME/unsplash-index@COMMIT_SHA python app.py")


@dataclass(frozen=True, slots=True)
class ModeDefaults:
    """Default thresholds per query mode and example text queries that suit one collection."""

    text_threshold: float
    image_threshold: float
    text_examples: tuple[str, ...]
    measured_text: bool = True  # False: the bundle has no descriptions, so no text threshold could be measured


@dataclass(frozen=True, slots=True)
class Startup:
    """The engine the app serves, and a notice to show when it is not the configured index."""

    engine: SearchEngine
    notice: str | None
    is_demo: bool


def start_engine(config: EngineConfig) -> Startup:
    """Load the configured index (or the demo) and warm the model up, then move text queries to ONNX Runtime in
    the background (and warm that up too)."""
    pin_blas_threads()
    startup = _load_or_demo(config)
    engine = startup.engine
    engine.warm_up()
    if config.onnx_text and engine.encoder.device.type == "cpu":  # on a GPU, PyTorch is the fast path
        enable_onnx_text_in_background(engine.encoder, config.cache_dir, config.text_threads, then=engine.warm_up)
    return startup


def _load_or_demo(config: EngineConfig) -> Startup:
    """Load the configured index; on any failure fall back to the bundled demo with a notice why."""
    if Path(config.index).expanduser().resolve() == DEMO_INDEX_DIR.resolve():
        engine = load_engine(config)
        return Startup(engine, demo_notice(None, None), True)
    try:
        return Startup(load_engine(config), None, False)
    except SearchError as exc:
        reason = str(exc)
        logger.warning("cannot load index %s: %s; serving the demo instead", config.index, reason)
    except Exception as exc:  # e.g. a network library's own error: the Space must still come up
        reason = f"{type(exc).__name__}: {exc}"
        logger.exception("unexpected failure loading index %s; serving the demo instead", config.index)
    engine = load_engine(EngineConfig(index=str(DEMO_INDEX_DIR), device=config.device))
    return Startup(engine, demo_notice(config.index, reason), True)


def demo_notice(source: str | None, reason: str | None) -> str:
    """Markdown: why the demo is shown, and how to build and publish a real index."""
    if source is None:
        head = "**No index configured**: this is the bundled demo (300 synthetic shapes, a tiny CLIP)."
    else:
        head = (f"**Could not load the index {markdown_text(source)}**, so this is the bundled demo (300 synthetic "
                f"shapes).\n\nReason: {markdown_text(reason)}")
    return (f"{head}\n\nTo search real photos, build and publish an index, then point the app at it "
            f"(`--index` or `SEARCH_INDEX`):\n\n```bash\n{BUILD_COMMAND}\n```")


def notice_summary(startup: Startup) -> str:
    """The one line the collapsed notice shows."""
    if startup.notice is None or not startup.is_demo:
        return ""
    if startup.notice.startswith("**No index configured**"):
        return "Demo collection: 300 synthetic shapes and a tiny CLIP. How to search real photos…"
    return "The configured index could not be loaded, so this is the demo. Why, and what to do…"


def mode_defaults(engine: SearchEngine) -> ModeDefaults:
    """Thresholds and examples recorded in (or measured on) this bundle: each model scores on its own scale."""
    hints = ui_hints(engine.bundle, engine.encoder)
    text = hints.text_threshold
    return ModeDefaults(0.0 if text is None else text,
                        0.0 if hints.image_threshold is None else hints.image_threshold,
                        hints.examples, text is not None)


def score_hint(defaults: ModeDefaults) -> str:
    """Markdown: what a score is, with this collection's own default thresholds (not another model's ranges)."""
    text = (f"{defaults.text_threshold:.2f} for text" if defaults.measured_text
            else "0 for text (the collection has no descriptions to measure text scores on)")
    return ("**Score** = cosine similarity of CLIP vectors (−1 to 1). Texts and pictures score on different "
            "scales, so each has its own threshold. For this collection the defaults are "
            f"{text} and {defaults.image_threshold:.2f} for pictures: halfway between how its items score against "
            "matching and against unrelated queries (measured when the index was built).")


def whole_number(value: float | int | None, name: str) -> int:
    """An integer-valued number from a UI or API field; anything else is a BadQueryError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise BadQueryError(f"{name} must be a whole number, got {value!r}")


def number(value: float | int | None, name: str) -> float:
    """A finite number from a UI or API field (range checks stay in the engine)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise BadQueryError(f"{name} must be a number, got {value!r}")


def negatives(text: str | None) -> tuple[str, ...]:
    """Comma-separated terms to steer away from."""
    return tuple(term.strip() for term in (text or "").split(",") if term.strip())


def combined_query(text: str | None, image: object, text_weight: float, exclude: str | None) -> Query:
    """A query from an optional text and image (mixed by `text_weight` in [0, 1]) minus excluded terms."""
    has_text = bool(text and text.strip())
    terms = []
    if image is not None and (text_weight < 1 or not has_text):
        terms.append(Term(image=image, weight=1 - text_weight if has_text else 1.0))
    if has_text and (text_weight > 0 or image is None):
        terms.append(Term(text=text, weight=text_weight if image is not None else 1.0))
    if not terms:
        raise BadQueryError("empty query: type a description or give an image")
    return Query(tuple(terms), negatives(exclude))


def is_unsplash(hit: Hit) -> bool:
    """Whether a hit's page is on unsplash.com (its attribution then follows Unsplash's guidelines)."""
    return bool(hit.page_url) and urlsplit(hit.page_url).hostname in {"unsplash.com", "www.unsplash.com"}


def with_utm(url: str) -> str:
    """`url` with the referral parameters Unsplash asks for."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("utm_source", APP_NAME), ("utm_medium", "referral")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def thumbnail(hit: Hit, width: int = 480) -> str:
    """The picture to show: a resized rendition for Unsplash's CDN, else the image as stored."""
    parts = urlsplit(hit.image)
    if parts.hostname != "images.unsplash.com":
        return hit.image
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "w"] + [("w", str(width))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def shown_score(score: float, decimals: int) -> str:
    """A score cut (not rounded) to `decimals`: set as the threshold, the shown number keeps that hit."""
    # Rounding would show 0.8399 as 0.84, and a threshold of 0.84 drops it; the cut shows 0.83.
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
    path = Path(hit.image)
    shown = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)  # never a server path
    return f"{label} — local file <code>{html_text(shown)}</code>"


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


def hits_json(hits: list[Hit]) -> list[dict]:
    """Hits as the API returns them."""
    return [hit.to_dict() for hit in hits]
