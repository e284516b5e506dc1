"""Memory and start-up at scale: RSS by part, and process start to first answer, for 25 k and 1 M items.

    python bench/memory.py                       # 25 000 and 1 000 000 items (bundles cached: bench/bundles.py)
    python bench/memory.py --n 25000 --no-cold   # quicker

Each run is a fresh process doing what app.py does at start-up (imports gradio,
`search.web.startup.start_engine`: checksums, embeddings, metadata, hnswlib graph, the ViT-B-32 the bundle names,
read from a local weights file), then one
text query and one "more like this". The ONNX text tower is left off (`onnx_text=False`): it adds ~250 MB and a
background export, the same for any bundle size. Every part of the load is timed and its memory read from
/proc/self/status around it: RssAnon (the process's own heap: graph, Python objects, model) apart from RssFile
(file pages mapped and touched: the memory-mapped embeddings, shared libraries). Page cache that a part only
read() through is not in either: it is the kernel's, reclaimable, and shared.

Three runs per size, in this order:
- first: an empty cache folder, so every file is hashed (a first start after a download);
- restart: the same cache folder, so the verification record spares the hashing;
- both "cold" (default: each bundle file and the weights file dropped from the page cache first, with
  posix_fadvise, so they come from disk) and one restart "warm" (files already in the page cache);
  with --no-cold, a first start and a restart, both warm.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import cached_bundle, cached_weights

CHILD = r"""
import json, sys, time
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
stages = []
def timed(owner, attr, label):
    original = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        before, start = status(), time.perf_counter()
        result = original(*args, **kwargs)
        stages.append({"stage": label, "s": time.perf_counter() - start,
                       **{f"d_{k}": v - before[k] for k, v in status().items() if k != "VmHWM"}})
        return result
    setattr(owner, attr, wrapper)
t0 = time.perf_counter()
import app
from search.web.startup import start_engine
import search.bundle.store, search.query.engine, search.bundle.hnsw_index, search.bundle.metadata
from search.config import EngineConfig
t1 = time.perf_counter()
after_import = status()
timed(search.query.engine.Bundle, "load", "bundle, all parts")
timed(search.bundle.store, "verify_files", "  sha256 of the files")
timed(search.bundle.store, "read_embeddings", "  embeddings.npy (checked, mapped)")
timed(search.bundle.store, "load_catalog", "  catalog (read, built, freed pages returned)")
timed(search.bundle.metadata, "read_metadata", "    metadata.parquet -> Arrow")
timed(search.bundle.metadata, "ItemCatalog", "    ItemCatalog (item columns)")
timed(search.bundle.store, "read_keywords", "  keyword index")
timed(search.bundle.hnsw_index, "check_hnsw_file", "  index.hnsw structural check")
timed(search.bundle.hnsw_index.VectorIndex, "load", "  index.hnsw check + hnswlib load")
timed(search.query.engine.ClipEncoder, "load", "model (ViT-B-32 weights)")
startup = start_engine(EngineConfig(index=sys.argv[1], onnx_text=False))
assert not startup.is_demo, startup.notice
hits = startup.engine.search_text("a foggy forest at dawn", 10, -1.0)
assert len(hits) == 10
answered = time.time()
similar = startup.engine.similar(hits[0].id, 10, -1.0)
assert len(similar) == 10
print(json.dumps({"answered": answered, "import_s": t1 - t0, "after_import": after_import,
                  "after_answer": status(), "stages": stages}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[25_000, 1_000_000], help="bundle sizes")
    parser.add_argument("--no-cold", dest="cold", action="store_false",
                        help="leave the page cache alone (every run warm)")
    return parser.parse_args(argv)


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (clean pages only: nothing else on the machine is touched)."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def one_run(bundle: Path, cache: Path, cold: bool) -> dict:
    """A fresh process from spawn to its first answer; its stage table and memory."""
    if cold:
        evict([path for path in bundle.iterdir() if path.is_file()] + [cached_weights()])
    return common.run_fresh(CHILD, bundle, cache)


def report(n: int, label: str, run: dict) -> dict:
    """Print one run's stage table; the summary figures of the run."""
    print(f"\n{n} items, {label}: process start to first answer {run['ready_s']:.2f} s (imports "
          f"{run['import_s']:.2f} s, RSS after imports {run['after_import']['VmRSS']:.0f} MB)")
    rows = [[s["stage"], s["s"], s["d_VmRSS"], s["d_RssAnon"], s["d_RssFile"]] for s in run["stages"]]
    common.print_table(["part", "seconds", "+RSS MB", "+RssAnon MB", "+RssFile MB"], rows)
    end = run["after_answer"]
    parts = collections.defaultdict(lambda: {"s": float("nan"), "d_VmRSS": float("nan")},
                                    {s["stage"].strip(): s for s in run["stages"]})  # a part renamed: nan
    bundle = parts["bundle, all parts"]
    catalog = parts["catalog (read, built, freed pages returned)"]["d_VmRSS"]
    print(f"after the first answer and one 'more like this': RSS {end['VmRSS']:.0f} MB (RssAnon "
          f"{end['RssAnon']:.0f}, RssFile {end['RssFile']:.0f}), peak {end['VmHWM']:.0f} MB")
    return {"n": n, "run": label, "ready_s": round(run["ready_s"], 2), "rss_mb": round(end["VmRSS"]),
            "peak_mb": round(end["VmHWM"]), "bundle_mb": round(bundle["d_VmRSS"]),
            "bundle_kb_per_item": round(bundle["d_VmRSS"] * 1024 / n, 3),
            "catalog_kb_per_item": round(catalog * 1024 / n, 3),
            "keywords_kb_per_item": round(parts["keyword index"]["d_VmRSS"] * 1024 / n, 3),
            "model_mb": round(parts["model (ViT-B-32 weights)"]["d_VmRSS"]),
            "sha256_s": round(parts["sha256 of the files"]["s"], 2)}


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the bundles, time the runs, print the tables and the JSON line."""
    args = parse_args(argv)
    print(f"memory and start-up; {common.machine()}")
    summary = []
    for n in args.n:
        bundle = cached_bundle(n)
        with tempfile.TemporaryDirectory() as tmp:
            plan = [("first start (hashes), cold", True), ("restart (record), cold", True),
                    ("restart (record), warm", False)] if args.cold else \
                [("first start (hashes), warm", False), ("restart (record), warm", False)]
            for label, cold in plan:
                summary.append(report(n, label, one_run(bundle, Path(tmp), cold)))
    print()
    common.print_table(list(summary[0]), [list(row.values()) for row in summary])
    print("bundle_mb: RSS added by Bundle.load (graph + catalog + mapped rows touched); catalog_kb_per_item: "
          "metadata.parquet read, ItemCatalog built and the freed pages returned; keywords_kb_per_item: the BM25 "
          "index; model_mb: ClipEncoder.load")
    common.emit_json({"runs": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
