"""Keyword index engines side by side: bm25s (as search/bundle/keywords.py stores and queries it) vs tantivy.

    python bench/keywords.py            # 25 k synthetic item texts, 200 queries
    python bench/keywords.py --n 1000000

Reports, for each engine: build time, on-disk size, load time and query p50/p95 (top 100), and for bm25s also
the fusion's added cost (HybridRanker.rerank on a 100-item ANN answer). Texts are synthetic: a Zipf vocabulary
of 30 k words, ~12 description + ~10 AI description + ~15 keyword words per item, like Unsplash Lite rows.
Queries are 1-3 words of middle frequency. Run tantivy with `pip install tantivy==0.27.0` (not a requirement).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

VOCAB = 30_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="item texts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def synthetic_texts(n: int, seed: int) -> pa.Table:
    """Description, AI description and keywords per item, words drawn from a Zipf distribution."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{number}x" for number in range(VOCAB)])

    def column(mean: int) -> list[str]:
        draws = np.minimum(rng.zipf(1.3, size=(n, 2 * mean)) - 1, VOCAB - 1)
        lengths = rng.poisson(mean, n).clip(1, 2 * mean)
        return [" ".join(words[row[:length]]) for row, length in zip(draws, lengths, strict=True)]

    return pa.table({"description": column(12), "ai_description": column(10), "keywords": column(15)})


def queries(count: int, seed: int) -> list[str]:
    """1-3 words each, from ranks 50-5000 (neither stopword-like nor unseen)."""
    rng = np.random.default_rng(seed + 1)
    return [" ".join(f"w{number}x" for number in rng.integers(50, 5000, rng.integers(1, 4))) for _ in range(count)]


def folder_bytes(folder: Path) -> int:
    """Total size of the files under a folder."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def bench_bm25s(table: pa.Table, texts: list[str], folder: Path) -> dict[str, float]:
    """search/bundle/keywords.py: build with bm25s, save as .npy + JSON, load with checks, query with numpy."""
    import bm25s  # noqa: F401  imported before the clock starts, as tantivy is

    from search.bundle.keywords import KEYWORD_FILES, KeywordIndex, read_keywords

    start = time.perf_counter()
    index = KeywordIndex.build(table)
    built = time.perf_counter() - start
    for name, write in index.writers().items():
        write(folder / name)
    start = time.perf_counter()
    loaded = read_keywords({name: folder / name for name in KEYWORD_FILES}, table.num_rows)
    load = time.perf_counter() - start
    times = common.timed_each(lambda text: loaded.search(text, 100), texts)
    return {"build_s": built, "mb": folder_bytes(folder) / 1e6, "load_s": load, "p50_ms": common.p50(times),
            "p95_ms": common.pct(times, 95), "index": loaded}


def bench_tantivy(table: pa.Table, texts: list[str], folder: Path) -> dict[str, float] | None:
    """tantivy: one text field of the three columns, default tokenizer, BM25, top 100 addresses per query."""
    try:
        import tantivy
    except ImportError:
        return None
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("text", stored=False)
    schema = builder.build()
    columns = [table.column(name).to_pylist() for name in table.column_names]
    start = time.perf_counter()
    index = tantivy.Index(schema, path=str(folder))
    writer = index.writer(heap_size=200_000_000, num_threads=1)
    for parts in zip(*columns, strict=True):
        writer.add_document(tantivy.Document(text=" ".join(parts)))
    writer.commit()
    writer.wait_merging_threads()
    built = time.perf_counter() - start
    start = time.perf_counter()
    index = tantivy.Index.open(str(folder))
    index.reload()
    searcher = index.searcher()
    load = time.perf_counter() - start
    times = common.timed_each(lambda text: searcher.search(index.parse_query(text, ["text"]), 100).hits, texts)
    return {"build_s": built, "mb": folder_bytes(folder) / 1e6, "load_s": load, "p50_ms": common.p50(times),
            "p95_ms": common.pct(times, 95)}


def fusion_ms(index: object, texts: list[str], n: int) -> float:
    """p50 of HybridRanker.rerank over a 100-row ANN answer (random unit vectors as the embeddings)."""
    from search.query.fusion import HybridRanker

    embeddings = common.clip_like_vectors(n, 512)
    ranker = HybridRanker(index, embeddings)
    vector = embeddings[0]
    rows = np.arange(100, dtype=np.int64)
    scores = np.round(embeddings[:100] @ vector, 6)
    return common.p50(common.timed_each(lambda text: ranker.rerank(text, vector, rows, scores), texts))


def main(argv: list[str] | None = None) -> int:
    """Build both indexes, print the table and the JSON line."""
    args = parse_args(argv)
    table, texts = synthetic_texts(args.n, args.seed), queries(args.queries, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-keywords-"))
    try:
        (work / "bm25s").mkdir()
        (work / "tantivy").mkdir()
        bm25s = bench_bm25s(table, texts, work / "bm25s")
        tantivy = bench_tantivy(table, texts, work / "tantivy")
        fusion = fusion_ms(bm25s.pop("index"), texts, args.n)
    finally:
        shutil.rmtree(work)
    print(f"keyword index, {args.n} synthetic item texts, {len(texts)} queries (top 100), on {common.machine()}")
    keys = ("build_s", "mb", "load_s", "p50_ms", "p95_ms")
    rows = [["bm25s (.npy, numpy query)", *(bm25s[key] for key in keys)]]
    if tantivy is not None:
        rows.append(["tantivy", *(tantivy[key] for key in keys)])
    common.print_table(["engine", "build s", "MB", "load s", "p50 ms", "p95 ms"], rows)
    print(f"fusion (HybridRanker.rerank, 100 ANN candidates): p50 {fusion:.3f} ms")
    result = {f"bm25s_{key}": round(bm25s[key], 4) for key in keys}
    result.update({f"tantivy_{key}": round(tantivy[key], 4) for key in keys} if tantivy else {})
    common.emit_json({"n": args.n, **result, "fusion_p50_ms": round(fusion, 4)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
