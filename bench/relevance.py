"""Relevance judgements from Unsplash's `conversions.tsv000` and the ranking metrics `bench/quality.py` reports.

A conversion row says: someone searched unsplash.com for `keyword` and then downloaded `photo_id`. The file is
untrusted data: lines are read with a bounded length, a row with the wrong number of fields, an empty keyword or
an odd photo id is skipped and counted, and only photos in the bundle become judgements.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

CONVERSION_COLUMNS = ("converted_at", "conversion_type", "keyword", "photo_id", "anonymous_user_id",
                      "conversion_country")
MAX_LINE = 4096  # characters of one row: real rows take ~100
MAX_KEYWORD = 200  # characters of a search keyword
PHOTO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
KS = (1, 5, 10)


@dataclass
class Judgements:
    """keyword -> ids of the bundle's photos downloaded after searching it; with what was skipped and why."""

    relevant: dict[str, set[str]] = field(default_factory=dict)
    conversions: Counter[str] = field(default_factory=Counter)  # kept rows per keyword, to pick the common ones
    rows: int = 0
    malformed: int = 0
    outside: int = 0  # well-formed rows naming a photo the bundle does not hold

    def top(self, limit: int) -> list[str]:
        """The `limit` keywords with the most conversions (ties alphabetical), a stable query set."""
        return sorted(self.relevant, key=lambda word: (-self.conversions[word], word))[:limit]


def read_conversions(path: Path, known_ids: set[str]) -> Judgements:
    """Judgements from a conversions TSV (header naming at least `keyword` and `photo_id`), photos in `known_ids`."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        return parse_conversions(handle, known_ids)


def parse_conversions(handle: TextIO, known_ids: set[str]) -> Judgements:
    """`read_conversions` over an open text stream."""
    judgements = Judgements()
    header = _bounded_line(handle)
    columns = header.rstrip("\r\n").split("\t") if header else []
    if "keyword" not in columns or "photo_id" not in columns:
        raise ValueError("the conversions file needs a header row with keyword and photo_id columns "
                         f"(expected {', '.join(CONVERSION_COLUMNS)})")
    keyword_at, photo_at = columns.index("keyword"), columns.index("photo_id")
    while (line := _bounded_line(handle)) is not None:
        judgements.rows += 1
        fields = line.rstrip("\r\n").split("\t")
        keyword = " ".join(fields[keyword_at].split()).casefold() if len(fields) == len(columns) else ""
        photo = fields[photo_at] if len(fields) == len(columns) else ""
        if not keyword or len(keyword) > MAX_KEYWORD or not PHOTO_ID.fullmatch(photo):
            judgements.malformed += 1
        elif photo not in known_ids:
            judgements.outside += 1
        else:
            judgements.relevant.setdefault(keyword, set()).add(photo)
            judgements.conversions[keyword] += 1
    return judgements


def _bounded_line(handle: TextIO) -> str | None:
    """The next line, or "" for one longer than MAX_LINE (the rest skipped in bounded reads); None at the end."""
    line = handle.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE and not line.endswith("\n"):
        while (rest := handle.readline(MAX_LINE)) and not rest.endswith("\n"):
            pass
        return ""  # no tab: counted as malformed
    return line


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant items in the top k, out of as many as k places can hold (min(|relevant|, k))."""
    return len(set(ranked[:k]) & relevant) / min(len(relevant), k) if relevant else 0.0


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """nDCG@k with binary gains: a relevant item at rank r adds 1/log2(r + 1), divided by the best possible."""
    gain = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return gain / ideal if ideal else 0.0


def score_rankings(rankings: Iterable[tuple[Sequence[str], set[str]]]) -> dict[str, float]:
    """Mean R@1/5/10 and nDCG@10 over (ranked ids, relevant ids) pairs."""
    pairs = list(rankings)
    if not pairs:
        return {**{f"r{k}": 0.0 for k in KS}, "ndcg10": 0.0, "queries": 0}
    result = {f"r{k}": sum(recall_at(ranked, rel, k) for ranked, rel in pairs) / len(pairs) for k in KS}
    result["ndcg10"] = sum(ndcg_at(ranked, rel, 10) for ranked, rel in pairs) / len(pairs)
    result["queries"] = len(pairs)
    return result


Ranker = Callable[[str, object], list[int]]


def compare(queries: dict[str, set[str]], vectors: Sequence[object], ids: Sequence[str],
            rankers: dict[str, Ranker]) -> dict[str, dict[str, float]]:
    """Metrics per ranker; each maps (query text, its CLIP vector) to item rows, best first."""
    texts = list(queries)
    return {name: score_rankings(([ids[row] for row in rank(text, vector)], queries[text])
                                 for text, vector in zip(texts, vectors, strict=True))
            for name, rank in rankers.items()}


def bundle_rankers(bundle: object, top_k: int = 10, weight: float | None = None) -> dict[str, Ranker]:
    """`clip` (the ANN index alone) and, when the bundle has a keyword index, `hybrid` (fused with it)."""
    from search.query.options import SearchOptions
    from search.query.retrieval import Retriever

    def clip(text: str, vector: object) -> list[int]:
        return bundle.index.query(vector, top_k)[0].tolist()

    rankers: dict[str, Ranker] = {"clip": clip}
    if bundle.keywords is not None:
        # The engine's own path (search/query/retrieval.py), without the model: the caller gives the text's vector.
        retriever = Retriever(bundle.index, bundle.embeddings, bundle.catalog, keywords=bundle.keywords)
        if weight is not None:
            retriever.fusion.weight = weight

        def hybrid(text: str, vector: object) -> list[int]:
            return retriever.ranked(vector, top_k, -1.0, SearchOptions(), text=text).rows.tolist()

        rankers["hybrid"] = hybrid
    return rankers
