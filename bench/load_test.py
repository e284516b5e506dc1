"""Load test of the server: app.py in one pinned process, bench/load_gen.py (async HTTP) in another, 1..64 clients.

    python bench/load_test.py                                    # demo bundle, REST, realistic mix, 1..64 clients
    python bench/load_test.py --bundle synthetic --mix text-unique --clients 32 --engine   # vs the engine alone
    python bench/load_test.py --route gradio --clients 1,8,32    # gradio's HTTP call route instead of /api
    python bench/load_test.py --clients 64 --seconds 60          # the soak: errors and RSS growth

Per run it reports requests/s, p50/p95/p99 (ms), errors, the server's CPU (% of one core) and peak RSS, the RSS
it grew by (when the load stops, and again once the server has finished the requests still queued then), and the
generator's own CPU; then the capacity (highest requests/s with p95 <= 250 ms) and one JSON
line. `--bundle synthetic` writes (once, under --work) 25 000 CLIP-like items named for the random-weight ViT-B-32
of bench/bundles.py (seeded, saved once), so every server serves the same model and shares one ONNX export.
`--engine` runs the engine alone (bench/load_engine.py) in a third process on the server's CPUs, on the same
requests, in a block just before each run, and reports the server's requests/s as a ratio to it (also per CPU
second each process got: on a shared machine a process that never sleeps gets less of its core than a server
woken per request) and the server's p50 over the engine's. The server waits until text queries run on
ONNX Runtime, as a Space does a few seconds after start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.load_gen import MIXES

P95_BUDGET_MS = 250.0
IDLE_SHARE = 0.15
"""A server using less of a core than this is idle: Gradio's queue loop polls every 1 ms while free (6-7.5 % of a core,
with no request in flight), so 5 % was often never seen and each run waited the full minute; a request still
being worked on takes most of the core."""
SERVER = "from bench.load_engine import apply_bench_env; apply_bench_env(); import app; import os\n" \
         "app.CONCURRENCY = int(os.environ.get('BENCH_QUEUE') or app.CONCURRENCY); app.main([])"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="demo", help="demo, synthetic (25k items, ViT-B-32) or a bundle folder")
    parser.add_argument("--route", choices=("rest", "gradio"), default="rest")
    parser.add_argument("--mix", choices=sorted(MIXES), default="mixed")
    parser.add_argument("--clients", default="1,2,4,8,16,32,64", help="comma-separated client counts, one run each")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp", help="generator's HTTP client")
    parser.add_argument("--server-cpus", default="0", help="CPUs the server (and --engine) may use")
    parser.add_argument("--generator-cpus", default="1", help="CPUs the load generator may use")
    parser.add_argument("--threads", type=int, help="SEARCH_THREADS (default: one per server CPU)")
    parser.add_argument("--text-threads", type=int,
                        help="SEARCH_TEXT_THREADS, per text query (default: the app's, SEARCH_THREADS)")
    parser.add_argument("--slots", type=int, help="model-work limiter size (default: search/model/limits.py's)")
    parser.add_argument("--queue", type=int, help="gradio queue concurrency (default: app.py's)")
    parser.add_argument("--engine", action="store_true", help="also time the engine alone on the server's CPUs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clip-search-load"), help="bundle and ONNX cache")
    return parser.parse_args(argv)


def bundle_path(args: argparse.Namespace) -> str:
    """The bundle folder to serve; the synthetic one is written on first use and kept."""
    if args.bundle == "demo":
        return str(common.REPO_ROOT / "assets" / "demo" / "index")
    if args.bundle != "synthetic":
        return args.bundle
    # Seeded weights (bench/bundles.py): every server serves the same model, so one ONNX export serves them all. A
    # bundle naming no weights gave each server its own random model: a fresh export per start (minutes, 320 MB).
    from bench.bundles import cached_weights

    folder = args.work / "synthetic-25000-seeded"
    if not (folder / "manifest.json").exists():
        common.write_synthetic_bundle(folder, 25_000, pretrained=str(cached_weights()))
    return str(folder)


def environment(args: argparse.Namespace, bundle: str) -> dict[str, str]:
    """What the server and the engine process run with: same bundle, threads, limiter and ONNX cache."""
    threads = args.threads or len(cpus(args.server_cpus))
    env = {**os.environ, "SEARCH_INDEX": bundle, "SEARCH_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "SEARCH_CACHE_DIR": str(args.work / "cache"), "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_SERVER_NAME": "127.0.0.1", "BENCH_CPUS": args.server_cpus}
    optional = {"BENCH_SLOTS": args.slots, "BENCH_QUEUE": args.queue, "SEARCH_TEXT_THREADS": args.text_threads}
    env.update({name: str(value) for name, value in optional.items() if value})
    return env


def cpus(text: str) -> set[int]:
    """`0,1` -> {0, 1}."""
    return {int(cpu) for cpu in text.split(",")}


def start_server(env: dict[str, str], log: Path | None = None, limit_s: float = 600.0
                 ) -> tuple[subprocess.Popen, str]:
    """app.py on a free loopback port, pinned, its output in `log`; returns once text queries run on ONNX Runtime
    and the int8 gate has decided (its quantisation and 300 probes would otherwise run under the first load)."""
    from bench.load_gradio_client import free_port

    port = free_port()
    with open(log or os.devnull, "w") as output:  # the server keeps its own copy of the file open
        process = subprocess.Popen([sys.executable, "-c", SERVER], cwd=common.REPO_ROOT, stdout=output,
                                   stderr=subprocess.STDOUT, env={**env, "GRADIO_SERVER_PORT": str(port)})
    url, deadline, health = f"http://127.0.0.1:{port}/", time.monotonic() + limit_s, None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "api/health", timeout=5) as answer:
                health = json.load(answer)
            if health["text_encoder"] == "onnx" and "asked" in health["text_precision"]:
                return process, url
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    process.wait()
    tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:]) if log else ""
    raise SystemExit(f"the server did not get ready in {limit_s:.0f} s (exit code {process.poll()}); its last "
                     f"health answer: {health}\n{tail}")


def proc_stats(pid: int) -> dict[str, float]:
    """CPU seconds so far (all threads), resident memory now and its high-water mark (MiB), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    mib = {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), "rss_mb": mib["VmRSS"],
            "peak_rss_mb": mib["VmHWM"]}


