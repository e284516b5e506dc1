"""Start-up time: seconds from process start to the first answered query, for app.py's engine.

    python bench/startup.py                  # a 25 000-item bundle named for a random-init ViT-B-32
    python bench/startup.py --n 500 --runs 1

Each run is a fresh `python` process that imports app.py (gradio included), loads the bundle with
`search.web.startup.start_engine` (checksums, embeddings, hnswlib graph, metadata, the model the manifest names),
builds the Gradio UI and answers one text query (PyTorch's text tower while the ONNX one is being
prepared in the background; the time until that one serves is reported too). It does not bind a
port. The model's files are local: the bundle names a ViT-B-32 safetensors file (random weights, ~600 MB;
bundle and weights are cached by bench/bundles.py), so the run reads and loads real-size weights just as
with `laion2b_s34b_b79k` from the HF cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import cached_bundle

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import app
from search.web.startup import start_engine
from search.config import EngineConfig
t1 = time.perf_counter()
startup = start_engine(EngineConfig(index=sys.argv[1]))
assert not startup.is_demo, startup.notice
t2 = time.perf_counter()
app.build_app(startup)
t3 = time.perf_counter()
hits = startup.engine.search_text("a foggy forest at dawn", 10, -1.0)
assert len(hits) == 10
t4 = time.perf_counter()
answered = time.time()  # wall clock: the parent started its timer before this interpreter existed
while startup.engine.encoder.onnx_text is None and time.perf_counter() - t4 < 300:
    time.sleep(0.05)  # the ONNX text tower comes up in the background (exported, or read from the cache)
print(json.dumps({"answered": answered, "onnx_text": time.time() if startup.engine.encoder.onnx_text else None,
                  "import": t1 - t0, "load_engine": t2 - t1, "build_ui": t3 - t2, "first_query": t4 - t3}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=25_000, help="items in the bundle")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes; the median is reported")
    parser.add_argument("--random-weights", action="store_true",
                        help="no weights file: the model is created, not read (quick smoke runs)")
    return parser.parse_args(argv)


def one_run(bundle: Path, cache: Path) -> dict[str, float]:
    """Start a fresh process, wait for its first answer; the wall time includes interpreter start."""
    parts = common.run_fresh(CHILD, bundle, cache)
    onnx_text = parts.pop("onnx_text")
    return {**parts, "onnx_text": float("nan") if onnx_text is None else onnx_text - parts.pop("spawned")}


def main(argv: list[str] | None = None) -> int:
    """Write the bundle, time fresh start-ups, print the table and the JSON line."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = common.write_synthetic_bundle(Path(tmp) / "bundle", args.n) if args.random_weights \
            else cached_bundle(args.n)
        runs = [one_run(bundle, Path(tmp) / "cache") for _ in range(args.runs)]  # the first exports
    model = "random-init ViT-B-32" if args.random_weights else "ViT-B-32 from a local weights file"
    print(f"start-up, bundle of {args.n} items, {model}; {common.machine()}")
    keys = ["ready_s", "import", "load_engine", "build_ui", "first_query", "onnx_text"]
    common.print_table(["run", *keys], [[i + 1, *(run[key] for key in keys)] for i, run in enumerate(runs)])
    print("ready_s: process start to first answer (median of runs); then its parts, in seconds; onnx_text: "
          "process start to text queries on ONNX Runtime (run 1 exports it, later runs read the cache)")
    common.emit_json({"ready_s": round(common.p50([run["ready_s"] for run in runs]), 2),
                      "onnx_text_first_s": round(runs[0]["onnx_text"], 2),
                      "onnx_text_cached_s": round(common.p50([run["onnx_text"] for run in runs[1:] or runs]), 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
