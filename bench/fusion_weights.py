"""Keyword-fusion weight sweep on place galleries (tests/place_gallery.py): R@5 and nDCG@10, CLIP vs hybrid.

    python bench/fusion_weights.py                  # seeds 515151-515154, weights 2, 3, 4
    python bench/fusion_weights.py --weights 1 3 --seeds 515151
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.relevance import bundle_rankers, compare


def main(argv: list[str] | None = None) -> int:
    """Build a gallery per seed, print one line per seed and query kind, then the JSON line."""
    from search.bundle.store import Bundle
    from search.model.encoder import ClipEncoder
    from tests.conftest import DEMO_SPEC
    from tests.place_gallery import TUNING_SEED, write_place_gallery

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[TUNING_SEED + i for i in range(4)])
    parser.add_argument("--weights", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    parser.add_argument("--count", type=int, default=240)
    args = parser.parse_args(argv)
    encoder, result = ClipEncoder.load(DEMO_SPEC), {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="fusion-") as folder:
            gallery = write_place_gallery(Path(folder) / "b", encoder, args.count, seed)
            bundle = Bundle.load(gallery.root)  # everything it needs is in memory once loaded
        rankers = {"clip": bundle_rankers(bundle)["clip"]}
        for weight in args.weights:
            rankers[f"w{weight:g}"] = bundle_rankers(bundle, weight=weight)["hybrid"]
        for kind, queries in gallery.queries().items():
            scores = compare(queries, encoder.encode_text(list(queries)), gallery.ids, rankers)
            print(seed, kind, " ".join(f"{name}: R@5 {m['r5']:.3f} nDCG@10 {m['ndcg10']:.3f}"
                                       for name, m in scores.items()))
            result.update({f"{seed}_{kind}_{name}_r5": round(m["r5"], 4) for name, m in scores.items()})
    common.emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
