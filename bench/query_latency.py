"""End-to-end text-query latency (encode -> kNN -> metadata), optimised engine vs the naive path.

    python bench/query_latency.py                # N = 25 000, random-init ViT-B-32
    python bench/query_latency.py --n 2000 --rounds 1

The optimised path is `SearchEngine.search_text` with its text cache off (every query runs the model):
the token-trimmed text tower on ONNX Runtime (exported fresh in this run, as the app does on a first
start; the same path on PyTorch is timed too), one thread per core, hnswlib. The same engine with the int8 text
tower (ONNX Runtime dynamic quantisation of that export, as SEARCH_TEXT_PRECISION=int8 serves it) is timed side by
side, with the agreement gate's figure for it over this bundle. The naive path is open_clip's own `encode_text` at
the full 77-token context plus an exact numpy scan. Cached repeats are reported apart. The first line names the
CPU (model name and the vector extensions that int8 kernels use): figures only compare within one CPU.
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
from bench.machine_limits import cpu_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="items in the synthetic bundle")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the 20 queries")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--probes", type=int, default=300, help="probe texts of the int8 agreement gate (as the app)")
    return parser.parse_args(argv)


def full_context_vector(encoder, text: str) -> np.ndarray:
    """open_clip's own encode_text at the full 77-token context, normalised."""
    import torch

    with torch.inference_mode():
        features = encoder.model.encode_text(encoder.tokenizer([text]))
    return torch.nn.functional.normalize(features.float(), dim=-1)[0].numpy()


def exact_rows(embeddings: np.ndarray, vector: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by a full numpy scan, best first, with their scores."""
    scores = embeddings @ vector
    top = np.argpartition(-scores, top_k)[:top_k]
    top = top[np.argsort(-scores[top])]
    return top, scores[top]


def naive_search(encoder, embeddings: np.ndarray, catalog, text: str, top_k: int) -> list:
    """The naive path in one call: full-context encode, exact scan, then the hits."""
    rows, scores = exact_rows(embeddings, full_context_vector(encoder, text), top_k)
    return [catalog.hit(int(row), float(score)) for row, score in zip(rows, scores, strict=True)]


def concurrent(search, queries, clients: int) -> list[float]:
    """Per-query milliseconds with `clients` threads searching at once (as Gradio's workers do)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(text: str) -> float:
        start = time.perf_counter()
        search(text)
        return (time.perf_counter() - start) * 1000

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, queries[:clients]))  # warm-up
        return list(pool.map(one, list(queries) * clients))


