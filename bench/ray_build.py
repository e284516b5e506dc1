"""Ray Data build overhead: the same items through `build_index.py --ray` and the single-process build, one run.

    python bench/ray_build.py                  # 256 images, random-init ViT-B-32, local Ray instance (all cores)
    python bench/ray_build.py --n 64 --model demo

Both builds read the same parquet file in the Unsplash Lite schema whose URLs point at a loopback HTTP server
(384x256 photo-like JPEGs, as bench/build_throughput.py serves), with the same batch size, workers and shard size,
into fresh folders. Reported: Ray start-up (ray.init) apart, each build's wall time (model load, fetch, embed,
shards, hnswlib, checksums), and their ratio. Random weights have the real compute cost, so the ratio holds
for a trained ViT-B-32; the vectors differ between the two builds only because each process draws its own
random weights (with trained weights they agree within 1e-5, tests/test_ray_build.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.build_throughput import photo_jpeg
from tests.loopback import LoopbackServer
from tests.test_sources import write_unsplash_parquet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="images through each build")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--model", choices=("vit-b-32", "demo"), default="vit-b-32",
                        help="random-init ViT-B-32 (real cost) or the tiny demo model (a quick smoke run)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, rows: Path, out: Path):  # -> BuildConfig
    """The build both runs share (only `out` differs)."""
    from search.build.fetch import FetchConfig
    from search.build.pipeline import BuildConfig
    from search.build.sources import SourceConfig
    from search.config import REPO_ROOT, EncoderSpec

    spec = EncoderSpec("ViT-B-32", None) if args.model == "vit-b-32" else \
        EncoderSpec(f"local-dir:{REPO_ROOT / 'assets' / 'demo' / 'model'}", None)
    return BuildConfig(out=out, source=SourceConfig(data_files=str(rows)), encoder=spec, device="cpu",
                       batch_size=args.batch_size, workers=args.workers, progress=False,
                       fetch=FetchConfig(allow_private_hosts=True))  # the CDN twin is on loopback


def timed_builds(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Single-process build, then Ray start-up and the Ray build, over the same items; seconds of each."""
    import ray

    from search.build.pipeline import build_bundle
    from search.build.ray_build import RayOptions, build_bundle_on_ray

    bodies = [photo_jpeg(seed) for seed in range(64)]
    times: dict[str, float] = {}
    with LoopbackServer() as server:
        for number, body in enumerate(bodies):
            server.add(f"p{number}.jpg", body)
        urls = [(f"id{i:06d}", server.url(f"p{i % len(bodies)}.jpg") + f"?n={i}") for i in range(args.n)]
        rows = write_unsplash_parquet(folder / "rows.parquet", urls, row_group_size=256)
        start = time.perf_counter()
        single = build_bundle(build_config(args, rows, folder / "single"))
        times["single_s"] = time.perf_counter() - start
        started = not ray.is_initialized()
        start = time.perf_counter()
        if started:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        times["ray_init_s"] = time.perf_counter() - start
        try:
            start = time.perf_counter()
            on_ray = build_bundle_on_ray(build_config(args, rows, folder / "ray"), RayOptions())
            times["ray_s"] = time.perf_counter() - start
        finally:
            if started:
                ray.shutdown()
    if (single.count, single.info.failures) != (on_ray.count, on_ray.info.failures) or single.count != args.n:
        raise RuntimeError(f"the builds differ: {single.count} vs {on_ray.count} items of {args.n}")
    return times


def main(argv: list[str] | None = None) -> int:
    """Both builds, the lines and the JSON line."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        times = timed_builds(args, Path(tmp))
    ratio = times["ray_s"] / times["single_s"]
    print(f"Ray Data build vs single-process, {args.n} images, {args.model}, batch {args.batch_size}, "
          f"{args.workers} workers; {common.machine()}")
    print(f"single-process {times['single_s']:.1f} s ({args.n / times['single_s']:.2f} items/s); "
          f"--ray {times['ray_s']:.1f} s ({args.n / times['ray_s']:.2f} items/s) after ray.init "
          f"{times['ray_init_s']:.1f} s; ratio {ratio:.2f}")
    common.emit_json({key: round(value, 2) for key, value in times.items()} | {"ratio": round(ratio, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
