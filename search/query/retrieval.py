"""Ranked rows for a query vector under SearchOptions: filtered candidates, cut-off, collapse, sort and pages.

How a filtered query finds its candidates depends on how many items the filter keeps (bench/filters.py):
- exact search over just those rows, when they are at most EXACT_MAX_ROWS and cheaper than the post-filter's
  graph search by the measured cost ratio EXACT_ROWS_PER_BEAM; always complete;
- else post-filter (share kept at least POSTFILTER_FLOOR): the unfiltered graph search asked for k / share *
  OVERFETCH neighbours, the disallowed ones dropped afterwards;
- else hnswlib's filter callback, which walks the graph skipping disallowed items (it calls back into Python
  for every node it visits, so it was the slowest path measured; it is the last resort).
A graph path that comes back short falls back to the next, ending with the exact search, so a filter always
yields k hits when k items pass it.

An index with `native_filters` (Qdrant: filterable HNSW over payload indexes, search/query/qdrant_payload.py) gets
every filter as it is; its mask is still computed here, to refuse a column the bundle lacks, to keep keyword
matches inside the filter and to fall back to the exact search if the backend ever answers short.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from search.bundle.hnsw_index import Allowed, SearchIndex, to_scores
from search.bundle.keywords import KeywordIndex
from search.bundle.metadata import ItemCatalog
from search.query.fusion import CANDIDATES, HybridRanker
from search.query.options import Filters, SearchOptions
from search.query.ranking import GAP_SPAN, Rows, Scores, collapse, cut_count, sort_order
from search.types import FeatureVector

EXACT_MAX_ROWS = 20_000
"""Filters keeping up to this many items are searched exactly (~2-4 ms per 10k rows; bench/filters.py)."""
EXACT_ROWS_PER_BEAM = 20
"""Exact search over r rows costs about what a graph search with a beam of r / 20 does (bench/filters.py at 25k:
~0.11 us per row against ~2.4 us per beam slot): the cheaper of the two is taken."""
POSTFILTER_FLOOR = 0.02
"""Beyond the exact path's reach, post-filtering beat hnswlib's filter callback down to this share kept."""
OVERFETCH = 2.0  # neighbours asked for per wanted hit, over 1/fraction: room for a filter unevenly spread
FIRST_WINDOW = 16
SORT_POOL = 100
"""Sorting by date or popularity reorders the best this-many candidates above the threshold."""
MAX_COLLAPSED_DEPTH = 1000
"""Pages with near-duplicates folded reach this many hits deep (offset + top_k): folding compares each candidate
with every hit kept, so its cost grows with depth times window (search.query.engine checks it)."""
COLLAPSE_MAX_WINDOW = 8 * MAX_COLLAPSED_DEPTH
"""Folding looks at most this many candidates deep: a radius that folds nearly everything ends a page short."""


@dataclass(frozen=True, slots=True)
class Ranked:
    """Rows of one page, with scores and folded near-duplicate counts."""

    rows: Rows
    scores: Scores
    duplicates: npt.NDArray[np.int64]


def first_window(need: int, minimum: int = 0) -> int:
    """Candidates fetched for `need` hits: FIRST_WINDOW, doubled until enough.

    Why fixed steps: a page asks for the same number of candidates as the pages before it in its step, so it
    sees the same list; and hnswlib searches with a beam of max(ef_search, k), so every step up to ef_search
    gets a prefix of one and the same list. Either way the same query gives the same order across pages.
    """
    window = FIRST_WINDOW
    while window < max(need, minimum):
        window *= 2
    return window


class Retriever:
    """Searches one bundle's index and embeddings with options; no model, so benchmarks use it directly."""

    def __init__(self, index: SearchIndex, embeddings: FeatureVector, catalog: ItemCatalog,
                 filter_cache_size: int = 8, keywords: KeywordIndex | None = None) -> None:
        self.index = index
        self.embeddings = embeddings
        self.catalog = catalog
        self.fusion = HybridRanker(keywords, embeddings) if keywords is not None else None
        # A UI repeats one filter over many queries and pages; its mask costs up to ~50 ms at 1M items. Each entry
        # holds at most EXACT_MAX_ROWS embeddings (40 MB at 512-d): 8 entries bound the cache to ~330 MB.
        self.allowed = functools.lru_cache(maxsize=filter_cache_size)(self._allowed)

    def _allowed(self, filters: Filters) -> Allowed | None:
        mask = filters.mask(self.catalog.attributes)
        if mask is None:
            return None
        rows = np.flatnonzero(mask).astype(np.int64)
        few = len(rows) <= EXACT_MAX_ROWS and not self.index.native_filters  # else the exact path is not planned
        vectors = np.ascontiguousarray(self.embeddings[rows]) if few else None
        return Allowed(filters, mask, rows, mask.astype(np.uint8).tobytes(), vectors)

    def ranked(self, vector: FeatureVector, top_k: int, threshold: float, options: SearchOptions,
               *, exclude_row: int | None = None, text: str | None = None) -> Ranked:
        """The page `options.offset .. + top_k` of the hits the options describe.

        `text`: the query's text, when it is a text query whose ranking may take keyword matches in.
        """
        allowed = self.allowed(options.filters)
        if text is not None and options.keywords and self.fusion is not None:
            return self._fused(vector, text, top_k, threshold, options, allowed)
        need = options.offset + top_k
        # Collapse compares each candidate with the hits kept, so its cost grows with the window: twice the page
        # leaves room for some folds without a second round.
        folding = 2 * need if options.collapse_radius is not None else 0
        window = first_window(need, max(folding, GAP_SPAN if options.cutoff == "gap" else 0))
        if options.sort != "relevance":
            window = SORT_POOL
        largest = max(window, COLLAPSE_MAX_WINDOW)
        while True:
            rows, scores = self.candidates(vector, window, allowed, exclude_row)
            complete = len(rows) < window or (len(scores) > 0 and scores[-1] < threshold)
            above = int(np.count_nonzero(scores >= threshold))  # scores are best first
            keep = cut_count(scores[:above], options.cutoff)
            rows, scores = rows[:keep], scores[:keep]
            duplicates = np.zeros(len(rows), np.int64)
            if options.collapse_radius is not None:
                kept, duplicates = collapse(rows, self.embeddings, options.collapse_radius)
                rows, scores = rows[kept], scores[kept]
            # A cut-off that cut is final (later candidates score lower still); a sort reorders one fixed pool.
            # Past the largest window a page stays short rather than cost more.
            if complete or keep < above or options.sort != "relevance" or len(rows) >= need or window >= largest:
                break
            window *= 2  # collapse folded too many to fill the page: look twice as deep
        order = sort_order(rows, self.catalog.attributes, options.sort)[options.offset:need]
        return Ranked(rows[order], scores[order], duplicates[order])

    def _fused(self, vector: FeatureVector, text: str, top_k: int, threshold: float,  # noqa: PLR0917
               options: SearchOptions, allowed: Allowed | None) -> Ranked:
        """Like `ranked`, over the CLIP candidates and keyword matches in fused order (search/bundle/keywords.py).

        One pass over a fixed window: the fused order depends on the whole candidate set, so the window grows only
        in the same fixed steps as pages do (128 candidates cover the first 128 hits). The threshold and an
        adaptive cut-off keep meaning cosines: the cut-off is found on the CLIP ranking and applied as a floor.
        """
        assert self.fusion is not None
        need = options.offset + top_k
        window = SORT_POOL if options.sort != "relevance" else first_window(need, CANDIDATES)
        rows, scores = self.candidates(vector, window, allowed)
        above = int(np.count_nonzero(scores >= threshold))
        keep = cut_count(scores[:above], options.cutoff)
        floor = float(scores[keep - 1]) if 0 < keep < above else threshold
        rows, scores = self.fusion.rerank(text, vector, rows, scores, floor)
        if allowed is not None:  # keyword matches come from the whole collection: the filter holds for them too
            passed = allowed.mask[rows]
            rows, scores = rows[passed], scores[passed]
        duplicates = np.zeros(len(rows), np.int64)
        if options.collapse_radius is not None:
            kept, duplicates = collapse(rows, self.embeddings, options.collapse_radius)
            rows, scores = rows[kept], scores[kept]
        order = sort_order(rows, self.catalog.attributes, options.sort)[options.offset:need]
        return Ranked(rows[order], scores[order], duplicates[order])

    def candidates(self, vector: FeatureVector, window: int, allowed: Allowed | None,
                   exclude_row: int | None = None) -> tuple[Rows, Scores]:
        """Up to `window` allowed rows nearest the vector, best first, ties by row."""
        extra = exclude_row is not None
        if allowed is None:
            rows, scores = self.index.query(vector, window + extra)
        else:
            rows, scores = self._filtered(vector, window + extra, allowed)
        if extra:
            keep = rows != exclude_row
            rows, scores = rows[keep], scores[keep]
        order = np.lexsort((rows, -scores))[:window]
        return rows[order], scores[order]

    def _filtered(self, vector: FeatureVector, k: int, allowed: Allowed) -> tuple[Rows, Scores]:
        k = min(k, len(allowed.rows))
        if self.index.native_filters:
            return self.walked(vector, k, allowed)
        asked = math.ceil(k / max(allowed.fraction, 1e-9) * OVERFETCH)
        beam = max(self.index.ef_search, asked)  # what a post-filter's graph search would cost
        if allowed.vectors is not None and len(allowed.rows) <= EXACT_ROWS_PER_BEAM * beam:
            return self.exact(vector, k, allowed.rows, allowed.vectors)
        if allowed.fraction >= POSTFILTER_FLOOR:
            found = self.postfiltered(vector, k, allowed)
            if found is not None:
                return found
        return self.walked(vector, k, allowed)

    def postfiltered(self, vector: FeatureVector, k: int, allowed: Allowed) -> tuple[Rows, Scores] | None:
        """The unfiltered search asked for k / fraction * OVERFETCH neighbours, filtered; None if under k pass."""
        asked = min(len(self.index), math.ceil(k / allowed.fraction * OVERFETCH))
        rows, scores = self.index.query(vector, asked)
        passed = allowed.mask[rows]
        if passed.sum() < k:
            return None
        return rows[passed][:k], scores[passed][:k]

    def walked(self, vector: FeatureVector, k: int, allowed: Allowed) -> tuple[Rows, Scores]:
        """The index's own filtered search (hnswlib's filter callback, Qdrant's payload filter); exact if short."""
        rows, scores = self.index.query(vector, k, allowed)
        if len(rows) < min(k, len(allowed.rows)):
            return self.exact(vector, k, allowed.rows)
        return rows, scores

    def exact(self, vector: FeatureVector, k: int, rows: Rows, vectors: FeatureVector | None = None
              ) -> tuple[Rows, Scores]:
        """Exact top-k of `rows` (whose embeddings `vectors` may hold) by cosine, scored like the index."""
        # einsum, not @: numpy's own loop on one core. BLAS splits a matrix-vector product over threads, which
        # measured 2-5x slower on 2 busy cores (bench/filters.py) and only helps an idle many-core machine.
        stored = self.embeddings[rows] if vectors is None else vectors
        similarity = np.einsum("ij,j->i", stored, np.asarray(vector, np.float32))
        k = min(k, len(rows))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        top = np.argpartition(-similarity, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        scores = to_scores(1.0 - similarity[top].astype(np.float64))
        order = np.lexsort((rows[top], -scores))
        return rows[top][order], scores[order]
