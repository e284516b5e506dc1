"""A burst of the heaviest REST requests, each abandoned by its client: does everyone else keep being answered?

    python bench/heavy_burst.py --n 40000                       # this checkout
    python bench/heavy_burst.py --n 40000 --repo ../old-copy    # another copy of the project, same bundle

Starts `python app.py --index <synthetic bundle>` (bench/bundles.py: n items, random ViT-B-32) from --repo on a
loopback port, then sends --requests copies of each heavy request at once, each given up by its client after
--abandon seconds, while a probe asks /api/health and a new (uncached) text query every 0.25 s for --seconds.
It reports, per heavy request, the probes' worst and median latency (a probe that got no answer within --seconds
counts as that long) and how the heavy requests ended. The client is one asyncio loop with httpx: it sends and
waits, and spends well under a millisecond per request, so the latencies are the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import cached_bundle

HEAVY = {  # the request, refused at once where folding is bounded, and the heaviest one still served
    "deep page, folded": "k=1000&offset=10000&threshold=-1&collapse_radius=0",
    "k=1000, folded at 0.1": "k=1000&threshold=-1&collapse_radius=0.1",
}


def start_app(repo: Path, bundle: Path, port: int) -> subprocess.Popen:
    """`python app.py --index bundle` from `repo`, offline, text queries on PyTorch (no background export)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "SEARCH_ONNX_TEXT": "0"}
    return subprocess.Popen([sys.executable, "app.py", "--index", str(bundle)], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/api/search", params={"q": "warm up", "k": 1}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"app.py did not answer at {url} within {timeout} s")


async def heavy(client: httpx.AsyncClient, url: str, abandon_s: float) -> str:
    try:
        response = await client.get(url, timeout=abandon_s)
        return str(response.status_code)
    except httpx.TimeoutException:
        return "abandoned"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def probe(client: httpx.AsyncClient, url: str, limit_s: float) -> float:
    start = time.perf_counter()
    try:
        (await client.get(url, timeout=limit_s)).raise_for_status()
    except httpx.HTTPError:
        return limit_s
    return time.perf_counter() - start


async def burst(base: str, query: str, args: argparse.Namespace) -> dict[str, object]:
    item = httpx.get(f"{base}/api/search", params={"q": "anything", "k": 1}, timeout=30).json()[0]["id"]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits) as heavy_client, httpx.AsyncClient(limits=limits) as probes:
        tasks = [asyncio.create_task(heavy(heavy_client, f"{base}/api/similar/{item}?{query}", args.abandon))
                 for _ in range(args.requests)]
        health, text = [], []
        end = time.monotonic() + args.seconds
        count = 0
        while time.monotonic() < end:
            count += 1
            left = max(end - time.monotonic(), 0.5)
            pair = await asyncio.gather(probe(probes, f"{base}/api/health", left),
                                        probe(probes, f"{base}/api/search?q=probe+{count}+{time.time()}&k=12", left))
            health.append(pair[0])
            text.append(pair[1])
            await asyncio.sleep(0.25)
        outcomes = Counter(await asyncio.gather(*tasks))
    return {"health max s": max(health), "health p50 s": statistics.median(health), "text max s": max(text),
            "text p50 s": statistics.median(text), "heavy requests": dict(outcomes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40_000, help="bundle size")
    parser.add_argument("--repo", type=Path, default=common.REPO_ROOT, help="project folder whose app.py to run")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--abandon", type=float, default=3.0, help="seconds before a heavy request is given up")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the probes run per burst")
    parser.add_argument("--port", type=int, default=7871)
    args = parser.parse_args()
    print(common.machine(), "| repo", args.repo.resolve())
    rows = []
    for label, query in HEAVY.items():
        process = start_app(args.repo, cached_bundle(args.n), args.port)  # a fresh server per burst
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_for(base, process)
            result = asyncio.run(burst(base, query, args))
        finally:
            process.kill()
            process.wait()
        rows.append((label, *(f"{result[key]:.3f}" for key in ("health max s", "health p50 s", "text max s",
                                                                  "text p50 s")), result["heavy requests"]))
    common.print_table(("heavy request", "health max s", "health p50 s", "text max s", "text p50 s",
                        "heavy outcomes"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
