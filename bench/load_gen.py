"""Load generator: C async HTTP clients (httpx, one event loop, one process) send requests back to back.

    python bench/load_gen.py --url http://127.0.0.1:7860/ --route rest --mix mixed --clients 16 --seconds 20

Run by bench/load_test.py in a process of its own (pinned with --cpus), so its CPU use is measured apart from
the server's. `--route rest` drives /api/...; `--route gradio` drives Gradio's HTTP call route as a plain HTTP
caller does (POST /gradio_api/call/NAME, then GET the event stream; an upload first goes to /gradio_api/upload).
Prints one JSON line: per-kind latencies (ms), errors and the generator's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Protocol

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import QUERIES

# A realistic mix: mostly typed text, some of it repeated (examples, slider moves: served from the text cache),
# some of it new; uploads are the heaviest requests and "more like this" clicks the lightest.
MIXES = {
    "mixed": {"text": 0.4, "text-unique": 0.2, "image": 0.2, "similar": 0.2},
    **{kind: {kind: 1.0} for kind in ("text", "text-unique", "image", "similar", "health")},
}
REPEATED = QUERIES[:8]  # a small set: after the first round every one of them is a cached vector
TOP_KS, THRESHOLDS = (5, 10, 20), (-1.0, 0.0, 0.2)


def unique_numbers() -> Iterator[int]:
    """Numbers no earlier run used (so no query is in the server's text cache), all of 7 digits: every new
    query has the same token count here and in bench/load_engine.py."""
    return count(random.SystemRandom().randrange(1_000_000, 9_000_000))


@dataclass
class Tally:
    """Latencies (ms) and errors per request kind."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)


class Transport(Protocol):
    """The few HTTP calls the generator makes: each returns (status, body text)."""

    async def get(self, path: str, params: dict | None = None) -> tuple[int, str]: ...
    async def post_json(self, path: str, body: dict) -> tuple[int, str]: ...
    async def post_file(self, path: str, field_name: str, data: bytes, params: dict | None = None
                        ) -> tuple[int, str]: ...


class HttpxTransport:
    """httpx.AsyncClient: what the project already installs (gradio's own HTTP client)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str, params: dict | None = None) -> tuple[int, str]:
        answer = await self.http.get(path, params=params)
        return answer.status_code, answer.text

    async def post_json(self, path: str, body: dict) -> tuple[int, str]:
        answer = await self.http.post(path, json=body)
        return answer.status_code, answer.text

    async def post_file(self, path: str, field_name: str, data: bytes, params: dict | None = None
                        ) -> tuple[int, str]:
        answer = await self.http.post(path, params=params, files={field_name: ("query.jpg", data, "image/jpeg")})
        return answer.status_code, answer.text


class AiohttpTransport:
    """aiohttp.ClientSession: about 4x less CPU per request than httpx here (see bench/load_test.py --calibrate)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def get(self, path: str, params: dict | None = None) -> tuple[int, str]:
        async with self.session.get(path, params=_plain(params)) as answer:
            return answer.status, await answer.text()

    async def post_json(self, path: str, body: dict) -> tuple[int, str]:
        async with self.session.post(path, json=body) as answer:
            return answer.status, await answer.text()

    async def post_file(self, path: str, field_name: str, data: bytes, params: dict | None = None
                        ) -> tuple[int, str]:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field(field_name, data, filename="query.jpg", content_type="image/jpeg")
        async with self.session.post(path, params=_plain(params), data=form) as answer:
            return answer.status, await answer.text()


def _plain(params: dict | None) -> dict | None:
    """aiohttp takes only str/int/float query values, not None."""
    return None if params is None else {key: value for key, value in params.items() if value is not None}


class Caller:
    """Requests of each kind over one route, with the payloads they draw from."""

    def __init__(self, http: Transport, route: str, images: list[bytes], ids: list[str],
                 optional: dict[str, list] | None = None) -> None:
        self.http, self.route, self.images, self.ids = http, route, images, ids
        self.unique = unique_numbers()
        self.optional = optional or {}  # per Gradio endpoint: its optional parameters' defaults, sent as given

    def arguments(self, kind: str, rng: random.Random) -> tuple[object, int, float]:
        """What one request of `kind` asks for."""
        k, threshold = rng.choice(TOP_KS), rng.choice(THRESHOLDS)
        if kind == "text":
            return rng.choice(REPEATED), k, threshold
        if kind == "text-unique":  # a query no one sent before: the model runs
            return f"{rng.choice(QUERIES)} number {next(self.unique)}", k, threshold
        if kind == "image":
            return rng.choice(self.images), k, threshold
        return rng.choice(self.ids), k, threshold

    async def send(self, kind: str, rng: random.Random) -> None:
        """One request; raises on any failure (a status other than 200, or an answer that is not a hit list)."""
        if kind == "health":
            _checked(*await self.http.get("api/health"))
            return
        source, k, threshold = self.arguments(kind, rng)
        hits = await (self.rest if self.route == "rest" else self.gradio)(kind, source, k, threshold)
        if not isinstance(hits, list):
            raise ValueError(f"unexpected answer {str(hits)[:100]}")

    async def rest(self, kind: str, source: Any, k: int, threshold: float) -> object:
        params = {"k": k, "threshold": threshold}
        if kind == "image":
            return json.loads(_checked(*await self.http.post_file("api/search/image", "file", source, params)))
        if kind == "similar":
            return json.loads(_checked(*await self.http.get(f"api/similar/{source}", params)))
        return json.loads(_checked(*await self.http.get("api/search", {"q": source, **params})))

    async def gradio(self, kind: str, source: Any, k: int, threshold: float) -> object:
        if kind == "image":
            paths = json.loads(_checked(*await self.http.post_file("gradio_api/upload", "files", source)))
            source = {"path": paths[0], "meta": {"_type": "gradio.FileData"}}
        name = {"image": "search_image", "similar": "similar"}.get(kind, "search_text")
        started = json.loads(_checked(*await self.http.post_json(f"gradio_api/call/{name}",
                                                                 {"data": [source, k, threshold,
                                                                           *self.optional.get(name, [])]})))
        events = _checked(*await self.http.get(f"gradio_api/call/{name}/{started['event_id']}"))
        kind_line, _, data = events.strip().partition("\n")
        if kind_line != "event: complete":
            raise ValueError(f"{kind_line}: {data[:160]}")
        return json.loads(data.removeprefix("data:"))[0]


async def optional_defaults(http: Transport) -> dict[str, list]:
    """Defaults of each Gradio endpoint's optional parameters, from /gradio_api/info (as gradio_client reads them).

    Gradio's call route wants a value for every input, so a raw caller sends the defaults of the options it leaves.
    """
    info = json.loads(_checked(*await http.get("gradio_api/info")))
    # The first three (query or image or id, top_k, threshold) are sent by the caller; the options follow them.
    return {name.lstrip("/"): [param["parameter_default"] for param in endpoint["parameters"][3:]]
            for name, endpoint in info["named_endpoints"].items()}


def _checked(status: int, text: str) -> str:
    if status != 200:
        raise ValueError(f"HTTP {status}: {text[:160]}")
    return text


async def run_client(caller: Caller, mix: dict[str, float], seed: int, deadline: float, tally: Tally) -> None:
    """Requests back to back until the deadline; every one timed, every failure counted."""
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    while time.perf_counter() < deadline:
        kind = rng.choices(kinds, weights)[0]
        start = time.perf_counter()
        try:
            await caller.send(kind, rng)
        except Exception as exc:  # every failure counts, whatever its kind; the message goes in the report
            tally.errors[f"{kind}: {type(exc).__name__}: {str(exc)[:160]}"] += 1
        tally.latencies[kind].append((time.perf_counter() - start) * 1000)


def query_images(count_: int = 8) -> list[bytes]:
    """Small JPEG photos-to-be (random colour blocks), made here so any bundle can be queried."""
    from PIL import Image

    rng = random.Random(0)
    images = []
    for _ in range(count_):
        picture = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        picture.paste(tuple(rng.randrange(256) for _ in range(3)), (rng.randrange(320), rng.randrange(240),
                                                                   rng.randrange(320, 640), rng.randrange(240, 480)))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        images.append(buffer.getvalue())
    return images


async def generate(args: argparse.Namespace) -> dict:
    """Open the client, run the clients, return the record."""
    if args.client == "httpx":
        limits = httpx.Limits(max_connections=args.clients + 2, max_keepalive_connections=args.clients + 2)
        async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=args.timeout) as http:
            return await measure(HttpxTransport(http), args)
    import aiohttp

    connector = aiohttp.TCPConnector(limit=args.clients + 2)
    async with aiohttp.ClientSession(args.url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=args.timeout)) as session:
        return await measure(AiohttpTransport(session), args)


async def measure(http: Transport, args: argparse.Namespace) -> dict:
    """Warm up, run the clients for the given seconds; latencies, errors and this process's CPU seconds."""
    found = json.loads(_checked(*await http.get("api/search", {"q": QUERIES[0], "k": 200, "threshold": -1})))
    caller = Caller(http, args.route, query_images(), [hit["id"] for hit in found], await optional_defaults(http))
    for kind in MIXES[args.mix]:  # connections opened, code paths warmed, before the clock starts
        await caller.send(kind, random.Random(-1))
    tally, usage, started = Tally(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(*(run_client(caller, MIXES[args.mix], seed, deadline, tally) for seed in range(args.clients)))
    span, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"span_s": span, "generator_cpu_s": cpu, "latencies": dict(tally.latencies),
            "errors": dict(tally.errors.most_common(10)), "error_count": sum(tally.errors.values())}


def main(argv: list[str] | None = None) -> int:
    """Parse options, pin to the given CPUs, generate, print the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--route", choices=("rest", "gradio"), default="rest")
    parser.add_argument("--mix", choices=sorted(MIXES), default="mixed")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--cpus", help="comma-separated CPU numbers to run on (default: any)")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    print(json.dumps(asyncio.run(generate(args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
