"""What a gradio_client caller sees: C concurrent gradio_client clients mix /search_text, /search_image and
/similar for S seconds. gradio_client adds ~70 ms per call of its own (a constant endpoint shows the same floor),
so this measures the client; bench/load_test.py measures the server.

    python bench/load_gradio_client.py --clients 32 --seconds 60            # starts app.py on the demo bundle
    python bench/load_gradio_client.py --clients 8 --seconds 30 --url http://127.0.0.1:7860/ [--server-pid PID]

Everything runs on loopback and stops by itself. It prints a line per endpoint, then one JSON line with the keys
clients, seconds, requests, errors, rps, p50_ms, p95_ms, p99_ms, peak_rss_mb (the server's peak resident memory,
from /proc; null when the server's pid is unknown).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gradio_client import Client, handle_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_IMAGES = sorted((REPO_ROOT / "assets" / "demo" / "index" / "images").glob("*.jpg"))
TEXTS = ("a red circle", "a blue square on a dark background", "a yellow star", "a green triangle",
         "a purple circle on a light background", "an orange square")
# Mostly text, as people mostly type; uploads are the heaviest requests, "more like this" the lightest.
MIX = (("/search_text", 0.5), ("/search_image", 0.25), ("/similar", 0.25))
KEYS = ("clients", "seconds", "requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms", "peak_rss_mb")


@dataclass
class Tally:
    """Latencies and errors from all clients (appended under one lock)."""

    latencies_ms: list[float] = field(default_factory=list)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, millis: float, error: str | None) -> None:
        """Record one finished request."""
        with self.lock:
            self.latencies_ms.append(millis)
            self.by_endpoint[endpoint] += 1
            if error is not None:
                self.errors[f"{endpoint}: {error[:160]}"] += 1


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    """`python app.py` on the demo bundle, on a free loopback port."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("SEARCH_INDEX", None)  # the demo bundle, whatever the caller's shell says
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}/"


def connect(url: str, process: subprocess.Popen | None, timeout_s: float = 120) -> Client:
    """A client, once the server answers; gives up when the server dies or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the app exited with code {process.returncode} before answering")
        try:
            return Client(url, verbose=False, analytics_enabled=False, download_files=False)
        except Exception:  # not listening yet: connection refused, or config not served yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def peak_rss_mb(pid: int | None) -> float | None:
    """The kernel's high-water mark of a process's resident memory (VmHWM), in MiB."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else round(kib / 1024, 1)


def request_args(endpoint: str, rng: random.Random, ids: list[str]) -> tuple:
    """Arguments for one call of an endpoint, drawn at random."""
    top_k, threshold = rng.choice((5, 10, 20)), rng.choice((-1.0, 0.0, 0.5))
    if endpoint == "/search_text":
        return rng.choice(TEXTS), top_k, threshold
    if endpoint == "/search_image":
        return handle_file(str(rng.choice(DEMO_IMAGES))), top_k, threshold
    return rng.choice(ids), top_k, threshold


@dataclass(frozen=True)
class Plan:
    """What every client shares: when to stop, how long a request may take, which ids exist."""

    deadline: float
    timeout_s: float
    ids: list[str]


def run_client(client: Client, seed: int, plan: Plan, tally: Tally) -> None:
    """One client: a request at a time, back to back, until the deadline."""
    rng = random.Random(seed)
    endpoints, weights = zip(*MIX, strict=True)
    while time.monotonic() < plan.deadline:
        endpoint = rng.choices(endpoints, weights)[0]
        args = request_args(endpoint, rng, plan.ids)
        start = time.perf_counter()
        error = None
        try:
            hits = client.submit(*args, api_name=endpoint).result(timeout=plan.timeout_s)
            if not isinstance(hits, list):
                error = f"unexpected answer {type(hits).__name__}"
        except Exception as exc:  # every failure counts, whatever its kind; the message goes in the report
            error = f"{type(exc).__name__}: {exc}"
        tally.add(endpoint, (time.perf_counter() - start) * 1000, error)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return round(ordered[rank - 1], 1)


def run_load(url: str, clients: int, seconds: float, timeout_s: float) -> tuple[Tally, float, bool]:
    """Run the clients for `seconds`; returns the tally, the measured span and whether all threads stopped."""
    pool = [connect(url, None) for _ in range(clients)]  # connected before the clock starts
    ids = [hit["id"] for hit in pool[0].predict(TEXTS[0], 50, -1.0, api_name="/search_text")]
    tally = Tally()
    started = time.monotonic()
    deadline = started + seconds
    plan = Plan(deadline, timeout_s, ids)
    threads = [threading.Thread(target=run_client, args=(client, number, plan, tally), daemon=True)
               for number, client in enumerate(pool)]
    for thread in threads:
        thread.start()
    for thread in threads:  # a request still running at the deadline may take up to timeout_s more
        thread.join(timeout=max(0.0, deadline + timeout_s + 5 - time.monotonic()))
    return tally, time.monotonic() - started, not any(thread.is_alive() for thread in threads)


def summary(clients: int, seconds: float, tally: Tally, span: float, rss: float | None) -> dict:
    """The final JSON record."""
    requests = len(tally.latencies_ms)
    return {"clients": clients, "seconds": seconds, "requests": requests, "errors": sum(tally.errors.values()),
            "rps": round(requests / span, 2) if span > 0 else 0.0,
            "p50_ms": percentile(tally.latencies_ms, 50), "p95_ms": percentile(tally.latencies_ms, 95),
            "p99_ms": percentile(tally.latencies_ms, 99), "peak_rss_mb": rss}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send requests (default 10)")
    parser.add_argument("--url", help="an app that is already running (default: start app.py on the demo)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its peak RSS")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.timeout <= 0:
        parser.error("--clients, --seconds and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the load test and print the per-endpoint lines and the JSON line; 1 when any request failed."""
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    process, url, pid = None, args.url, args.server_pid
    if url is None:
        process, url = start_server()
        pid = process.pid
    try:
        connect(url, process)
        tally, span, stopped = run_load(url, args.clients, args.seconds, args.timeout)
        rss = peak_rss_mb(pid)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    for endpoint, count in sorted(tally.by_endpoint.items()):
        print(f"{endpoint}: {count} requests", file=sys.stderr)
    for error, count in tally.errors.most_common(10):
        print(f"error x{count}: {error}", file=sys.stderr)
    record = summary(args.clients, args.seconds, tally, span, rss)
    print(json.dumps({key: record[key] for key in KEYS}), flush=True)
    if not stopped:  # a request hung past its timeout: leave now rather than wait on its thread
        os._exit(2)
    return 1 if record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