def idle_stats(pid: int, quiet_s: float = 1.0, limit_s: float = 60.0) -> dict[str, float]:
    """`proc_stats` once the server has finished the requests still in flight when the load stopped (under a
    minute's backlog: queued uploads): its CPU time grew by under IDLE_SHARE of `quiet_s`. RSS then is what the run
    left behind, not the work still under way."""
    deadline, stats = time.monotonic() + limit_s, proc_stats(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = proc_stats(pid)
        if now["cpu_s"] - stats["cpu_s"] < IDLE_SHARE * quiet_s:
            return now
        stats = now
    return stats


def one_run(args: argparse.Namespace, url: str, pid: int, clients: int) -> dict:
    """One generator process for `clients` clients; the record with the server's CPU and memory over the run."""
    before = proc_stats(pid)
    done = subprocess.run([sys.executable, "bench/load_gen.py", "--url", url, "--route", args.route, "--mix", args.mix,
                           "--clients", str(clients), "--seconds", str(args.seconds), "--client", args.client,
                           "--cpus", args.generator_cpus], cwd=common.REPO_ROOT, capture_output=True, text=True,
                          check=False)
    after, settling = proc_stats(pid), time.monotonic()
    idle = idle_stats(pid)
    settled_s = time.monotonic() - settling
    if done.returncode != 0:
        raise SystemExit(f"the load generator failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    latencies = [ms for values in record["latencies"].values() for ms in values]
    span = record["span_s"]
    return {"clients": clients, "requests": len(latencies), "errors": record["error_count"],
            "rps": round(len(latencies) / span, 1), **{f"p{q}_ms": round(common.pct(latencies, q), 1)
                                                      for q in (50, 95, 99)},
            "server_cpu_pct": round(100 * (after["cpu_s"] - before["cpu_s"]) / span),
            "peak_rss_mb": round(after["peak_rss_mb"]), "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 1),
            "rss_growth_idle_mb": round(idle["rss_mb"] - before["rss_mb"], 1), "idle_wait_s": round(settled_s, 1),
            "generator_cpu_pct": round(100 * record["generator_cpu_s"] / span),
            "per_kind_p50_ms": {kind: round(common.pct(values, 50), 1) for kind, values in record["latencies"].items()},
            "error_samples": record["errors"]}


class EngineAlone:
    """bench/load_engine.py in a process of its own, same environment and CPUs as the server, run block by block."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "bench/load_engine.py"], cwd=common.REPO_ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the engine process did not come up")

    def block(self, mix: str, seconds: float, clients: int) -> dict[str, float]:
        """Requests/s and p50 of the engine alone on the same requests, for `seconds`."""
        self.process.stdin.write(f"{mix} {seconds} {clients}\n")
        self.process.stdin.flush()
        return {key: round(value, 2) for key, value in json.loads(self.process.stdout.readline()).items()}

    def close(self) -> None:
        """Stop the process (it ends when its stdin closes)."""
        self.process.stdin.close()
        self.process.wait(timeout=60)


COLUMNS = ("clients", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "server_cpu_pct", "peak_rss_mb",
           "rss_growth_mb", "rss_growth_idle_mb", "generator_cpu_pct")
ENGINE_COLUMNS = ("engine_rps", "engine_p50_ms", "engine_cpu_pct", "rps_vs_engine", "per_cpu_vs_engine",
                  "p50_over_engine_ms")


def sweep(args: argparse.Namespace, env: dict[str, str]) -> list[dict]:
    """One run per client count; with --engine, each run follows an engine-alone block of the same length."""
    engine = EngineAlone(env) if args.engine else None
    try:
        process, url = start_server(env)
        try:
            runs = []
            for clients in (int(text) for text in args.clients.split(",")):
                alone = engine.block(args.mix, args.seconds, clients) if engine else None
                run = one_run(args, url, process.pid, clients)
                if alone:  # side by side, block after block: the machine's noise hits both alike
                    run.update(engine_rps=alone["rps"], engine_p50_ms=alone["p50_ms"], engine_cpu_pct=alone["cpu_pct"],
                               rps_vs_engine=round(run["rps"] / alone["rps"], 2),
                               per_cpu_vs_engine=round(run["rps"] / max(run["server_cpu_pct"], 1)
                                                       / (alone["rps"] / max(alone["cpu_pct"], 1)), 2),
                               p50_over_engine_ms=round(run["p50_ms"] - alone["p50_ms"], 2))
                runs.append(run)
        finally:
            process.terminate()
            process.wait(timeout=60)
    finally:
        if engine:
            engine.close()
    return runs


def main(argv: list[str] | None = None) -> int:
    """Start the server (and the engine alone), run the sweep, print the table and the JSON line."""
    args = parse_args(argv)
    runs = sweep(args, environment(args, bundle_path(args)))
    print(f"{args.route} route, mix {args.mix}, bundle {args.bundle}, {args.seconds:g} s per run; server on CPUs "
          f"{args.server_cpus}, generator ({args.client}) on {args.generator_cpus}; {common.machine()}")
    columns = COLUMNS + (ENGINE_COLUMNS if args.engine else ())
    common.print_table(columns, [[run[key] for key in columns] for run in runs])
    for run in runs:
        if run["errors"]:
            print(f"{run['clients']} clients, errors: {run['error_samples']}", file=sys.stderr)
    within = [run for run in runs if run["p95_ms"] <= P95_BUDGET_MS]
    capacity = max(within, key=lambda run: run["rps"]) if within else None
    print(f"capacity (p95 <= {P95_BUDGET_MS:g} ms): " + (f"{capacity['rps']} requests/s at {capacity['clients']} "
                                                          "clients" if capacity else "none"))
    common.emit_json({"route": args.route, "mix": args.mix, "bundle": args.bundle, "runs": runs,
                      "capacity_rps": capacity and capacity["rps"]})
    return 1 if any(run["errors"] for run in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
