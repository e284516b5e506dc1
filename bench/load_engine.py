"""The engine alone, as bench/load_test.py's baseline: the same requests as the load generator, no HTTP.

Run by bench/load_test.py as a process of its own with the server's environment (bundle, threads, limiter size,
CPUs). It loads the engine as app.py does, waits for the ONNX text tower, prints `ready`, then reads commands
`MIX SECONDS CLIENTS` from stdin and answers each with one JSON line: requests/s and p50 (ms) of
min(CLIENTS, limiter slots) threads, each calling the engine back to back with requests drawn like the generator's.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any


def apply_bench_env() -> None:
    """BENCH_CPUS pins this process (before torch starts its threads); BENCH_SLOTS sizes the shared limiter."""
    if os.environ.get("BENCH_CPUS"):
        os.sched_setaffinity(0, {int(cpu) for cpu in os.environ["BENCH_CPUS"].split(",")})
    if os.environ.get("BENCH_SLOTS"):  # replaced before any engine takes the process-wide limiter
        from search.model import limits

        limits._SHARED = limits.WorkLimiter(int(os.environ["BENCH_SLOTS"]))


def engine_call(engine: Any, images: list[bytes], ids: list[str]) -> Any:
    """A function (kind, rng) -> one engine call, with arguments drawn as the generator draws them."""
    from bench.load_gen import QUERIES, REPEATED, THRESHOLDS, TOP_KS, unique_numbers

    numbers = unique_numbers()  # next() on itertools.count is atomic under the GIL

    def call(kind: str, rng: random.Random) -> None:
        k, threshold = rng.choice(TOP_KS), rng.choice(THRESHOLDS)
        if kind == "text":
            engine.search_text(rng.choice(REPEATED), k, threshold)
        elif kind == "text-unique":
            engine.search_text(f"{rng.choice(QUERIES)} number {next(numbers)}", k, threshold)
        elif kind == "image":
            engine.search_image(rng.choice(images), k, threshold)
        elif kind == "similar":
            engine.similar(rng.choice(ids), k, threshold)

    return call


def block(call: Any, mix: dict[str, float], threads: int, seconds: float) -> dict[str, float]:
    """`threads` threads calling back to back for `seconds`: requests/s and p50 latency (ms)."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def work(worker: int) -> None:
        rng, kinds, weights = random.Random(worker), list(mix), list(mix.values())
        while time.perf_counter() < stop:
            start = time.perf_counter()
            call(rng.choices(kinds, weights)[0], rng)
            latencies.append((time.perf_counter() - start) * 1000)  # list.append is atomic under the GIL

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    span, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    return {"rps": len(latencies) / span, "p50_ms": sorted(latencies)[len(latencies) // 2], "cpu_pct": 100 * cpu / span}


def main() -> int:
    """Load, warm up, then answer `MIX SECONDS CLIENTS` commands until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...`
    apply_bench_env()
    from bench.load_gen import MIXES, REPEATED, query_images
    from search.config import EngineConfig
    from search.model.limits import shared_limiter
    from search.web.startup import start_engine

    engine = start_engine(EngineConfig.from_env()).engine
    while engine.encoder.onnx_text is None:  # as the server: text queries on ONNX Runtime
        time.sleep(0.2)
    ids = [hit.id for hit in engine.search_text(REPEATED[0], 200, -1.0)]
    call = engine_call(engine, query_images(), ids)
    for kind in ("text", "image", "similar"):
        call(kind, random.Random(-1))
    print("ready", flush=True)
    for line in sys.stdin:
        mix, seconds, clients = line.split()
        threads = min(int(clients), shared_limiter().slots)  # more threads than slots would only wait
        result = block(call, MIXES[mix], threads, float(seconds))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
