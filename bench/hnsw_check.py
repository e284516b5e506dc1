"""index.hnsw from an untrusted bundle: structural check vs rebuilding the graph from embeddings.npy.

    python bench/hnsw_check.py                                  # 25 000 and 1 000 000 items, rebuild up to 100 000
    python bench/hnsw_check.py --sizes 25000 100000 --rebuild-max 100000

Each step runs in a fresh child process that reports its wall time and its peak RSS above the RSS it had
before the step (after imports and, where the step needs them, after loading embeddings.npy as the bundle
does). Steps: `check` (search/bundle/hnsw_check.py on the file), `check+vectors` (also compares every stored vector
with embeddings.npy), `load` (VectorIndex.load as a bundle calls it: the check, 1 024 sampled vectors compared,
hnswlib's load_index: what start-up pays),
`rebuild` (VectorIndex.build from embeddings.npy, option b). Sizes up to --rebuild-max get a real graph (its
build is the rebuild measurement); larger ones get a synthetic file with hnswlib's exact layout and level
distribution (random links: the check's cost depends on the layout, not on link quality), and their rebuild
is extrapolated from the largest measured one. Files are read warm (just written: in the page cache).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from search.bundle.hnsw_check import HEADER, check_hnsw_file
from search.bundle.hnsw_index import VectorIndex
from search.config import HnswParams

PARAMS = HnswParams(32, 200, 128)  # the defaults
STEPS = ("check", "check+vectors", "load", "rebuild")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rebuild-max", type=int, default=100_000,
                        help="build real graphs (and time the rebuild) up to this size; synthesize larger ones")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each check step (the fastest is shown)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (1M items need ~4.5 GB)")
    return parser.parse_args(argv)


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not ru_maxrss: after fork + exec it keeps the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(step: str, folder: Path, count: int, dim: int) -> dict[str, float]:
    """One step in this (fresh) process: seconds and peak RSS above the RSS before the step."""
    index_path, embeddings_path = folder / "index.hnsw", folder / "embeddings.npy"
    embeddings = np.load(embeddings_path) if step != "check" else None
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    if step == "check":
        check_hnsw_file(index_path, dim, count, PARAMS.m)
    elif step == "check+vectors":
        check_hnsw_file(index_path, dim, count, PARAMS.m, vectors=embeddings)
    elif step == "load":
        index = VectorIndex.load(index_path, dim, PARAMS, count=count, vectors=embeddings)
        assert len(index.query(np.ones(dim, np.float32), 10)[0]) == min(10, count)
    else:
        VectorIndex.build(embeddings, PARAMS).save(index_path)
    return {"s": time.perf_counter() - start, "peak_mb": memory_mb("VmHWM") - before}


def run_child(step: str, folder: Path, count: int, dim: int) -> dict[str, float]:
    """`child` in a new interpreter, so each step's peak RSS is its own."""
    done = subprocess.run([sys.executable, __file__, "--child", step, str(folder), str(count), str(dim)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{step} at {count} failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_synthetic_index(path: Path, vectors: np.ndarray, m: int, seed: int = 0) -> None:
    """A structurally valid hnswlib 0.8 file: real layout and level distribution, random in-range links."""
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    mult = 1 / math.log(m)
    levels = np.floor(-np.log(1.0 - rng.random(n)) * mult).astype(np.int64)  # hnswlib's getRandomLevel
    entry = int(np.argmax(levels))
    links0 = 4 * (1 + 2 * m)
    header = np.array([(0, n, n, links0 + 4 * dim + 8, links0 + 4 * dim, links0, int(levels[entry]), entry,
                        m, 2 * m, m, mult, PARAMS.ef_construction)], HEADER)
    record = np.dtype({"names": ["links", "ids", "vector", "label"],
                       "formats": ["<u4", ("<u4", (2 * m,)), ("<f4", (dim,)), "<u8"],
                       "offsets": [0, 4, links0, links0 + 4 * dim], "itemsize": links0 + 4 * dim + 8})
    with open(path, "wb") as out:
        out.write(header.tobytes())
        for start in range(0, n, 50_000):
            block = np.zeros(min(50_000, n - start), record)
            block["links"], block["ids"] = 2 * m, rng.integers(0, n, (len(block), 2 * m))
            block["vector"], block["label"] = vectors[start:start + len(block)], np.arange(start, start + len(block))
            out.write(block.tobytes())
        out.write(upper_region(levels, m, rng).tobytes())


def upper_region(levels: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Each element's linkListSize word and its full upper-level lists (neighbours present at that level)."""
    per_level = 1 + m
    sizes = 1 + levels * per_level
    words = np.zeros(int(sizes.sum()), "<u4")
    size_at = np.cumsum(sizes) - sizes
    words[size_at] = levels * 4 * per_level
    for level in range(1, int(levels.max()) + 1):
        owners = np.flatnonzero(levels >= level)
        starts = size_at[owners] + 1 + (level - 1) * per_level
        words[starts] = m
        words[starts[:, None] + np.arange(1, per_level)] = owners[rng.integers(0, len(owners), (len(owners), m))]
    return words


def prepare(folder: Path, count: int, dim: int, rebuild_max: int) -> dict[str, float] | None:
    """embeddings.npy and index.hnsw for `count` items; the measured rebuild when the graph is real."""
    vectors = common.clip_like_vectors(count, dim) if count else np.zeros((0, dim), np.float32)
    np.save(folder / "embeddings.npy", vectors)
    if count <= rebuild_max:
        del vectors
        return run_child("rebuild", folder, count, dim)
    write_synthetic_index(folder / "index.hnsw", vectors, PARAMS.m)
    return None


def measure(count: int, dim: int, rebuild_max: int, repeat: int, workdir: Path | None) -> dict[str, dict]:
    """Every step at one size."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        rebuild = prepare(folder, count, dim, rebuild_max)
        rows = {step: min((run_child(step, folder, count, dim) for _ in range(repeat)), key=lambda r: r["s"])
                for step in STEPS[:3]}
        rows["file_mb"] = {"s": 0.0, "peak_mb": (folder / "index.hnsw").stat().st_size / 2**20}
    if rebuild is not None:
        rows["rebuild"] = {**rebuild, "how": "measured"}
    return rows


def extrapolate(measured: dict[int, dict], count: int) -> dict[str, float | str]:
    """Rebuild at `count` from the largest measured size: time as n log n, memory linearly."""
    base = max(measured)
    ratio = count / base
    seconds = measured[base]["rebuild"]["s"] * ratio * math.log(count) / math.log(base)
    return {"s": seconds, "peak_mb": measured[base]["rebuild"]["peak_mb"] * ratio,
            "how": f"extrapolated from {base} (n log n)"}


def main(argv: list[str] | None = None) -> None:
    """Measure, print the table, end with one JSON line."""
    args = parse_args(argv)
    results: dict[int, dict] = {}
    for count in sorted(args.sizes):
        results[count] = measure(count, args.dim, args.rebuild_max, args.repeat, args.workdir)
        print(f"{count} items measured", file=sys.stderr, flush=True)
    built = {n: r for n, r in results.items() if "rebuild" in r}
    for count, rows in results.items():
        if "rebuild" not in rows and built:
            rows["rebuild"] = extrapolate(built, count)
    print(f"# {common.machine()}; dim {args.dim}, M {PARAMS.m}, ef_construction {PARAMS.ef_construction}")
    table = [(n, step, rows[step]["s"], rows[step]["peak_mb"], rows[step].get("how", ""))
             for n, rows in results.items() for step in STEPS if step in rows]
    table += [(n, "index.hnsw size (MB)", None, rows["file_mb"]["peak_mb"], "") for n, rows in results.items()]
    common.print_table(["items", "step", "seconds", "peak RSS +MB", "note"], table)
    print("# rebuild at 1 000 000 measured before: 547 s (docs/performance.md, bench/knn.py --n 1000000)")
    largest = results[max(results)]
    common.emit_json({"n": max(results), "check_s": largest["check"]["s"],
                      "check_peak_mb": largest["check"]["peak_mb"], "check_vectors_s": largest["check+vectors"]["s"],
                      "load_s": largest["load"]["s"], "rebuild_s": largest.get("rebuild", {}).get("s", 0.0)})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
