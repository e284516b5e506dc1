"""Batched model work, off against on, side by side in one run: capacity, lone-visitor p50, errors, RSS growth.

    python bench/batching.py                                         # random-init ViT-B-32, 25k items, REST
    python bench/batching.py --mixes text-unique --clients 1,8,16,32 --rounds 2 --seconds 10

Two servers, one with SEARCH_BATCH=off and one with SEARCH_BATCH=on (bench/load_test.py's server: app.py pinned
to --server-cpus, the generator to --generator-cpus), both up for the whole run; for each mix, round and client
count, a run against each in turn, so the machine's noise of the moment hits both alike (the idle one sleeps).
Capacity is the highest requests/s with p95 <= 250 ms; the ratio on/off is taken within a round. Prints a table
per mix and one JSON line. Also the lone visitor's p50 (1 client) and the RSS growth of each run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common, load_test

MODES = ("off", "on")


def lone_overhead_ms(calls: int = 2000) -> dict[str, float]:
    """Median time of one lone call through the Batcher and through the unbatched path, the model a no-op: what
    batching adds to a lone visitor's query."""
    import statistics

    from search.model.batching import Batcher, Unbatched
    from search.model.limits import WorkLimiter

    limiter = WorkLimiter()
    paths = {"batched": Batcher(lambda items: items, limiter, 16), "unbatched": Unbatched(lambda items: items, limiter)}
    medians = {}
    for name, call in paths.items():
        times = []
        for number in range(calls):
            start = time.perf_counter()
            call(number)
            times.append((time.perf_counter() - start) * 1000)
        medians[name] = statistics.median(times)
    return {"lone_batched_ms": round(medians["batched"], 4), "lone_unbatched_ms": round(medians["unbatched"], 4)}


def model_ceiling(args: argparse.Namespace, export: Path, batches: tuple[int, ...] = (1, 4, 8, 16),
                  repeats: int = 30) -> dict[str, float]:
    """The text tower alone, the servers' fp32 ONNX export (`export`) on the servers' CPUs and threads: ms per query
    at each batch size (median of `repeats` calls, 13 tokens a query, as bench/query_latency.py's). What batching
    can buy is at most batch 1's time over the best batch's: the HTTP, tokenising and index work per request do not
    shrink."""
    import numpy as np

    from search.model.onnx_text import OnnxTextTower

    os.sched_setaffinity(0, load_test.cpus(args.server_cpus))
    tower = OnnxTextTower(export, args.threads or len(load_test.cpus(args.server_cpus)))
    tokens = np.random.default_rng(0).integers(1, 49_000, size=(max(batches), 13))
    per_query = {}
    for batch in batches:  # one warm-up call: the first run of a shape plans its kernels
        times = common.timed(lambda batch=batch: tower(tokens[:batch]), repeats, warmup=1)
        per_query[f"batch_{batch}_ms_per_query"] = round(common.p50(times) / batch, 2)
    best = min(per_query.values())
    return {**per_query, "ceiling": round(per_query["batch_1_ms_per_query"] / best, 2)}


