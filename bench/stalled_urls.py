"""Text-search latency while image-URL searches wait on a host that accepts and never answers.

    python bench/stalled_urls.py [--stalled 20] [--texts 5] [--json]

Serves the app on the demo bundle in this process, with a silent TCP server on 127.0.0.2 that the network guard
is told to treat as public (as the tests do). Sends `--stalled` image searches whose image is a URL on that
server, each from a loopback address of its own (127.0.1.N: a client each), alternating the API's
`search_image` (gradio's call route) and the Image tab's own event (`/queue/join`, as the browser does). Once
each waits on the silent host or has been answered (at most 10 s), it times `--texts` text searches through the
call route, one after another, and reports their latencies, how many connections the silent server held then
and how many stalled calls were answered (refused) within those 10 s.
Runs against any checkout (put this file and tests/loopback.py into an older copy to measure the code before).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import machine  # noqa: E402  (after the path fix above)
from bench.upload_burst import image_tab_event  # noqa: E402

STAND_IN = "127.0.0.2"
TEXT_TIMEOUT_S = 30.0
SETTLE_S = 10.0


def outcome(stream: str) -> str:
    """'ok' or 'error: MESSAGE' from a call route's event stream."""
    blocks = [block.split("\n") for block in stream.strip().split("\n\n")]
    event, data = next(((head, tail) for head, tail, *_ in reversed(blocks) if head != "event: heartbeat"), ("", ""))
    payload = json.loads(data.removeprefix("data: ") or "null")
    return "ok" if event == "event: complete" else f"error: {payload}"


def call_api(url: str, name: str, data: list[Any], source: str, timeout: float) -> str:
    """A named endpoint through /gradio_api/call, from the loopback address `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=timeout) as http:
        started = http.post(f"{url}/gradio_api/call/{name}", json={"data": data})
        started.raise_for_status()
        return outcome(http.get(f"{url}/gradio_api/call/{name}/{started.json()['event_id']}").text)


def call_ui(url: str, event: tuple[int, int, list[Any]], image: dict[str, Any], source: str) -> str:
    """The Image tab's search as the browser runs it, from the loopback address `source`."""
    session = uuid.uuid4().hex
    body = {"data": [image, *event[2][1:]], "fn_index": event[0], "trigger_id": event[1],
            "session_hash": session, "event_data": None}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=300) as http:
        http.post(f"{url}/gradio_api/queue/join", json=body).raise_for_status()
        with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    return "ok" if message.get("success") else f"error: {message.get('output', {}).get('error')}"
    return "error: the event stream ended without a result"


def time_texts(url: str, texts: int, options: list[Any]) -> list[tuple[float, str]]:
    """(seconds, outcome) of text searches one after another; the first unanswered one ends the series."""
    latencies: list[tuple[float, str]] = []
    waiting = ThreadPoolExecutor(max_workers=texts)
    for number in range(texts):
        start = time.perf_counter()
        call = waiting.submit(call_api, url, "search_text", [f"a red circle {number}", 3, 0.0, *options],
                              "127.0.0.1", 300)
        try:
            result = call.result(timeout=TEXT_TIMEOUT_S)  # the event stream's heartbeats keep httpx waiting
        except TimeoutError:
            latencies.append((time.perf_counter() - start, f"no answer within {TEXT_TIMEOUT_S:.0f} s"))
            break  # the next would wait as long
        latencies.append((time.perf_counter() - start, result))
    waiting.shutdown(wait=False)  # an unanswered call ends once the stalled ones fail
    return latencies


def run(stalled: int, texts: int) -> dict[str, Any]:
    """Serve the demo, stall `stalled` image searches, time `texts` text searches; the figures."""
    from search.build import netguard
    from search.bundle.store import Bundle
    from search.model.encoder import ClipEncoder
    from search.query.engine import SearchEngine
    from search.web.startup import Startup, demo_notice
    from tests.app_server import serve
    from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC
    from tests.loopback import SilentServer

    real = netguard.is_public_address
    netguard.is_public_address = lambda address: address == STAND_IN or real(address)

    engine = SearchEngine(ClipEncoder.load(DEMO_SPEC), Bundle.load(DEMO_INDEX_DIR))
    # Closed in reverse: the silent server first, so the calls still waiting on it fail fast.
    with serve(Startup(engine, demo_notice(None, None), True)) as served, \
            ThreadPoolExecutor(max_workers=stalled) as pool, SilentServer(STAND_IN) as silent:
        url = served.rstrip("/")
        info = httpx.get(f"{url}/gradio_api/info", timeout=60).json()
        options = [p["parameter_default"] for p in info["named_endpoints"]["/search_text"]["parameters"][3:]]
        event = image_tab_event(httpx.get(f"{url}/config", timeout=60).json())
        call_api(url, "search_text", ["warm up", 3, 0.0, *options], "127.0.0.1", TEXT_TIMEOUT_S)

        def stall(number: int) -> tuple[str, float]:
            start, source = time.perf_counter(), f"127.0.1.{number + 1}"
            image = {"path": silent.url(f"{number}.jpg"), "meta": {"_type": "gradio.FileData"}}
            if number % 2:
                result = call_ui(url, event, image, source)
            else:
                result = call_api(url, "search_image", [image, 3, 0.0, *options], source, 300)
            return result, time.perf_counter() - start

        futures = [pool.submit(stall, number) for number in range(stalled)]
        settled = time.monotonic() + SETTLE_S  # until each call waits on the silent host or has been answered
        while silent.accepted + sum(future.done() for future in futures) < stalled and time.monotonic() < settled:
            time.sleep(0.05)
        held = silent.accepted  # fetches waiting on the silent host as the text searches start
        latencies = time_texts(url, texts, options)
        refused = sum(1 for future in futures if future.done() and future.result()[1] < SETTLE_S)
    done = [future.result() for future in futures]  # the silent server is gone: the rest fail fast now
    seconds = [latency for latency, _ in latencies]
    return {"machine": machine(), "stalled": stalled, "connections_held": held, "refused_fast": refused,
            "text_p50_s": round(statistics.median(seconds), 3), "text_max_s": round(max(seconds), 3),
            "text_results": sorted({result for _, result in latencies}),
            "stalled_results": sorted({result[:120] for result, _ in done})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stalled", type=int, default=20, help="image-URL searches on the silent host")
    parser.add_argument("--texts", type=int, default=5, help="text searches timed while they wait")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    result = run(args.stalled, args.texts)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
