"""A query from the page's fields: an optional text and picture, mixed by weight, minus the excluded terms (top_k
and threshold are checked by the engine, search.query.engine.checked_top_k / checked_threshold, for every route)."""

from __future__ import annotations

from search.errors import BadQueryError
from search.query.engine import Query, Term


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
