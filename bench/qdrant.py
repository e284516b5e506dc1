"""Qdrant beside hnswlib: recall@10 against exact search and query p50, side by side in one run.

    python bench/qdrant.py --n 25000
    python bench/qdrant.py --n 1000000 --no-embedded \
        --hnsw-from ~/.cache/clip-search-bench/bundle-1000000      # graph of bench/bundles.py (same vectors)

Paths measured, each query one at a time on one thread, in alternating blocks (bench/common.py `in_blocks`):
- `hnswlib`: `VectorIndex.query` (the app's default index; M 32, ef_construction 200, ef_search 128);
- `qdrant-edge f32` / `int8+rescore` / `int8`: Qdrant's own engine (the Rust segment code a server runs:
  HNSW with the same M / ef_construct / ef, int8 scalar quantisation at quantile 0.99) in-process through
  qdrant-edge-py, since no Qdrant server can be had offline here. A server adds its REST/gRPC round trip;
- `qdrant-embedded`: `QdrantIndex.query` over qdrant-client's embedded mode (`:memory:`), the app's code path
  with answer validation, which scans every vector in Python: exact, but for tests and small sets only.
Data: clustered, anisotropic 512-d unit vectors shaped like CLIP embeddings; queries are held-out perturbations.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from search.bundle.hnsw_index import VectorIndex
from search.config import HnswParams

K = 10
PARAMS = HnswParams()
EMBEDDED_MAX = 100_000  # embedded mode keeps every point as Python objects and scans them all per query


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="stored vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries for recall and latency")
    parser.add_argument("--rounds", type=int, default=2, help="timed blocks per path")
    parser.add_argument("--no-embedded", action="store_true", help="skip qdrant-client's embedded mode")
    parser.add_argument("--hnsw-from", type=Path, metavar="BUNDLE",
                        help="load hnswlib's graph from this synthetic bundle of the same n (bench/bundles.py) "
                             "instead of building it (~10 min at 1M on 2 cores); waited for up to --wait-s")
    parser.add_argument("--wait-s", type=float, default=3600, help="how long to wait for --hnsw-from's bundle")
    return parser.parse_args(argv)


def log(message: str) -> None:
    """Progress on stderr, so a run cut short still says how far it got."""
    print(message, file=sys.stderr, flush=True)


def build_hnswlib(data: np.ndarray, bundle: Path | None, wait_s: float) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                                    float]:
    """The app's default index over `data` (built, or loaded from `bundle`), and its build or load seconds."""
    deadline = time.monotonic() + wait_s
    while bundle is not None and not (bundle / "manifest.json").is_file() and time.monotonic() < deadline:
        time.sleep(10)  # bench/bundles.py renames the finished bundle into place
    start = time.perf_counter()
    if bundle is not None and (bundle / "manifest.json").is_file():
        # The load compares a sample of the graph's vectors with `data`: a graph of other vectors is refused.
        index = VectorIndex.load(bundle / "index.hnsw", data.shape[1], PARAMS, count=len(data), vectors=data)
        log(f"hnswlib graph loaded from {bundle}")
    else:
        index = VectorIndex.build(data, PARAMS)
    return (lambda query: index.query(query, K)[0]), time.perf_counter() - start


def build_edge(data: np.ndarray, folder: Path, int8: bool) -> tuple[Any, float]:
    """A Qdrant Edge shard (HNSW, optionally int8) over `data`, optimised (graph built), and its build seconds."""
    import qdrant_edge as qe

    quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True) \
        if int8 else None
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=data.shape[1], distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=PARAMS.m, ef_construct=PARAMS.ef_construction, full_scan_threshold=10),
        quantization_config=quantization, optimizers=qe.EdgeOptimizersConfig(default_segment_number=1),
        max_search_threads=1, wal_enabled=False)
    start = time.perf_counter()
    shard = qe.EdgeShard.create(str(folder), config)
    for first in range(0, len(data), 10_000):
        rows = data[first:first + 10_000]
        shard.update(qe.UpdateOperation.upsert_points(
            [qe.Point(first + offset, row.tolist()) for offset, row in enumerate(rows)]))
    shard.optimize()  # builds the HNSW graph (and the int8 copy), as a server's optimiser does in the background
    return shard, time.perf_counter() - start


