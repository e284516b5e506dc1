"""Build throughput: items/s of the real build pipeline vs the model alone, random-init ViT-B-32.

    python bench/build_throughput.py                    # 512 images, loopback server, parquet source
    python bench/build_throughput.py --n 64 --model-n 16 --variants none

The pipeline run is `search.build.pipeline.build_bundle` over a parquet file in the Unsplash Lite schema whose
URLs point at a loopback HTTP server on this machine (384x256 JPEGs, the size Unsplash sends for
?w=384): streaming, fetch, safe decode, resize + crop (thread pool), to tensor + encode, shards. Its
rate is taken over `embed_items` (model loading and the final hnswlib build are reported apart). The model-only
rate is `ClipEncoder.encode_pixels` on pre-decoded tensors, same batch size. Variants (batch size,
threads, channels_last, bf16, int8) are measured on the same tensors with their cosine to fp32.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from tests.loopback import LoopbackServer
from tests.test_sources import write_unsplash_parquet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="images through the pipeline")
    parser.add_argument("--model-n", type=int, default=128, help="pre-decoded images for the model-only runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--variants", choices=("all", "none"), default="all", help="model-only variants")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per model variant")
    return parser.parse_args(argv)


def photo_jpeg(seed: int, size: tuple[int, int] = (384, 256)) -> bytes:
    """A photo-like JPEG (smooth colour field plus grain), ~20-40 KB like a ?w=384 Unsplash picture."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    field = Image.fromarray(small).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))
    grain = rng.normal(0, 12, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(field, np.float32) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def run_pipeline(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """One real build over the loopback server; returns timings of its phases."""
    from search.build import pipeline as build
    from search.build.fetch import FetchConfig
    from search.build.sources import SourceConfig
    from search.config import EncoderSpec

    phases: dict[str, float] = {}
    embed = build.embed_items

    def timed_embed(*a, **kw):  # the pipeline proper, without model loading or finalising
        start = time.perf_counter()
        counts = embed(*a, **kw)
        phases["embed_s"], phases["ok"] = time.perf_counter() - start, counts.ok
        return counts

    bodies = [photo_jpeg(seed) for seed in range(64)]
    with LoopbackServer() as server:
        for number, body in enumerate(bodies):
            server.add(f"p{number}.jpg", body)
        urls = [(f"id{i:06d}", server.url(f"p{i % len(bodies)}.jpg") + f"?n={i}") for i in range(args.n)]
        rows = write_unsplash_parquet(folder / "rows.parquet", urls, row_group_size=256)
        config = build.BuildConfig(out=folder / "out", source=SourceConfig(data_files=str(rows)),
                                   encoder=EncoderSpec("ViT-B-32", None), device="cpu", batch_size=args.batch_size,
                                   workers=args.workers, progress=False,
                                   fetch=FetchConfig(allow_private_hosts=True))  # the CDN twin is on loopback
        build.embed_items = timed_embed
        try:
            start = time.perf_counter()
            build.build_bundle(config)
            phases["total_s"] = time.perf_counter() - start
        finally:
            build.embed_items = embed
    phases["jpeg_kb"] = float(np.mean([len(b) for b in bodies]) / 1024)
    return phases


def model_tensors(encoder, count: int):
    """Pre-decoded, preprocessed pixels for the model-only runs."""
    images = [Image.open(io.BytesIO(photo_jpeg(seed))).convert("RGB") for seed in range(min(count, 64))]
    return encoder.preprocess_images([images[i % len(images)] for i in range(count)])


def rate(encode: Callable, pixels, batch_size: int) -> tuple[float, np.ndarray]:
    """Items/s of `encode` over `pixels` in batches (after one warm-up batch), and the vectors."""
    encode(pixels[:batch_size])
    start = time.perf_counter()
    vectors = np.concatenate([encode(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)])
    return len(pixels) / (time.perf_counter() - start), vectors


INT8 = "int8 dynamic (Linear; --precision int8)"


def variants(encoder, batch_size: int) -> dict[str, tuple[Callable, int]]:
    """Model-only variants: name -> (encode function, batch size)."""
    import torch

    def channels_last(pixels):
        return encoder.encode_pixels(pixels.contiguous(memory_format=torch.channels_last))

    def bf16(pixels):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder.encode_pixels(pixels)

    from search.model.quantised import GatedImageTower

    int8 = GatedImageTower(encoder).int8  # what build_index.py --precision int8 runs once the gate has passed

    return {"fp32 batch 8": (encoder.encode_pixels, 8), "fp32 batch 64": (encoder.encode_pixels, 64),
            "fp32 channels_last": (channels_last, batch_size), "bf16 autocast": (bf16, batch_size),
            INT8: (int8, batch_size)}


def model_rows(args: argparse.Namespace) -> tuple[float, list[list]]:
    """Model-only rate as the pipeline runs it, plus the variants with their cosine to fp32.

    Every variant is timed once per round, rounds alternating, and the median is kept: on a shared
    2-core machine one block can be slowed by a neighbour.
    """
    import torch

    encoder = common.random_vit_b32()
    pixels = model_tensors(encoder, args.model_n)
    threads = torch.get_num_threads()
    plain = f"fp32 batch {args.batch_size} (the pipeline's)"
    runs: dict[str, tuple[Callable, int, int]] = {plain: (encoder.encode_pixels, args.batch_size, threads)}
    if args.variants == "all":
        runs.update({name: (fn, batch, threads) for name, (fn, batch) in variants(encoder, args.batch_size).items()})
        if threads > 1:
            runs[f"fp32 batch {args.batch_size}, 1 thread"] = (encoder.encode_pixels, args.batch_size, 1)
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, (encode, batch, count) in runs.items():
            torch.set_num_threads(count)
            speed, vectors[name] = rate(encode, pixels, batch)
            speeds[name].append(speed)
    torch.set_num_threads(threads)
    base = vectors[plain]
    rows = [[name, runs[name][2], common.p50(speeds[name]), " ".join(f"{v:.1f}" for v in speeds[name]),
             float(np.min(np.sum(vectors[name] * base, axis=1)))] for name in runs]
    if INT8 in vectors:
        rows.append([f"  int8 gate on these {len(base)} pictures: {int8_gate(base, vectors[INT8]).summary()}",
                     None, None, None, None])
    return common.p50(speeds[plain]), rows


def int8_gate(reference: np.ndarray, candidate: np.ndarray):
    """The build's agreement gate (image to image, recall@10) for int8 vectors against fp32 ones."""
    from search.model.quantised import RECALL_K, agreement, exact_top_rows

    return agreement(exact_top_rows(reference, True)(reference, RECALL_K),
                     exact_top_rows(candidate, True)(reference, RECALL_K), reference, candidate)


def main(argv: list[str] | None = None) -> int:
    """Pipeline run, model-only runs, the table and the JSON line."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        phases = run_pipeline(args, Path(tmp))
    model_rate, rows = model_rows(args)
    pipeline_rate = phases["ok"] / phases["embed_s"]
    print(f"build throughput, random-init ViT-B-32, batch {args.batch_size}, {args.workers} workers; "
          f"{common.machine()}")
    print(f"pipeline: {int(phases['ok'])} of {args.n} images ({phases['jpeg_kb']:.0f} KB JPEGs) in "
          f"{phases['embed_s']:.1f} s = {pipeline_rate:.2f} items/s; whole build_bundle {phases['total_s']:.1f} s "
          "(+ model load, hnswlib build, checksums)")
    common.print_table(["model-only variant", "threads", "items/s (median)", "per round", "min cosine to fp32"],
                       rows)
    common.emit_json({"pipeline_items_per_s": round(pipeline_rate, 2), "model_items_per_s": round(model_rate, 2),
                      "ratio": round(pipeline_rate / model_rate, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
