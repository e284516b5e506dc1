"""Shared helpers for the benchmark scripts: repo path, timing, tables, synthetic data and models."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

# Realistic search-box queries of varied length (4-16 tokens with start/end).
QUERIES = (
    "a foggy forest at dawn", "a red car parked on a city street at night", "mountains", "a dog on the beach",
    "people laughing around a table in a cozy cafe", "aerial view of a winding river through green fields",
    "snow", "a cup of coffee next to an open book", "sunset over the ocean with silhouettes of palm trees",
    "a cat sleeping on a windowsill", "an old wooden boat on a calm lake", "neon signs in the rain",
    "a bowl of fresh fruit on a kitchen counter", "a lone tree in a wheat field under a stormy sky",
    "skyscrapers reflected in glass", "a child flying a kite", "desert dunes", "autumn leaves on a path",
    "a bicycle leaning against a brick wall", "close-up of a bee on a yellow flower",
)


def machine() -> str:
    """A one-line description of the CPU this ran on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> list[float]:
    """Wall-clock milliseconds of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def timed_each(fn: Callable[[Any], Any], args: Sequence[Any], warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Milliseconds of one call per argument (after `warmup` calls on the first argument), by `clock` (wall time;
    time.thread_time: this thread's CPU time, which a busy machine's waits for a core leave out)."""
    for _ in range(warmup):
        fn(args[0])
    times = []
    for arg in args:
        start = clock()
        fn(arg)
        times.append((clock() - start) * 1000)
    return times


def in_blocks(paths: dict[str, Callable[[Any], Any]], args: Sequence[Any], rounds: int,
              clock: Callable[[], float] = time.perf_counter, warm_every: bool = False) -> dict[str, list[float]]:
    """Milliseconds per path and argument; each round times every path over all `args` in turn.

    Blocks, not call-by-call alternation: numpy's BLAS threads and torch's OpenMP threads spin for a while
    after each call, so a call right after the other library's is slowed by ~100 ms on 2 cores. Alternating
    blocks still spreads a noisy neighbour over every path alike. Each block starts with 2 untimed calls.
    `warm_every`: first every path over every argument, untimed: for data far beyond the caches (a 1M graph is
    2.3 GB), where the first path timed would otherwise pay for bringing in the pages the others then reuse.
    """
    if warm_every:
        for fn in paths.values():
            for arg in args:
                fn(arg)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            times[name] += timed_each(fn, args, warmup=2, clock=clock)
    return times


