"""A query from the page's fields: an optional text and picture, mixed by weight, minus the excluded terms (top_k
and threshold are checked by the engine, search.query.engine.checked_top_k / checked_threshold, for every route)."""

from __future__ import annotations

from typing import Any

from search.errors import BadQueryError
from search.query.engine import MAX_NEGATIVES, MAX_QUERY_CHARS, Query, Term


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


def checked_exclude(text: str | None) -> str | None:
    """Refuse an Exclude field that would cost more than a few text encodes, before any of them runs."""
    if not isinstance(text, str):
        return text
    if len(text) > MAX_QUERY_CHARS:
        raise BadQueryError(f"the Exclude field has {len(text)} characters; keep it under {MAX_QUERY_CHARS}")
    if (count := len(negatives(text))) > MAX_NEGATIVES:
        raise BadQueryError(f"the Exclude field lists {count} terms; keep it to {MAX_NEGATIVES} or fewer, "
                            "separated by commas")
    return text


def checked_weight(value: Any) -> float:
    """A text weight for mixing with a picture: a number from 0 (the picture only) to 1 (the text only)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise BadQueryError(f"the text weight must be a number from 0 to 1, got {value!r}")
    return float(value)
