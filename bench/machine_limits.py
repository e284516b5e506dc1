"""The physical limit of a text query on this machine: weight bytes, memory bandwidth, fp32 and int8 compute rate.

    python bench/machine_limits.py                 # random-init ViT-B-32, 13-token query, 5 repeats
    python bench/machine_limits.py --repeats 3 --mb 256

A text query streams the text tower's weights once per layer pass: at batch 1 each weight is used once per token,
so a 12-token query does ~24 operations per weight byte at int8 (~6 at fp32) and the floor is whichever of
"weight bytes / memory bandwidth" and "operations / compute rate" is higher. Measured here, each the best of
`--repeats` (the machine is shared, and the best run is the one least disturbed):

- memory bandwidth: numpy summing a float32 array larger than the last-level cache, on 1 thread and on every core
  (each thread its own slice); the same on an array that fits in the last-level cache;
- compute rate: one ONNX Runtime MatMul (fp32) and MatMulInteger (uint8 x int8 -> int32) of the text tower's MLP
  shape (tokens x 512 x 2048) at batch sizes that make it compute-bound, on the same threads as a query;
- the text tower itself at fp32 and int8 (ONNX Runtime, the app's export and its quantisation), batch 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import CACHE

QUERY = "a red car parked on a city street at night"  # 12 tokens with its start and end tokens
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_line() -> str:
    """The CPU's model name and the vector extensions int8 and fp32 kernels pick from (from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return common.machine()
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    listed = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(listed.group(1).split()) if listed else set()
    present = [flag for flag in VECTOR_FLAGS if flag in flags] or ["none of " + "/".join(VECTOR_FLAGS)]
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({os.cpu_count()} cores; {', '.join(present)})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measurement; the best is kept")
    parser.add_argument("--mb", type=int, default=512, help="size of the array the DRAM bandwidth is read from")
    parser.add_argument("--cache-mb", type=int, default=8, help="size of the array that fits in the cache")
    parser.add_argument("--onnx-cache", type=Path, default=CACHE / "onnx",
                        help="where the text tower's export is kept between runs (checked on load, as the app does)")
    return parser.parse_args(argv)


def read_bandwidth(size_mb: int, threads: int, repeats: int) -> float:
    """GB/s of summing a float32 array of `size_mb`, split over `threads` (numpy releases the GIL)."""
    data = np.ones(size_mb * 2**20 // 4, np.float32)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def _matmul_model(path: Path, rows: int, integer: bool) -> None:
    """A one-node ONNX model: (rows x 512) times a 512 x 2048 weight, fp32 MatMul or uint8 x int8 MatMulInteger."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (512, 2048), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x, y = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = numpy_helper.from_array(rng.standard_normal((512, 2048)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x, y = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("x", x, [rows, 512])],
                              [helper.make_tensor_value_info("y", y, [rows, 2048])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what every supported ONNX Runtime reads
    onnx.save(model, str(path))


def compute_rate(folder: Path, integer: bool, threads: int, repeats: int, rows: int = 512) -> float:
    """G multiply-adds x 2 per second (GOP/s) of ONNX Runtime's MatMul(Integer) at `rows` x 512 x 2048."""
    import onnxruntime

    path = folder / f"mm-{'int8' if integer else 'fp32'}.onnx"
    _matmul_model(path, rows, integer)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(1).integers(0, 256, (rows, 512), dtype=np.uint8) if integer
         else np.random.default_rng(1).standard_normal((rows, 512)).astype(np.float32))
    best = min(common.timed(lambda: session.run(None, {"x": x}), 20 * repeats, warmup=5))
    return 2 * rows * 512 * 2048 / (best / 1000) / 1e9


def text_tower_figures(folder: Path, repeats: int) -> dict[str, Any]:
    """Weight bytes streamed per query, operations per query, and batch-1 milliseconds of both towers."""
    from search.model.encoder import trim_tokens
    from search.model.onnx_text import load_int8_text, load_onnx_text

    encoder = common.random_vit_b32()
    fp32 = load_onnx_text(encoder, folder)
    int8 = load_int8_text(encoder, fp32)
    model = encoder.model
    # Weights every token multiplies with: the transformer's and the projection's matrices (the token
    # embedding is a lookup of 13 rows; norms and biases are a rounding error).
    weights = sum(p.numel() for n, p in model.transformer.named_parameters() if p.dim() == 2)
    weights += model.text_projection.numel()
    tokens = trim_tokens(encoder.tokenizer([QUERY])).numpy()
    times = {name: common.p50(common.timed(lambda tower=tower: tower(tokens), 30 * repeats, warmup=5))
             for name, tower in (("fp32", fp32), ("int8", int8))}
    return {"weights": weights, "tokens": tokens.shape[1], "ops": 2 * weights * tokens.shape[1],
            "fp32_ms": times["fp32"], "int8_ms": times["int8"]}


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and the JSON line."""
    import torch

    args = parse_args(argv)
    threads = torch.get_num_threads()
    dram = {count: read_bandwidth(args.mb, count, args.repeats) for count in sorted({1, threads})}
    cache = read_bandwidth(args.cache_mb, threads, args.repeats * 20)
    with tempfile.TemporaryDirectory() as tmp:
        rates = {kind: compute_rate(Path(tmp), kind == "int8", threads, args.repeats) for kind in ("fp32", "int8")}
    tower = text_tower_figures(args.onnx_cache, args.repeats)
    print(f"physical limit of a text query; {cpu_line()}; {threads} threads; best of {args.repeats} runs "
          "(shared machine)")
    rows = []
    for kind, width in (("fp32", 4), ("int8", 1)):
        weight_mb = tower["weights"] * width / 1e6
        memory_ms = weight_mb / 1e3 / dram[threads] * 1e3
        compute_ms = tower["ops"] / (rates[kind] * 1e9) * 1e3
        floor = max(memory_ms, compute_ms)
        rows.append([kind, round(weight_mb, 1), round(memory_ms, 2), round(compute_ms, 2),
                     round(tower[f"{kind}_ms"], 2), round(tower[f"{kind}_ms"] / floor, 1)])
    common.print_table(["text tower", "weight MB/query", "memory floor ms", "compute floor ms", "measured ms",
                        "measured / floor"], rows)
    print(f"DRAM read bandwidth {', '.join(f'{bw:.1f} GB/s on {n} thread(s)' for n, bw in dram.items())}; "
          f"in-cache ({args.cache_mb} MB) {cache:.1f} GB/s; MatMul 512x512x2048 on {threads} threads: fp32 "
          f"{rates['fp32']:.0f} GFLOP/s, int8 {rates['int8']:.0f} GOP/s; {tower['weights'] / 1e6:.1f} M weights x "
          f"{tower['tokens']} tokens = {tower['ops'] / 1e9:.2f} G operations per query")
    common.emit_json({"dram_gbs": round(dram[threads], 2), "cache_gbs": round(cache, 1),
                      "fp32_gops": round(rates["fp32"], 1), "int8_gops": round(rates["int8"], 1),
                      "fp32_ms": round(tower["fp32_ms"], 2), "int8_ms": round(tower["int8_ms"], 2),
                      "weights_m": round(tower["weights"] / 1e6, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
