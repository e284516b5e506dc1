"""kNN at scale: hnswlib recall@10 against exact search, query p50, build time and size, vs numpy.

    python bench/knn.py --n 25000
    python bench/knn.py --n 200000 --grid defaults     # only the default graph, several ef_search

Data: clustered, anisotropic 512-d unit vectors shaped like CLIP embeddings (bench/common.py); queries
are held-out perturbations of stored items. Queries go one at a time through `VectorIndex.query`
(the engine's path: lock, hnswlib, score conversion).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from search.bundle.hnsw_index import VectorIndex
from search.config import HnswParams

DEFAULT = HnswParams()
GRIDS = {
    "small": [(16, 100), (16, 200), (32, 200), (48, 200)],  # (M, ef_construction)
    "defaults": [(DEFAULT.m, DEFAULT.ef_construction)],
}
EF_SEARCH = (32, 64, 128, 256)
K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="stored vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300, help="held-out queries for recall and latency")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small", help="which (M, ef_construction) set")
    return parser.parse_args(argv)


def log(message: str) -> None:
    """Progress on stderr, so a run cut short by a time limit still says how far it got."""
    print(message, file=sys.stderr, flush=True)


def exact_truth(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 rows per query, in chunks so 1M x queries scores fit in memory."""
    return np.concatenate([common.exact_top_k(data, queries[i:i + 16], K) for i in range(0, len(queries), 16)])


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean fraction of the exact top 10 that the index returned."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def index_bytes(index: VectorIndex) -> int:
    """Size of the saved hnswlib graph (vectors + links), which is also its size in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.hnsw"
        index.save(path)
        return path.stat().st_size


def measure_graph(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, m: int, efc: int) -> list[dict]:
    """Build one graph, then recall and p50 for each ef_search."""
    start = time.perf_counter()
    index = VectorIndex.build(data, HnswParams(m, efc, EF_SEARCH[0]))
    build_s = time.perf_counter() - start
    log(f"built M={m} ef_construction={efc} in {build_s:.1f} s")
    size = index_bytes(index) / len(data)
    rows = []
    for ef in EF_SEARCH:
        index.set_ef_search(ef)
        found: list[np.ndarray] = []
        times = common.timed_each(lambda q, out=found: out.append(index.query(q, K)[0]), list(queries), warmup=0)
        rows.append({"m": m, "ef_construction": efc, "ef_search": ef, "recall_at_10": recall(found, truth),
                     "p50_ms": common.p50(times), "p95_ms": common.pct(times, 95), "build_s": build_s,
                     "bytes_per_vector": size})
    return rows


def exact_p50(data: np.ndarray, queries: np.ndarray) -> float:
    """p50 of one exact numpy query (full scan + top 10), the baseline."""
    sample = list(queries[:min(len(queries), 50)])
    return common.p50(common.timed_each(lambda q: common.exact_top_k(data, q[None, :], K), sample))


def main(argv: list[str] | None = None) -> int:
    """Generate data, run the grid, print the table and the JSON line for the default parameters."""
    args = parse_args(argv)
    data = common.clip_like_vectors(args.n, args.dim)
    queries = common.clip_like_queries(data, args.queries)
    log(f"generated {args.n} vectors")
    truth = exact_truth(data, queries)
    exact_ms = exact_p50(data, queries)
    log(f"exact search done: p50 {exact_ms:.2f} ms")
    rows = [row for m, efc in GRIDS[args.grid] for row in measure_graph(data, queries, truth, m, efc)]
    print(f"kNN, n={args.n}, dim={args.dim}, {args.queries} queries, k={K}; {common.machine()}")
    print(f"exact numpy scan p50: {exact_ms:.3f} ms; raw float32 vectors: {4 * args.dim} bytes each")
    keys = ["m", "ef_construction", "ef_search", "recall_at_10", "p50_ms", "p95_ms", "build_s", "bytes_per_vector"]
    common.print_table(keys, [[row[key] for key in keys] for row in rows])
    chosen = next((row for row in rows if (row["m"], row["ef_construction"], row["ef_search"])
                   == (DEFAULT.m, DEFAULT.ef_construction, DEFAULT.ef_search)), None)
    if chosen is None:
        raise SystemExit("the grid does not contain the default parameters")
    print(f"default: M={DEFAULT.m}, ef_construction={DEFAULT.ef_construction}, ef_search={DEFAULT.ef_search}")
    common.emit_json({"n": args.n, "recall_at_10": round(chosen["recall_at_10"], 4),
                      "p50_ms": round(chosen["p50_ms"], 4), "exact_p50_ms": round(exact_ms, 3),
                      "bytes_per_vector": round(chosen["bytes_per_vector"], 1), "build_s": round(chosen["build_s"], 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
