"""Near-duplicate radius and adaptive cut-off, measured on the demo bundle with the demo model.

    python bench/dedup_cutoff.py

Radius: each of 60 demo pictures is altered the way copies of one photo differ (JPEG re-compressed at quality
40, scaled to 80 %, cropped by 6 %, brightened 15 %); the cosine distance between a picture's stored vector and
its copy's is a duplicate distance. The distance from each item to its nearest *other* item is what a radius
must stay under, or different pictures of one subject fold together (the demo has many pictures per caption).

Cut-off: every "a <colour> <shape>" query of the demo; relevant items are those with that colour and shape.
Over the 100 best hits of each query, F1 of the hits kept by a flat threshold, by "relative" (best score minus
a margin) and by "gap" (the largest drop), each with the one setting best over all queries. A per-query cut-off
is worth offering if one setting serves every query better than one flat threshold does.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common
from search.bundle.store import Bundle
from search.model.encoder import ClipEncoder
from search.query import ranking
from search.query.engine import SearchEngine
from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC

SAMPLES = 60
POOL = 100


def variants(image: Image.Image) -> dict[str, Image.Image]:
    """Copies of one photo as collections hold them."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=40)
    width, height = image.size
    crop = (int(width * 0.03), int(height * 0.03), int(width * 0.97), int(height * 0.97))
    return {"jpeg q40": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
            "scaled 80%": image.resize((int(width * 0.8), int(height * 0.8))),
            "cropped 6%": image.crop(crop), "brighter 15%": ImageEnhance.Brightness(image).enhance(1.15)}


def duplicate_distances(engine: SearchEngine) -> dict[str, np.ndarray]:
    """Cosine distance from stored vectors to their altered copies, per alteration."""
    bundle = engine.bundle
    rows = np.linspace(0, len(bundle.catalog) - 1, SAMPLES).astype(int)
    found: dict[str, list[float]] = {}
    for row in rows:
        image = Image.open(bundle.catalog.hit(int(row), 0.0).image).convert("RGB")
        for name, copy in variants(image).items():
            vector = engine.encoder.encode_images([copy])[0]
            found.setdefault(name, []).append(1.0 - float(vector @ bundle.embeddings[row]))
    return {name: np.asarray(values) for name, values in found.items()}


def nearest_other(embeddings: np.ndarray) -> np.ndarray:
    """Cosine distance from each item to its nearest other item."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -1.0)
    return 1.0 - similarity.max(axis=1)


RADII = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08)


def radius_table(distances: dict[str, np.ndarray], embeddings: np.ndarray, captions: list[str]) -> list[list]:
    """Per radius: share of copies it folds, and of items with another item inside it (and how many of those
    share the item's caption: the same subject, where folding hides little)."""
    copies = np.concatenate(list(distances.values()))
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -1.0)
    same = np.asarray(captions)[:, None] == np.asarray(captions)[None, :]
    rows = []
    for radius in RADII:
        close = similarity >= 1.0 - radius
        with_other = close.any(axis=1)
        other_caption = (close & ~same).any(axis=1)
        rows.append([radius, float((copies <= radius).mean()), float(with_other.mean()), float(other_caption.mean())])
    return rows


def f1(kept: int, relevant: np.ndarray, total: int) -> float:
    """F1 of keeping the first `kept` hits, given which of the pool are relevant and how many exist."""
    hits = int(relevant[:kept].sum())
    if hits == 0:
        return 0.0
    precision, recall = hits / kept, hits / total
    return 2 * precision * recall / (precision + recall)


def cutoff_scores(engine: SearchEngine) -> list[list[object]]:
    """Mean F1 over the demo's colour x shape queries, per cut-off and setting; best setting per method."""
    metadata = engine.bundle.root / "metadata.parquet"
    import pyarrow.parquet as pq

    labels = pq.read_table(metadata, columns=["colour", "shape"]).to_pylist()
    pairs = sorted({(row["colour"], row["shape"]) for row in labels})
    runs = []
    for colour, shape in pairs:
        hits = engine.search_text(f"a {colour} {shape}", top_k=POOL, threshold=-1.0)
        rows = [engine.bundle.catalog.row_of(hit.id) for hit in hits]
        relevant = np.asarray([labels[row]["colour"] == colour and labels[row]["shape"] == shape for row in rows])
        total = sum(row["colour"] == colour and row["shape"] == shape for row in labels)
        runs.append((np.asarray([hit.score for hit in hits]), relevant, total))
    settings = {"flat": [(t, lambda s, t=t: int(np.count_nonzero(s >= t))) for t in np.arange(0.0, 1.0, 0.01)],
                "relative": [(m, lambda s, m=m: int(np.count_nonzero(s >= s[0] - m)))
                             for m in np.arange(0.01, 0.3, 0.01)],
                "flat at the default 0.0": [(0.0, len)],
                "gap": [(ranking.GAP_MIN, lambda s: ranking.cut_count(s, "gap"))]}
    rows = []
    halves = (runs[0::2], runs[1::2])
    for method, options in settings.items():
        def mean_f1(cut, chosen) -> float:
            return float(np.mean([f1(max(cut(scores), 1), relevant, total) for scores, relevant, total in chosen]))

        value, best = max(((value, mean_f1(cut, runs)) for value, cut in options), key=lambda pair: pair[1])
        # 2-fold: the setting best on one half of the queries, scored on the other half.
        crossed = [mean_f1(max(options, key=lambda option: mean_f1(option[1], train))[1], test)
                   for train, test in (halves, halves[::-1])]
        per_query = [max(options, key=lambda option: mean_f1(option[1], [run]))[0] for run in runs]
        rows.append([method, round(float(value), 3), best, float(np.mean(crossed)),
                     f"{min(per_query):.2f}..{max(per_query):.2f}", len(runs)])
    return rows


def main() -> int:
    """Print both measurements."""
    print(common.machine())
    engine = SearchEngine(ClipEncoder.load(DEMO_SPEC), Bundle.load(DEMO_INDEX_DIR))
    distances = duplicate_distances(engine)
    others = nearest_other(engine.bundle.embeddings)
    rows = [[name, float(np.median(v)), float(np.percentile(v, 95)), float(v.max())] for name, v in distances.items()]
    rows.append(["nearest other item", float(np.median(others)), float(np.percentile(others, 5)),
                 float(others.min())])
    common.print_table(["cosine distance", "median", "p95 (p5 for nearest other)", "max (min)"], rows)
    print()
    import pyarrow.parquet as pq

    captions = pq.read_table(engine.bundle.root / "metadata.parquet", columns=["description"]).column(0).to_pylist()
    common.print_table(["radius", "copies folded", "items with another inside", "... of another caption"],
                       radius_table(distances, engine.bundle.embeddings, captions))
    print()
    common.print_table(["cut-off", "best setting", "mean F1", "F1 2-fold", "best per query", "queries"],
                       cutoff_scores(engine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