def pct(times: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of a list of timings."""
    return float(np.percentile(np.asarray(times), q))


def p50(times: Sequence[float]) -> float:
    """Median."""
    return float(statistics.median(times))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def emit_json(result: dict[str, Any]) -> None:
    """The one final machine-readable line every bench script ends with."""
    print(json.dumps(result), flush=True)


def clip_like_vectors(n: int, dim: int = 512, seed: int = 0, clusters: int | None = None) -> np.ndarray:
    """Clustered, anisotropic unit vectors shaped like CLIP image embeddings.

    CLIP embeddings share a common direction (the "cone": mean cosine ~0.5), vary mostly along a few
    directions (a decaying spectrum) and come in tight groups (near-duplicates, series of one scene).
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, n // 200)
    spectrum = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)  # anisotropic scales
    common = rng.normal(size=dim).astype(np.float32)
    common *= 14.0 / np.linalg.norm(common)  # mean cosine of unrelated items ~0.4, as with CLIP
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) * spectrum * 6.0 + common
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for start in range(0, n, step):  # chunks keep the peak memory at 1M items modest
        m = min(step, n - start)
        owner = rng.integers(0, clusters, m)
        noise = rng.normal(size=(m, dim)).astype(np.float32) * spectrum * rng.uniform(2.0, 5.0, (m, 1)).astype(
            np.float32)
        out[start:start + m] = centres[owner] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def clip_like_queries(base: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Held-out queries: stored items perturbed, so they fall among the clusters but match no item exactly."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), count)]
    spectrum = (1.0 / np.sqrt(np.arange(1, base.shape[1] + 1))).astype(np.float32)
    queries = picks + rng.normal(size=picks.shape).astype(np.float32) * spectrum * 0.08
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by cosine (inputs unit-length), best first: the numpy baseline."""
    scores = queries @ base.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def random_vit_b32(threads: int = 0) -> Any:
    """A ClipEncoder over ViT-B-32 with random weights: the real compute, no download."""
    import open_clip
    import torch

    from search.config import EncoderSpec
    from search.model.encoder import ClipEncoder, configure_threads

    configure_threads(threads)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), EncoderSpec("ViT-B-32", None))


SYNTHETIC_COUNTRIES = 50  # country k holds a share proportional to 1/(k+1): Zipf-like, as real photo places


def synthetic_attributes(n: int, seed: int = 7) -> dict[str, Any]:
    """Unsplash-like optional columns (search/bundle/attributes.py) for `n` items, deterministic.

    Shares a filter keeps: landscape ~60 %, portrait ~30 %, square ~10 %; colour "blue" ~10 %, "red" ~1 %;
    featured ~5 %; country-000 ~22 %, country-009 ~2.2 %; each of 997 photographers ~0.1 %; downloads
    log-normal, so `min_downloads` at a quantile keeps any share.
    """
    from search.bundle.colour import PALETTE

    rng = np.random.default_rng(seed)
    shape = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    width = np.where(shape == 0, 4000, np.where(shape == 1, 2667, 3000))
    height = np.where(shape == 0, 2667, np.where(shape == 1, 4000, 3000))
    start = np.datetime64("2014-01-01T00:00:00", "s").astype(np.int64)
    seconds = start + rng.integers(0, 10 * 365 * 86_400, n)
    weights = 1.0 / np.arange(1, SYNTHETIC_COUNTRIES + 1)
    country = rng.choice(SYNTHETIC_COUNTRIES, n, p=weights / weights.sum())
    colours = list(PALETTE)
    share = np.full(len(colours), (1.0 - 0.10 - 0.01) / (len(colours) - 2))
    share[colours.index("blue")], share[colours.index("red")] = 0.10, 0.01
    colour = rng.choice(len(colours), n, p=share)
    downloads = np.floor(rng.lognormal(5.0, 1.5, n)).astype(np.int64)
    return {
        "width": width, "height": height,
        "date": np.datetime_as_string(seconds.astype("datetime64[s]")).astype(object),
        "featured": rng.random(n) < 0.05, "photographer_username": [f"user{row % 997:04d}" for row in range(n)],
        "country": [f"country-{code:03d}" for code in country], "city": [f"city-{code:03d}" for code in country],
        "camera_make": np.asarray(["Canon", "Nikon", "SONY", "FUJIFILM"])[rng.integers(0, 4, n)],
        "downloads": downloads, "views": downloads * 40, "colour": [colours[code] for code in colour],
        "colour_hex": ["#{:02x}{:02x}{:02x}".format(*PALETTE[colours[code]]) for code in colour],
    }


def synthetic_metadata(n: int) -> Any:
    """The metadata table of a synthetic bundle: the required columns and `synthetic_attributes`."""
    import pyarrow as pa

    ids = [f"photo-{row:07d}" for row in range(n)]
    return pa.table({
        "id": ids,
        "image": [f"https://images.example/{i}.jpg?w=480" for i in ids],
        "page_url": [f"https://unsplash.com/photos/{i}" for i in ids],
        "description": [f"synthetic picture {row}" for row in range(n)],
        "photographer": [f"Person {row % 997}" for row in range(n)],
        **{name: pa.array(values) for name, values in synthetic_attributes(n).items()},
    })


def write_synthetic_bundle(root: Path, n: int, dim: int = 512, pretrained: str | None = None) -> Path:
    """A bundle of `n` CLIP-like vectors with Unsplash-like metadata for ViT-B-32 (random-init by default)."""
    from search.bundle.store import BundleInfo, write_bundle
    from search.config import EncoderSpec

    metadata = synthetic_metadata(n)
    write_bundle(root, clip_like_vectors(n, dim), metadata, BundleInfo(EncoderSpec("ViT-B-32", pretrained),
                                                                        source="synthetic"))
    return root


def run_fresh(child: str, bundle: Path, cache: Path) -> dict[str, Any]:
    """Run `child` (Python source) on `bundle` in a fresh interpreter with its own SEARCH_CACHE_DIR; its last JSON
    line, with "ready_s": seconds from just before the spawn ("spawned", wall clock) to the "answered" time it
    reports."""
    import subprocess

    start = time.time()
    done = subprocess.run([sys.executable, "-c", child, str(bundle)], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, "SEARCH_CACHE_DIR": str(cache)})
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["ready_s"] = result.pop("answered") - start
    result["spawned"] = start
    return result