def measure(args: argparse.Namespace, root: Path) -> tuple[dict, list[list], str]:
    """All timings of one run: (final JSON, table rows)."""
    import torch

    from search.bundle.store import Bundle
    from search.model.encoder import ClipEncoder
    from search.model.onnx_text import (
        MODEL_FILE,
        OnnxTextTower,
        cache_key,
        load_int8_text,
        load_onnx_text,
        measure_agreement,
    )
    from search.model.quantised import GENERIC_PROBES
    from search.query.engine import SearchEngine

    encoder = common.random_vit_b32(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as cache:  # a fresh export, as on a first start
        start = time.perf_counter()
        encoder.onnx_text = load_onnx_text(encoder, Path(cache))
        export_s = time.perf_counter() - start
        one_thread = OnnxTextTower(Path(cache) / cache_key(encoder) / MODEL_FILE, threads=1)
        start = time.perf_counter()
        on_int8 = ClipEncoder(encoder.model, encoder.preprocess, encoder.tokenizer, encoder.spec)
        on_int8.onnx_text = load_int8_text(encoder, encoder.onnx_text)
        quantise_s = time.perf_counter() - start
    on_torch = ClipEncoder(encoder.model, encoder.preprocess, encoder.tokenizer, encoder.spec)  # same weights
    bundle = Bundle.load(root)
    uncached = SearchEngine(encoder, bundle, text_cache_size=0)
    uncached_int8 = SearchEngine(on_int8, bundle, text_cache_size=0)
    uncached_torch = SearchEngine(on_torch, bundle, text_cache_size=0)
    cached = SearchEngine(encoder, bundle)
    queries = common.QUERIES
    k = args.top_k
    vector = encoder.encode_text([queries[0]])[0]
    paths = {
        "opt": lambda q: uncached.search_text(q, k, -1.0),
        "opt_int8": lambda q: uncached_int8.search_text(q, k, -1.0),
        "opt_torch": lambda q: uncached_torch.search_text(q, k, -1.0),
        "naive": lambda q: naive_search(encoder, bundle.embeddings, bundle.catalog, q, k),
        "encode": lambda q: encoder.encode_text([q]),
        "encode_int8": lambda q: on_int8.encode_text([q]),
        "encode_torch": lambda q: on_torch.encode_text([q]),
        "encode77": lambda q: full_context_vector(encoder, q),
        "exact": lambda q: exact_rows(bundle.embeddings, vector, k),
    }
    times = common.in_blocks(paths, common.QUERIES, args.rounds)
    opt, naive = times["opt"], times["naive"]
    # The naive figure is the sum of its parts timed apart: run in one call, numpy's BLAS threads and
    # torch's OpenMP threads spin against each other and the naive path looks ~3x slower than it need be.
    naive_p50 = common.p50(times["encode77"]) + common.p50(times["exact"])
    for q in common.QUERIES:
        cached.search_text(q, k, -1.0)
    hot = common.timed_each(lambda q: cached.search_text(q, k, -1.0), queries)
    knn = common.timed(lambda: bundle.index.query(vector, k), 200)
    drift = max(float(np.abs(encoder.encode_text([q]) - on_torch.encode_text([q])).max()) for q in queries)
    gate = measure_agreement(encoder, encoder.onnx_text, on_int8.onnx_text, list(GENERIC_PROBES[:args.probes]),
                             lambda vectors, k: np.stack([bundle.index.query(v, k)[0] for v in vectors]))

    def row(label: str, count: int, ms: list[float]) -> list:
        return [label, count, common.p50(ms), common.pct(ms, 95)]

    rows = [
        row("optimised, uncached (engine.search_text)", threads, opt),
        row("  of which: text encode, ONNX Runtime", threads, times["encode"]),
        row("  of which: hnswlib kNN", 1, knn),
        row("same, int8 text tower (ONNX Runtime dynamic)", threads, times["opt_int8"]),
        row("  of which: text encode, ONNX Runtime int8", threads, times["encode_int8"]),
        row("same, text tower on PyTorch (trimmed)", threads, times["opt_torch"]),
        row("  of which: text encode, PyTorch (trimmed)", threads, times["encode_torch"]),
        row("optimised, cached repeat", threads, hot),
        ["naive = 77-token encode_text + numpy exact", threads, naive_p50, None],
        row("  of which: open_clip encode_text (77 tokens)", threads, times["encode77"]),
        row("  of which: numpy exact scan + top k", 1, times["exact"]),
        row("naive run as one call (threads contend)", threads, naive),
    ]
    if threads > 1:
        towers = {1: one_thread, threads: encoder.onnx_text}
        encoder.onnx_text = one_thread
        rows.append(row("optimised, uncached, 1 thread", 1,
                        common.timed_each(lambda q: uncached.search_text(q, k, -1.0), queries)))
        for count, tower in towers.items():  # the Space's queue runs 2 searches at once
            encoder.onnx_text = tower
            rows.append(row(f"2 concurrent clients, {count} thread(s) each", count,
                            concurrent(lambda q: uncached.search_text(q, k, -1.0), queries, clients=2)))
    int8 = times["opt_int8"]
    extra = (f"ONNX export + check {export_s:.1f} s, int8 quantisation + check {quantise_s:.1f} s (once per model, "
             f"cached); max abs diff of ONNX Runtime to PyTorch over the queries: {drift:.1e}\n"
             f"int8 gate on this bundle (random weights, synthetic vectors: says little of a trained model): "
             f"{gate.summary()}")
    result = {"p50_ms": round(common.p50(opt), 2), "p95_ms": round(common.pct(opt, 95), 2),
              "naive_p50_ms": round(naive_p50, 2), "speedup": round(naive_p50 / common.p50(opt), 2),
              "int8_p50_ms": round(common.p50(int8), 2), "int8_p95_ms": round(common.pct(int8, 95), 2),
              "int8_speedup": round(naive_p50 / common.p50(int8), 2),
              "int8_over_fp32": round(common.p50(opt) / common.p50(int8), 2),
              "int8_recall_at_10": round(gate.recall, 4)}
    return result, rows, extra


def main(argv: list[str] | None = None) -> int:
    """Build the synthetic bundle, measure, print the table and the JSON line."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = common.write_synthetic_bundle(Path(tmp) / "bundle", args.n)
        result, rows, extra = measure(args, root)
    print(f"query latency, N={args.n}, {len(common.QUERIES) * args.rounds} queries, top {args.top_k}; "
          f"{common.machine()}; {cpu_line()}")
    common.print_table(["path", "threads", "p50 ms", "p95 ms"], rows)
    print(extra)
    print("cached p50 is reported apart; p50_ms is the uncached figure (fp32 ONNX), int8_p50_ms the same with the "
          "int8 tower. speedup = naive / optimised p50")
    common.emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