def edge_query(shard: Any, rescore: bool | None, ignore: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """One query against a shard: float32 (`ignore` the int8 copy), int8 with or without rescoring."""
    import qdrant_edge as qe

    params = qe.SearchParams(hnsw_ef=PARAMS.ef_search, quantization=qe.QuantizationSearchParams(
        ignore=ignore, rescore=rescore, oversampling=2.0 if rescore else None))

    def run(query: np.ndarray) -> np.ndarray:
        points = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(query.tolist()), params=params))
        return np.asarray([point.id for point in points], dtype=np.int64)

    return run


def build_embedded(data: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """`QdrantIndex` over qdrant-client's embedded mode, loaded as the loader does, and the load seconds."""
    from qdrant_client import QdrantClient, models

    from search.query.qdrant_index import QdrantIndex

    client = QdrantClient(location=":memory:")
    start = time.perf_counter()
    client.create_collection("bench", vectors_config=models.VectorParams(size=data.shape[1],
                                                                         distance=models.Distance.COSINE))
    with warnings.catch_warnings():  # "local mode is not recommended for more than 20,000 points": measured here
        warnings.simplefilter("ignore", UserWarning)
        client.upload_collection("bench", vectors=data, ids=range(len(data)), batch_size=1024, wait=True)
    index = QdrantIndex(client, "bench", len(data), data.shape[1])
    return (lambda query: index.query(query, K)[0]), time.perf_counter() - start


def recall(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top 10 found."""
    return float(np.mean([len(set(search(q).tolist()) & set(t.tolist())) / K for q, t in zip(queries, truth,
                                                                                            strict=True)]))


def main(argv: list[str] | None = None) -> None:
    """Build every path over one data set, then measure recall and p50 side by side."""
    args = parse_args(argv)
    log(f"{common.machine()}; n={args.n}, {args.queries} queries")
    data = common.clip_like_vectors(args.n, args.dim)
    queries = common.clip_like_queries(data, args.queries)
    truth = np.concatenate([common.exact_top_k(data, queries[i:i + 16], K) for i in range(0, len(queries), 16)])
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    builds: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="qdrant-bench-"))
    try:
        shard, builds["qdrant-edge"] = build_edge(data, scratch / "int8", int8=True)
        log(f"qdrant-edge (int8) built in {builds['qdrant-edge']:.0f} s")
        paths["hnswlib"], builds["hnswlib"] = build_hnswlib(data, args.hnsw_from, args.wait_s)
        log(f"hnswlib ready in {builds['hnswlib']:.0f} s")
        paths["qdrant-edge f32"] = edge_query(shard, rescore=None, ignore=True)
        paths["qdrant-edge int8+rescore"] = edge_query(shard, rescore=True)
        paths["qdrant-edge int8"] = edge_query(shard, rescore=False)
        if not args.no_embedded and args.n <= EMBEDDED_MAX:
            paths["qdrant-embedded"], builds["qdrant-embedded"] = build_embedded(data)
            log(f"embedded mode loaded in {builds['qdrant-embedded']:.0f} s")
        report(args, paths, builds, queries, truth)
        shard.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(args: argparse.Namespace, paths: dict[str, Callable[[np.ndarray], np.ndarray]], builds: dict[str, float],
           queries: np.ndarray, truth: np.ndarray) -> None:
    """Recall and latency per path, as a table and one JSON line."""
    recalls = {name: recall(search, queries, truth) for name, search in paths.items()}
    times = common.in_blocks(paths, list(queries), args.rounds)
    rows = [[name, f"{recalls[name]:.4f}", round(common.p50(times[name]), 3), round(common.pct(times[name], 95), 3),
             round(builds.get(name, builds.get("qdrant-edge", 0.0)), 1)] for name in paths]
    common.print_table(["path", "recall@10", "p50 ms", "p95 ms", "build/load s"], rows)
    common.emit_json({"bench": "qdrant", "n": args.n, "queries": args.queries, "machine": common.machine(),
                      "results": {name: {"recall_at_10": recalls[name], "p50_ms": common.p50(times[name]),
                                         "p95_ms": common.pct(times[name], 95)} for name in paths},
                      "build_s": builds})


if __name__ == "__main__":
    main()
