"""Numbers and query parts from a UI or API field, checked: one place for each request value the page sends."""

from __future__ import annotations

import math

from search.errors import BadQueryError
from search.query.engine import Query, Term


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