def lone_visitor(args: argparse.Namespace, blocks: int = 8, per_block: int = 40) -> tuple[dict[str, float], Path]:
    """One engine in this process, as the servers run it (bundle, model, CPUs, threads), its text encodes through
    the Batcher and through the unbatched path in alternating blocks of new text queries, one at a time: what
    batching costs a lone visitor without HTTP or a second server on the CPU, and the model call's share of a query
    (what a batch can make cheaper). Also the path of the engine's fp32 text tower export."""
    import random
    import statistics

    os.environ.update(load_test.environment(args, load_test.bundle_path(args)))
    from bench.load_engine import apply_bench_env
    from bench.load_gen import QUERIES

    apply_bench_env()  # pinned to the servers' CPUs
    from search.config import EngineConfig
    from search.model.batching import MAX_TEXT_BATCH, Batcher, Unbatched
    from search.web.startup import start_engine

    engine = start_engine(EngineConfig.from_env()).engine
    while engine.encoder.onnx_text is None or engine.encoder.onnx_text.decision is None:  # as the servers
        time.sleep(0.2)
    model_ms: list[float] = []

    def encode(texts: list[str]) -> object:
        start = time.perf_counter()
        vectors = engine.encoder.encode_text(texts)
        model_ms.append((time.perf_counter() - start) * 1000)
        return vectors

    paths = {"on": Batcher(encode, engine.limiter, MAX_TEXT_BATCH), "off": Unbatched(encode, engine.limiter)}
    rng, times = random.Random(0), {name: [] for name in paths}
    for block in range(blocks + 1):  # block 0 warms up, unrecorded
        for name in list(paths)[:: 1 if block % 2 else -1]:
            engine._text_work = paths[name]
            for number in range(per_block):
                start = time.perf_counter()
                engine.search_text(f"{rng.choice(QUERIES)} number {block} {number}", 10, 0.0)
                if block:
                    times[name].append((time.perf_counter() - start) * 1000)
    query_ms = statistics.median(times["on"] + times["off"])
    export = engine.encoder.onnx_text.path.with_name("text_tower.onnx")  # the fp32 one, whichever tower serves
    return {**{f"lone_{name}_{stat}_ms": round(fn(times[name]), 2) for name in paths
               for stat, fn in (("p50", statistics.median), ("mean", statistics.mean))},
            "model_share": round(statistics.median(model_ms) / query_ms, 2)}, export


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the server options are load_test's."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixes", default="text-unique,mixed", help="comma-separated load_gen mixes")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs per mix")
    parser.add_argument("--lone-only", action="store_true", help="no servers: the in-process lone visitor and the "
                        "text tower by batch size only")
    own, rest = parser.parse_known_args(argv)
    defaults = ["--bundle", "synthetic", "--clients", "1,4,8,16,32,64", "--seconds", "10"]
    server = load_test.parse_args(defaults + rest)
    return argparse.Namespace(**vars(server), mixes=own.mixes.split(","), rounds=own.rounds, lone_only=own.lone_only)


def capacity(runs: list[dict]) -> float:
    """Highest requests/s with p95 within the budget (0 when none)."""
    return max((run["rps"] for run in runs if run["p95_ms"] <= load_test.P95_BUDGET_MS), default=0.0)


