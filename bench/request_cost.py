"""CPU cost of one "more like this" request at the edges of its parameters (the REST/Gradio API's worst cases).

    python bench/request_cost.py --n 40000          # synthetic 512-d bundle (bench/bundles.py), random ViT-B-32

What it measures: `SearchEngine.similar` (validation, retrieval, ranking, hits), or for a "text" case
`search_vector` with the item's vector as the text's and keyword fusion on, in process, one request at a time:
CPU seconds of the whole process (`time.process_time`, every thread) and wall seconds. No HTTP and no model
work: a stored vector is the query, so the figures are the ranking's own. A refused request (BadQueryError) is
reported as such, with its cost. Run it on two commits to compare them; the machine line says which CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import cached_bundle

CASES = [  # (label, k, threshold, options as the API takes them)
    ("plain k=12", 12, 0.0, {}),
    ("k=1000", 1000, -1.0, {}),
    ("k=1000 offset=10000", 1000, -1.0, {"offset": "10000"}),
    ("k=1000 offset=10000 sort=date", 1000, -1.0, {"offset": "10000", "sort": "date"}),
    ("k=48 collapse=0.05", 48, -1.0, {"collapse_radius": "0.05"}),
    ("k=1000 collapse=0", 1000, -1.0, {"collapse_radius": "0"}),
    ("k=1000 collapse=0.1", 1000, -1.0, {"collapse_radius": "0.1"}),
    ("k=1000 collapse=0.2", 1000, -1.0, {"collapse_radius": "0.2"}),
    ("k=1000 collapse=0.3", 1000, -1.0, {"collapse_radius": "0.3"}),
    ("k=1000 collapse=0.5", 1000, -1.0, {"collapse_radius": "0.5"}),
    ("k=1000 offset=10000 collapse=0", 1000, -1.0, {"offset": "10000", "collapse_radius": "0"}),
    ("k=990 offset=10 collapse=0.5", 990, -1.0, {"offset": "10", "collapse_radius": "0.5"}),
    ("text+keywords k=1000 offset=10000", 1000, -1.0, {"offset": "10000", "text": "red"}),
    ("text+keywords k=990 offset=10 collapse=0.5", 990, -1.0, {"offset": "10", "collapse_radius": "0.5",
                                                               "text": "red"}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40_000, help="bundle size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the best is shown)")
    args = parser.parse_args()

    from search.config import EngineConfig
    from search.errors import BadQueryError
    from search.query.engine import load_engine
    from search.query.options import SearchOptions
    from search.web.process_settings import pin_blas_threads

    pin_blas_threads()  # as the app does (search.web.startup.start_engine)
    engine = load_engine(EngineConfig(index=str(cached_bundle(args.n)), onnx_text=False))
    item = engine.bundle.catalog.hit(7, 1.0).id

    def request(k: int, threshold: float, params: dict[str, str]) -> list:
        params = dict(params)
        text = params.pop("text", None)
        options = SearchOptions.from_params(params)
        if text is None:
            return engine.similar(item, k, threshold, options)
        return engine.search_vector(engine.bundle.embeddings[7], k, threshold, options, text=text)

    rows = []
    for label, k, threshold, params in CASES:
        best_cpu = best_wall = float("inf")
        outcome = ""
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                outcome = f"{len(request(k, threshold, params))} hits"
            except BadQueryError:
                outcome = "refused"
            best_cpu = min(best_cpu, time.process_time() - cpu)
            best_wall = min(best_wall, time.perf_counter() - wall)
        rows.append((label, outcome, f"{best_cpu * 1000:.1f}", f"{best_wall * 1000:.1f}"))
    print(common.machine())
    common.print_table(("request (similar, threshold -1)", "outcome", "CPU ms", "wall ms"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
