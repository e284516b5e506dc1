"""What happens to a relevance-ordered candidate list: cut-off, near-duplicate collapse, sort; pure functions.

Each step sees the whole list in relevance order (best first, ties by row) and keeps a prefix-stable result: the
hits kept from the first n candidates are the same whatever follows them. That is what makes pages stable: a
longer list for a later page repeats the earlier pages exactly before adding new hits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from search.bundle.attributes import Attributes
from search.errors import BadQueryError
from search.types import FeatureVector

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float64]

RELATIVE_MARGIN = 0.12
"""cutoff="relative": keep hits scoring at least the best score minus this (bench/dedup_cutoff.py)."""
GAP_SPAN = 50
"""cutoff="gap": the largest drop between neighbouring scores among the first this-many hits is the cut."""
GAP_MIN = 0.01
"""cutoff="gap": a largest drop smaller than this is noise, not a boundary: nothing is cut."""
SORT_KEYS = {"date": ("date",), "popularity": ("downloads", "views")}


def cut_count(scores: Scores, cutoff: str) -> int:
    """How many leading hits (scores best first, all above the threshold) the adaptive cut-off keeps."""
    if cutoff == "flat" or len(scores) < 2:
        return len(scores)
    if cutoff == "relative":
        return int(np.count_nonzero(scores >= scores[0] - RELATIVE_MARGIN))
    head = scores[:GAP_SPAN]
    drops = head[:-1] - head[1:]
    largest = int(np.argmax(drops))
    return largest + 1 if drops[largest] >= GAP_MIN else len(scores)


Folded = tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]
COLLAPSE_BLOCK = 256
"""Candidates compared with the kept hits in one matrix product: one BLAS call per block instead of one per row."""


def collapse(rows: Rows, embeddings: FeatureVector, radius: float) -> Folded:
    """Positions of the hits kept (best first) and, per kept hit, how many later hits were folded into it.

    A hit within cosine distance `radius` of an already kept hit is folded into the most similar such hit;
    greedy in rank order, so the outcome for the first n hits never depends on later ones. Blocks of candidates
    meet the kept hits in one matrix product each; only candidates no earlier block folds are walked one by one.
    """
    vectors = np.asarray(embeddings[rows], np.float32)
    kept = np.empty((len(rows), vectors.shape[1]), np.float32)  # vectors of the hits kept so far, in rank order
    positions: list[int] = []
    counts = np.zeros(len(rows), np.int64)
    floor = 1.0 - radius
    for start in range(0, len(vectors), COLLAPSE_BLOCK):
        block = vectors[start:start + COLLAPSE_BLOCK]
        earlier = len(positions)
        prior = block @ kept[:earlier].T  # against the hits kept before this block
        fresh = _kept_in_block(block, prior, floor)
        folded = np.setdiff1d(np.arange(len(block)), fresh)
        if len(folded):
            # The most similar hit kept before each folded one: earlier blocks first, so ties go to the better rank.
            inner = block[folded] @ block[fresh].T
            later = np.where(fresh[None, :] < folded[:, None], inner, -np.inf)
            np.add.at(counts, np.argmax(np.hstack([prior[folded], later]), axis=1), 1)
        kept[earlier:earlier + len(fresh)] = block[fresh]
        positions.extend((start + fresh).tolist())
    return np.asarray(positions, np.intp), counts[:len(positions)]


def _kept_in_block(block: FeatureVector, prior: npt.NDArray[np.float32], floor: float) -> npt.NDArray[np.intp]:
    """Offsets in one block of the hits it keeps.

    Only candidates that no hit kept before the block is near are walked one by one; each is kept unless a hit
    this block kept before it is within the radius."""
    open_ = np.flatnonzero(prior.max(axis=1, initial=-np.inf) < floor)
    among = block[open_] @ block[open_].T
    fresh: list[int] = []
    near_fresh = np.zeros(len(open_), bool)  # within the radius of a hit this block already kept
    for place, offset in enumerate(open_.tolist()):
        if near_fresh[place]:
            continue
        fresh.append(offset)
        near_fresh |= among[place] >= floor
    return np.asarray(fresh, np.intp)


def sort_order(rows: Rows, attributes: Attributes, sort: str) -> npt.NDArray[np.intp]:
    """Positions of `rows` (relevance order) in the requested order: newest or most downloaded first.

    Items without the value go last, in relevance order; equal values keep relevance order (a stable sort).
    """
    if sort == "relevance" or len(rows) == 0:
        return np.arange(len(rows))
    name = next((key for key in SORT_KEYS[sort] if key in attributes.numbers), None)
    if name is None:
        raise BadQueryError(f"this index has no {' or '.join(SORT_KEYS[sort])} data to sort by; sort by relevance "
                            "or rebuild the index with build_index.py to add it")
    values = attributes.numbers[name][rows]
    key = np.where(np.isnan(values), np.inf, -values)  # descending; missing after every real value
    return np.argsort(key, kind="stable")