def summary(runs: list[dict]) -> dict:
    """What the comparison reads from one sweep."""
    lone = [run for run in runs if run["clients"] == 1]
    return {"capacity_rps": capacity(runs), "p50_1_client_ms": lone[0]["p50_ms"] if lone else None,
            "errors": sum(run["errors"] for run in runs),
            "max_rss_growth_mb": max(run["rss_growth_idle_mb"] for run in runs),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def compare(args: argparse.Namespace) -> list[dict]:
    """Both servers up at once (off and on); per mix, round and client count, a run on each, in turn (the order
    swapped every run), so that the machine's noise of the moment hits both alike. One record per mix and round."""
    bundle = load_test.bundle_path(args)
    servers: dict[str, tuple] = {}
    records = []
    args.work.mkdir(parents=True, exist_ok=True)
    try:  # a server that fails to start stops the one already up
        for mode in MODES:
            log = args.work / f"server-batch-{mode}.log"
            progress(f"starting the SEARCH_BATCH={mode} server (its log: {log})")
            servers[mode] = load_test.start_server({**load_test.environment(args, bundle), "SEARCH_BATCH": mode},
                                                   log)
        for mix in args.mixes:
            args.mix = mix
            for round_ in range(args.rounds):
                runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
                for turn, clients in enumerate(int(text) for text in args.clients.split(",")):
                    for mode in MODES[::-1] if (turn + round_) % 2 else MODES:
                        process, url = servers[mode]
                        runs[mode].append(load_test.one_run(args, url, process.pid, clients))
                        run = runs[mode][-1]
                        progress(f"{mix}, round {round_}, SEARCH_BATCH={mode}, {clients} clients: {run['rps']} "
                                 f"requests/s, p95 {run['p95_ms']} ms, {run['errors']} errors; server idle again after "
                                 f"{run['idle_wait_s']} s")
                pair = {mode: {"runs": runs[mode], **summary(runs[mode])} for mode in MODES}
                off, on = pair["off"]["capacity_rps"], pair["on"]["capacity_rps"]
                records.append({"mix": mix, "round": round_, **pair,
                                "capacity_ratio": round(on / off, 2) if off else None,
                                "p50_1_client_delta_ms": _delta(pair)})
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    return records


def progress(message: str) -> None:
    """A line on stderr as the run goes: the tables come only at its end, after many minutes."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _delta(pair: dict) -> float | None:
    off, on = pair["off"]["p50_1_client_ms"], pair["on"]["p50_1_client_ms"]
    return None if off is None or on is None else round(on - off, 2)


def report(args: argparse.Namespace, records: list[dict]) -> None:
    """Per mix and round: each sweep's rows, then the capacity and lone p50 side by side."""
    print(f"REST, bundle {args.bundle}, {args.seconds:g} s per client count; server on CPUs {args.server_cpus}, "
          f"generator on {args.generator_cpus}; load average {os.getloadavg()[0]:.1f}; {common.machine()}")
    columns = ("clients", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "server_cpu_pct", "rss_growth_idle_mb")
    for record in records:
        for mode in MODES:
            print(f"\nmix {record['mix']}, round {record['round']}, SEARCH_BATCH={mode}")
            common.print_table(columns, [[run[key] for key in columns] for run in record[mode]["runs"]])
    print()
    head = ("mix", "round", "capacity off", "capacity on", "ratio", "p50 1 client off", "on", "errors off / on",
            "RSS growth MiB off / on")
    common.print_table(head, [[r["mix"], r["round"], r["off"]["capacity_rps"], r["on"]["capacity_rps"],
                               r["capacity_ratio"], r["off"]["p50_1_client_ms"], r["on"]["p50_1_client_ms"],
                               f"{r['off']['errors']} / {r['on']['errors']}",
                               f"{r['off']['max_rss_growth_mb']} / {r['on']['max_rss_growth_mb']}"]
                              for r in records])


def main(argv: list[str] | None = None) -> int:
    """Run every pair, print the tables and the JSON line; 1 when any request failed."""
    args = parse_args(argv)
    lone = lone_overhead_ms()
    records = [] if args.lone_only else compare(args)
    alone, export = lone_visitor(args)  # after the servers stopped: the same CPUs, nothing else on them
    ceiling = model_ceiling(args, export)
    if records:
        report(args, records)
    sizes = ", ".join(f"{key.split('_')[1]}: {value}" for key, value in ceiling.items() if key != "ceiling")
    print(f"\nthe text tower alone, ms per query by batch size: {sizes}; batching's ceiling {ceiling['ceiling']}x "
          "(batch 1 over the best batch)")
    print(f"\na lone call, the model a no-op (median): batched {lone['lone_batched_ms']} ms, unbatched "
          f"{lone['lone_unbatched_ms']} ms")
    print(f"a lone visitor, one engine in this process, new text queries one at a time: p50 on "
          f"{alone['lone_on_p50_ms']} ms, off {alone['lone_off_p50_ms']} ms; mean on {alone['lone_on_mean_ms']}, "
          f"off {alone['lone_off_mean_ms']}; the model call is {alone['model_share']:.0%} of a query (p50s)")
    common.emit_json({"bench": "batching", **lone, "model_ceiling": ceiling, **alone, "records": [
        {key: value for key, value in record.items() if key not in MODES} | {
        mode: {key: value for key, value in record[mode].items() if key != "runs"} for mode in MODES}
        for record in records]})
    return 1 if any(record[mode]["errors"] for record in records for mode in MODES) else 0


if __name__ == "__main__":
    raise SystemExit(main())
