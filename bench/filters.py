"""Filtered search: exact subset vs post-filter vs hnswlib's filter callback, by share kept; options overhead.

    python bench/filters.py --n 25000
    python bench/filters.py --n 1000000 --queries 50 --engine-only

Data: the CLIP-like vectors and Unsplash-like metadata of bench/common.py. The graph is the one a synthetic
bundle of that size has in ~/.cache/clip-search-bench/bundle-N (same vectors, default HnswParams), else it is
built once and cached in ~/.cache/clip-search-bench/filters-N. Filters are `min_downloads` at quantiles (any
share kept) plus real combinations. Each query asks for 10 hits the way the engine does (Retriever.ranked):
recall@10 is against the exact top 10 inside the filtered set; p50 is one query at a time, after the filter's
mask is cached (its cold cost is reported apart). Every path runs in the same process, block after block.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common
from search.bundle.hnsw_index import VectorIndex
from search.bundle.metadata import ItemCatalog
from search.config import HnswParams
from search.query.options import Filters, SearchOptions
from search.query.retrieval import EXACT_MAX_ROWS, Retriever, first_window

CACHE = Path("~/.cache/clip-search-bench").expanduser()
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}  # cpu: a query's own work, on a shared machine
SHARES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001)
K = 10


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def load_index(n: int, vectors: np.ndarray) -> VectorIndex:
    """The cached graph over `vectors`, else a new one (cached for the next run)."""
    for folder in (CACHE / f"bundle-{n}", CACHE / f"filters-{n}"):
        if (folder / "index.hnsw").is_file():
            log(f"using the graph in {folder}")
            return VectorIndex.load(folder / "index.hnsw", vectors.shape[1], HnswParams(), count=n, vectors=vectors)
    started = time.perf_counter()
    index = VectorIndex.build(vectors, HnswParams())
    folder = CACHE / f"filters-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    index.save(folder / "index.hnsw")
    log(f"built the graph in {time.perf_counter() - started:.0f} s; cached in {folder}")
    return index


def share_filters(catalog: ItemCatalog) -> list[tuple[str, Filters]]:
    """min_downloads at quantiles keeping each of SHARES, and some real combinations."""
    downloads = catalog.attributes.numbers["downloads"]
    found = [(f"min_downloads keeps {share:g}", Filters(min_downloads=int(np.quantile(downloads, 1 - share))))
             for share in SHARES]
    return [*found, ("landscape", Filters(orientation="landscape")), ("colour=blue", Filters(colour="blue")),
            ("country-009 + landscape", Filters(country="country-009", orientation="landscape")),
            ("photographer user0042", Filters(photographer="user0042"))]


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean share of the exact top 10 (inside the filtered set) that came back."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1)
                          for f, t in zip(found, truth, strict=True)]))


def paths(retriever: Retriever, allowed: Any) -> dict[str, Any]:
    """Each way of answering a filtered query for K hits. The post-filters ask for the engine's first window of
    candidates (first_window(K)), as Retriever.ranked does, and keep the best K."""
    window = first_window(K)

    def postfiltered(vector: np.ndarray) -> np.ndarray:
        found = retriever.postfiltered(vector, window, allowed)
        return (found[0] if found is not None else retriever.walked(vector, window, allowed)[0])[:K]

    return {"exact": lambda vector: retriever.exact(vector, K, allowed.rows, allowed.vectors)[0],
            "post-filter": postfiltered, "hnsw filter": lambda vector: retriever.walked(vector, K, allowed)[0]}


def measure_filter(retriever: Retriever, queries: np.ndarray, name: str, filters: Filters,
                   *, engine_only: bool = False, clock: str = "wall") -> list[Any]:
    """One table row per path (with `engine_only`, the engine's choice and the post-filter alone): share kept,
    p50 ms, recall@10."""
    started = time.perf_counter()
    allowed = retriever._allowed(filters)  # uncached: the cold cost of a new filter
    cold_ms = (time.perf_counter() - started) * 1000
    retriever.allowed(filters)
    options = SearchOptions(filters=filters)
    truth = [retriever.exact(vector, K, allowed.rows)[0] for vector in queries]
    rows = []
    every = paths(retriever, allowed)
    candidates = {**({"post-filter": every["post-filter"]} if engine_only else every),
                  "auto (engine)": lambda vector: retriever.ranked(vector, K, -1.0, options).rows}
    times = common.in_blocks(candidates, list(queries), rounds=2, clock=CLOCKS[clock], warm_every=True)
    for path, fn in candidates.items():
        found = [fn(vector) for vector in queries]
        rows.append([name, f"{allowed.fraction:.4f}", path, common.p50(times[path]), recall(found, truth),
                     cold_ms])
    return rows


def measure_exact_only(retriever: Retriever, queries: np.ndarray, catalog: ItemCatalog) -> list[list[Any]]:
    """Without a graph (--no-graph, for 1M when no graph is cached): the exact path the engine takes for filters
    keeping at most EXACT_MAX_ROWS items, against a full exact scan; recall is 1 by construction."""
    rows = []
    for name, filters in share_filters(catalog):
        started = time.perf_counter()
        allowed = retriever._allowed(filters)
        cold_ms = (time.perf_counter() - started) * 1000
        if len(allowed.rows) > EXACT_MAX_ROWS:
            continue
        times = common.timed_each(lambda vector, a=allowed: retriever.exact(vector, K, a.rows, a.vectors),
                                  list(queries))
        rows.append([name, f"{allowed.fraction:.4f}", "exact", common.p50(times), 1.0, cold_ms])
    return rows


def measure_overhead(retriever: Retriever, queries: np.ndarray, clock: str = "wall") -> list[list[Any]]:
    """Unfiltered queries: the plain index query vs each option added (dedup, sort, a later page)."""
    cases = {
        "plain index.query(k=10)": lambda vector: retriever.index.query(vector, K),
        "relative cut-off": lambda vector: retriever.ranked(vector, K, -1.0, SearchOptions(cutoff="relative")),
        "collapse 0.05": lambda vector: retriever.ranked(vector, K, -1.0, SearchOptions(collapse_radius=0.05)),
        "sort by date": lambda vector: retriever.ranked(vector, K, -1.0, SearchOptions(sort="date")),
        "page 3 (offset 20)": lambda vector: retriever.ranked(vector, K, -1.0, SearchOptions(offset=20)),
        "collapse + date + offset 20": lambda vector: retriever.ranked(
            vector, K, -1.0, SearchOptions(collapse_radius=0.05, sort="date", offset=20)),
    }
    times = common.in_blocks(cases, list(queries), rounds=2, clock=CLOCKS[clock])
    base = common.p50(times["plain index.query(k=10)"])
    return [[name, common.p50(times[name]), common.p50(times[name]) - base] for name in cases]


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-filters", action="store_true", help="only the options overhead table")
    parser.add_argument("--no-graph", action="store_true", help="no hnswlib graph: only the exact path (1M)")
    parser.add_argument("--engine-only", action="store_true",
                        help="time only the engine's choice and the post-filter per filter, not every path (the "
                             "exact scan of a large share takes minutes at 1M)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: this thread's CPU time per query, for a machine others are using")
    args = parser.parse_args(argv)
    log(f"{common.machine()}; n={args.n}")
    vectors = common.clip_like_vectors(args.n, 512)
    catalog = ItemCatalog(common.synthetic_metadata(args.n), {})
    if args.no_graph:
        retriever = Retriever(None, vectors, catalog)  # type: ignore[arg-type]  # exact() needs no graph
        queries = common.clip_like_queries(vectors, args.queries)
        full = common.p50(common.timed_each(lambda vector: np.einsum("ij,j->i", vectors, vector), list(queries)))
        print(f"n={args.n}, {args.queries} queries, k={K}; full exact scan p50 {full:.1f} ms")
        rows = measure_exact_only(retriever, queries, catalog)
        common.print_table(["filter", "kept", "path", "p50 ms", "recall@10", "mask ms (cold)"], rows)
        common.emit_json({"bench": "filters", "n": args.n, "full_scan_p50_ms": full, "rows": rows})
        return 0
    index = load_index(args.n, vectors)
    retriever = Retriever(index, vectors, catalog)
    queries = common.clip_like_queries(vectors, args.queries)
    clock = CLOCKS[args.clock]
    plain = {"index": lambda vector: index.query(vector, K),
             "engine": lambda vector: retriever.ranked(vector, K, -1.0, SearchOptions())}
    plain_times = common.in_blocks(plain, list(queries), rounds=2, clock=clock, warm_every=True)
    index_p50, unfiltered = common.p50(plain_times["index"]), common.p50(plain_times["engine"])
    rows = []
    for name, filters in [] if args.skip_filters else share_filters(catalog):
        log(f"filter {name}")
        rows += measure_filter(retriever, queries, name, filters, engine_only=args.engine_only, clock=args.clock)
    rows = [[*row, row[3] / unfiltered] for row in rows]
    print(f"n={args.n}, {args.queries} queries, k={K}; unfiltered: the engine's query p50 {unfiltered:.3f} ms (the "
          f"ratios' base), index.query alone {index_p50:.3f} ms ({args.clock} clock)")
    common.print_table(["filter", "kept", "path", "p50 ms", "recall@10", "mask ms (cold)", "x unfiltered"], rows)
    overhead = measure_overhead(retriever, queries, args.clock)
    print()
    common.print_table(["unfiltered query", "p50 ms", "added ms"], overhead)
    common.emit_json({"bench": "filters", "n": args.n, "unfiltered_p50_ms": unfiltered, "index_p50_ms": index_p50,
                      "rows": [dict(zip(["filter", "kept", "path", "p50_ms", "recall", "mask_ms", "x_unfiltered"], row,
                                        strict=True))
                               for row in rows],
                      "overhead": [dict(zip(["case", "p50_ms", "added_ms"], row, strict=True)) for row in overhead]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
