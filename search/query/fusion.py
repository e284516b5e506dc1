"""Keyword fusion: a text query's CLIP ranking and its keyword (BM25) matches in one order (the bundle's
KeywordIndex supplies the matches)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from search.bundle.hnsw_index import to_scores
from search.bundle.keywords import KeywordIndex, Rows

KEYWORD_WEIGHT = 3.0
"""What a text covering every query word adds to an item's fused score, in standard deviations of the candidates'
cosines. Chosen on the fixture of tests/test_keywords.py (docs/keyword-search.md): place-name queries reach R@5
0.47 at 1, 0.78 at 2 and 1.0 at 3 and 4, while visual queries keep CLIP's R@5 (0.967) at 3 and 4."""
CANDIDATES = 100
"""Items taken from each ranking before fusion (the caller asks the ANN index for max(top_k, CANDIDATES))."""


class HybridRanker:
    """Fuses the CLIP ranking with keyword matches; the score shown stays each item's CLIP cosine.

    fused = (cosine - mean) / std + weight * coverage, over the candidates (the ANN answer plus the keyword
    matches). Standardising the cosines makes the weight mean the same for any model, however compressed its
    cosines are. Coverage is the item's BM25 score over the best any text could get for the query, where a query
    word the collection never uses counts as the rarest word: so text that names all of a query ("Lisbon") counts
    fully, and text that names only "red circle" of "a red circle on a light background" counts a third, which
    leaves CLIP's order of a visual query mostly alone.
    """

    def __init__(self, keywords: KeywordIndex, embeddings: npt.NDArray[np.float32],
                 weight: float = KEYWORD_WEIGHT, candidates: int = CANDIDATES) -> None:
        self.keywords = keywords
        self.embeddings = embeddings
        self.weight = weight
        self.candidates = candidates

    def rerank(self, text: str, vector: npt.NDArray[np.float32], rows: Rows, scores: npt.NDArray[np.floating],
               threshold: float = -1.0) -> tuple[Rows, npt.NDArray[np.float64]]:
        """Every candidate with a cosine >= threshold in fused order, with its cosine as its score.

        `rows`/`scores` are the ANN index's answer for `vector` (the text's CLIP vector). Keyword matches that the
        ANN answer lacks get their exact cosine from the embeddings. The fused order is computed over all
        candidates and the threshold applied after: it keeps meaning a cosine and only removes hits, never
        reorders the ones it keeps.
        """
        rows, scores = np.asarray(rows, np.int64), np.asarray(scores, np.float64)
        found, cover = self.keywords.coverage(text, self.candidates)
        extra = np.setdiff1d(found, rows)  # sorted, unique
        if len(extra):
            rows = np.concatenate([rows, extra])
            scores = np.concatenate([scores, to_scores(1.0 - self.embeddings[extra] @ vector)])
        fused = (scores - scores.mean()) / max(float(scores.std()), 1e-6)
        fused[_positions(rows, found)] += self.weight * cover
        order = np.lexsort((rows, -scores, -fused))
        order = order[scores[order] >= threshold]
        return rows[order], scores[order]


def _positions(rows: Rows, wanted: Rows) -> Rows:
    """Index in `rows` (unique) of each of `wanted` (all present in `rows`)."""
    sorter = np.argsort(rows)
    return sorter[np.searchsorted(rows, wanted, sorter=sorter)]
