"""Relevance feedback ("more like these, less like those"): the query moved toward the stored vectors of the items
marked good and away from those marked not this (Rocchio), then made unit length again.

q' = q + LIKE_WEIGHT * mean(liked) - UNLIKE_WEIGHT * mean(unliked); with no text or picture, q is zero and the
liked items alone lead ("more like these"). The weights were chosen with bench/feedback.py on the demo bundle.
Marked items stay eligible as results: a liked item is the best evidence of what is wanted (dropping it would move
the grid under the visitor's eyes and hide the mark they may want to undo); an unliked one sinks by itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search.errors import BadQueryError
from search.types import FeatureVector

LIKE_WEIGHT = 2.0
"""Weight of the liked items' mean against the query's own unit vector. On the demo (bench/feedback.py), R@10 after
3 good marks rose with it: 0.39 at 0.25, 0.55 at 1, 0.58 at 2, 0.59 at 4 (from 0.21); past 2 the text barely
counts any more, and the gain is flat."""
UNLIKE_WEIGHT = 0.5
"""Weight of the unliked items' mean, subtracted: with 2 bad marks beside 3 good ones at LIKE_WEIGHT 2, 0.58 at 0,
0.59 at 0.5, 0.60 at 1 but one query worse than its text query (bench/feedback.py)."""
MAX_MARKS = 20
"""Items each of like and unlike may name: each is a row lookup and a stored vector, and a link must hold them."""
MAX_MARK_ID_CHARS = 200


def checked_marks(value: Any, name: str) -> tuple[str, ...]:
    """The one check of a like/unlike value: item ids, comma-separated text or a list of texts; at most MAX_MARKS,
    repeats dropped, order kept. Whether each id is in the index is the engine's to say (it has the catalog)."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(part, str) for part in value):
        parts = list(value)
    else:
        raise BadQueryError(f"{name} must be item ids separated by commas, got {str(value)[:40]!r}")
    ids = tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))
    if len(ids) > MAX_MARKS:
        raise BadQueryError(f"{name} names {len(ids)} items; mark at most {MAX_MARKS}")
    if too_long := next((item for item in ids if len(item) > MAX_MARK_ID_CHARS), None):
        raise BadQueryError(f"{name} names an id of {len(too_long)} characters; item ids are at most "
                            f"{MAX_MARK_ID_CHARS}")
    return ids


def checked_pair(like: tuple[str, ...], unlike: tuple[str, ...]) -> None:
    """Refuse an item marked both good and not this: which one was meant cannot be guessed."""
    if both := next((item for item in like if item in unlike), None):
        raise BadQueryError(f"item {both[:60]!r} is in both like and unlike; keep it in one of them")


def moved(base: FeatureVector | None, liked: FeatureVector, unliked: FeatureVector,
          weights: tuple[float, float] = (LIKE_WEIGHT, UNLIKE_WEIGHT)) -> FeatureVector:
    """The unit vector of `base` (a unit query vector, or None for none) moved toward the rows of `liked` and away
    from the rows of `unliked` (stored unit vectors); `weights`: the liked and unliked means' (bench/feedback.py
    tries others)."""
    total = np.zeros(liked.shape[1], np.float32) if base is None else np.asarray(base, np.float32).copy()
    if base is None and not len(liked):
        raise BadQueryError("nothing to search for: mark at least one result as good, or give a text or a picture")
    if len(liked):
        total += weights[0] * liked.mean(axis=0, dtype=np.float32)
    if len(unliked):
        total -= weights[1] * unliked.mean(axis=0, dtype=np.float32)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise BadQueryError("the marks cancel the query out; unmark some results")
    return total / norm
