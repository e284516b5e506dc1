"""Which diverse sample a collection without example queries opens on: farthest-point or k-means medoids.

    python bench/opening_sample.py --k 12

On the demo bundle (300 pictures: colour x shape x background) and on clustered CLIP-like vectors (25 000 x 512,
60 clusters), each method picks k items. "coverage" is the mean, over every item, of its cosine to the nearest
picked item (how well the sample stands for the whole; higher is better); "spread" is the mean cosine between
picked items (lower: they differ more); on the demo, "kinds" is how many distinct colour+shape captions the
sample shows, and on the clustered vectors how many clusters.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common
from search.build.measured_hints import diverse_sample
from search.bundle.store import Bundle
from tests.conftest import DEMO_INDEX_DIR


def kmeans_medoids(vectors: np.ndarray, k: int, rounds: int = 10, seed: int = 0) -> np.ndarray:
    """Spherical k-means (k-means++ start), then per cluster the member nearest its centre."""
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(len(vectors))]]
    for _ in range(1, k):
        far = np.clip(1 - np.max(vectors @ np.asarray(centres).T, axis=1), 0, None) + 1e-12
        centres.append(vectors[rng.choice(len(vectors), p=far / far.sum())])
    centres = np.asarray(centres)
    for _ in range(rounds):
        label = np.argmax(vectors @ centres.T, axis=1)
        for number in range(k):
            members = vectors[label == number]
            if len(members):
                mean = members.mean(axis=0)
                centres[number] = mean / np.linalg.norm(mean)
    label = np.argmax(vectors @ centres.T, axis=1)
    picked = []
    for number in range(k):
        rows = np.flatnonzero(label == number)
        if len(rows):
            picked.append(int(rows[np.argmax(vectors[rows] @ centres[number])]))
    return np.asarray(picked)


def score(vectors: np.ndarray, picked: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    sims = vectors[picked] @ vectors[picked].T
    return {"coverage": float(np.mean(np.max(vectors @ vectors[picked].T, axis=1))),
            "spread": float(np.mean(sims[~np.eye(len(picked), dtype=bool)])),
            "kinds": float(len(set(kinds[picked].tolist())))}


def compare(vectors: np.ndarray, kinds: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    methods: dict[str, Callable[[], np.ndarray]] = {
        "farthest-point": lambda: diverse_sample(vectors, k), "k-means medoids": lambda: kmeans_medoids(vectors, k)}
    result = {}
    for name, pick in methods.items():
        start = time.perf_counter()
        picked = pick()
        result[name] = {**score(vectors, picked, kinds), "ms": (time.perf_counter() - start) * 1000}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--n", type=int, default=25_000, help="clustered vectors")
    args = parser.parse_args()
    bundle = Bundle.load(DEMO_INDEX_DIR)
    captions = np.asarray([bundle.catalog.hit(row, 0).description.split(" on ")[0]
                           for row in range(len(bundle.catalog))])
    sets = {"demo (300)": (bundle.embeddings, captions)}
    clustered = common.clip_like_vectors(args.n, clusters=60, seed=1)
    sets[f"clustered ({args.n})"] = (clustered, _cluster_labels(clustered, 60))
    rows, summary = [], {}
    for data, (vectors, kinds) in sets.items():
        for method, values in compare(np.ascontiguousarray(vectors, np.float32), kinds, args.k).items():
            rows.append([data, method, f"{values['coverage']:.3f}", f"{values['spread']:.3f}",
                         int(values["kinds"]), f"{values['ms']:.1f}"])
            key = ("demo_" if data.startswith("demo") else "clustered_") + method.split()[0].replace("-", "_")
            summary.update({f"{key}_coverage": round(values["coverage"], 4), f"{key}_kinds": values["kinds"]})
    print(f"k={args.k}, {common.machine()}")
    common.print_table(["vectors", "method", "coverage", "spread", "kinds", "ms"], rows)
    common.emit_json(summary)


def _cluster_labels(vectors: np.ndarray, clusters: int) -> np.ndarray:
    """Each vector's cluster, as a 60-way k-means finds it (the generator does not return its labels)."""
    medoids = kmeans_medoids(vectors, clusters, rounds=20, seed=5)
    return np.argmax(vectors @ vectors[medoids].T, axis=1)


if __name__ == "__main__":
    main()
