"""Peak server memory under a burst of worst-case uploads, half through the API and half through the UI.

    python bench/upload_burst.py [--repo DIR] [--uploads 8] [--json]

Starts `python app.py` (the demo bundle) from --repo in a subprocess (--repo may be an older copy of the
project, e.g. from `git archive`, to measure the code before a change), waits until it answers, reads its idle
RSS, then fires the uploads at once: even ones through `/search_image` (gradio's call route), odd ones through
the Image tab's own event (`/queue/join`, as the browser does), alternating a 16-bit greyscale 8000×8000 PNG and
an RGBA 8000×8000 PNG (a few hundred KB each, ~128 and ~256 MB decoded). It reports idle RSS, the peak during
the burst (VmHWM, reset before the burst through /proc/PID/clear_refs, and polled VmRSS as a cross-check), the
wall time and every answer.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from tests.odd_images import flat_png  # noqa: E402  (after the path fix above)

WORST_CASES = ("I;16", "RGBA")


@dataclass(frozen=True, slots=True)
class BurstResult:
    """What one burst did to the server."""

    uploads: int
    idle_rss_mb: int
    peak_rss_mb: int  # VmHWM after the burst (reset just before it), or the polled peak where it cannot be reset
    polled_peak_mb: int
    seconds: float
    outcomes: list[str]

    @property
    def growth_mb(self) -> int:
        """Peak over idle."""
        return self.peak_rss_mb - self.idle_rss_mb


def memory_mb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) // 1024
    return fields


def start_app(repo: Path, port: int, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python app.py` on the demo bundle, offline, on `port`; its output goes to `log`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
    env.pop("SEARCH_INDEX", None)
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "app.py"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 180) -> dict[str, Any]:
    """The app's /config once it answers (a text query has run, so the model is warm)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            config = httpx.get(f"{url}/config", timeout=5).json()
            call_api(url, "search_text", ["a red circle", 3, 0.0])
            return config
        except (httpx.HTTPError, ValueError):
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not answer at {url} within {timeout} s")


def upload(url: str, path: Path) -> dict[str, Any]:
    """POST one file to gradio's upload route; the FileData that names it in a later call."""
    with path.open("rb") as data:
        response = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, data)}, timeout=60)
    response.raise_for_status()
    return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def call_api(url: str, name: str, data: list[Any], timeout: float = 300) -> str:
    """A named endpoint through /gradio_api/call: 'ok N hits' or 'error: MESSAGE'."""
    # The call route wants every input: the optional search options follow with their defaults (as gradio_client
    # sends them, from /gradio_api/info).
    info = httpx.get(f"{url}/gradio_api/info", timeout=60).json()
    data = [*data, *(param["parameter_default"] for param in info["named_endpoints"][f"/{name}"]["parameters"][3:])]
    started = httpx.post(f"{url}/gradio_api/call/{name}", json={"data": data}, timeout=60)
    started.raise_for_status()
    stream = httpx.get(f"{url}/gradio_api/call/{name}/{started.json()['event_id']}", timeout=timeout).text
    events = [block.split("\n") for block in stream.strip().split("\n\n")]  # heartbeats come first on long waits
    event, data = next(((head, tail) for head, tail, *_ in reversed(events) if head != "event: heartbeat"),
                       ("", ""))
    payload = json.loads(data.removeprefix("data: ") or "null")
    if event == "event: complete":
        return f"ok {len(payload[0])} hits"
    return f"error: {payload.get('error') if isinstance(payload, dict) else payload}"


def event_data(config: dict[str, Any], dependency: dict[str, Any], values: dict[str, Any]) -> list[Any]:
    """What the page sends for an event: each input's value on a fresh page, those in `values` (by elem_id) given."""
    components = {component["id"]: component for component in config["components"]}
    data = []
    for number in dependency["inputs"]:
        props = components[number].get("props", {})
        value = props.get("value")
        if value is None and components[number]["type"] == "textbox":
            value = ""  # an empty box sends an empty text
        data.append(values.get(props.get("elem_id"), value))
    return data


def image_tab_event(config: dict[str, Any]) -> tuple[int, int, list[Any]]:
    """(fn_index, trigger id, data) of the Image tab's search: the event whose first input is the image component.

    The data is what the page sends with the top k at 5 and the threshold at 0; its first value is the image's.
    """
    image = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "image")
    for number, dependency in enumerate(config["dependencies"]):
        if dependency["inputs"][:1] == [image]:
            data = event_data(config, dependency, {"top-k": 5, "image-threshold": 0.0})
            return dependency.get("id", number), dependency["targets"][0][0], data
    raise LookupError("no event takes the image component as its first input")


def call_ui(url: str, event: tuple[int, int, list[Any]], file: dict[str, Any], timeout: float = 300) -> str:
    """The Image tab's search as the browser runs it (queue/join, then the session's event stream)."""
    session = uuid.uuid4().hex
    body = {"data": [file, *event[2][1:]], "fn_index": event[0], "trigger_id": event[1],
            "session_hash": session, "event_data": None}
    httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=60).raise_for_status()
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                output = message.get("output", {})
                if message.get("success"):
                    tiles = output["data"][0].count('<li class="tile">')  # the results grid's pictures
                    return f"ok {tiles} hits"
                return f"error: {output.get('error')}"
    return "error: the event stream ended without a result"


def burst(url: str, config: dict[str, Any], files: list[Path], count: int) -> list[str]:
    """`count` searches at once, alternating API and UI, each on the next of `files`."""
    event = image_tab_event(config)
    uploaded = [upload(url, files[number % len(files)]) for number in range(count)]  # uploads are not the test

    def one(number: int) -> str:
        if number % 2 == 0:
            return "api " + call_api(url, "search_image", [uploaded[number], 5, 0.0])
        return "ui  " + call_ui(url, event, uploaded[number])

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def measure(repo: Path, count: int, folder: Path, kill_above_mb: int = 12_000,
            modes: tuple[str, ...] = WORST_CASES) -> BurstResult:
    """Start the app from `repo`, burst `count` worst-case uploads (PNGs of `modes`, in turn) at it, and stop it."""
    files = [flat_png(folder, mode) for mode in modes]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    process = start_app(repo, port, folder / "app.log", {"GRADIO_TEMP_DIR": str(folder / "gradio")})
    try:
        config = wait_until_serving(url, process)
        time.sleep(1.0)
        idle = memory_mb(process.pid)["VmRSS"]
        reset = _reset_peak(process.pid)
        polled, stop = [idle], threading.Event()
        poller = threading.Thread(target=_poll, args=(process.pid, polled, stop, kill_above_mb), daemon=True)
        poller.start()
        start = time.perf_counter()
        outcomes = burst(url, config, files, count)
        seconds = time.perf_counter() - start
        stop.set()
        poller.join()
        peak = memory_mb(process.pid).get("VmHWM", 0) if reset else max(polled)
        peak = max(peak, *polled)  # the polled figure stands when the server was killed
        return BurstResult(count, idle, peak, max(polled), round(seconds, 1), outcomes)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _reset_peak(pid: int) -> bool:
    """Reset the kernel's VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _poll(pid: int, samples: list[int], stop: threading.Event, kill_above_mb: int) -> None:
    while not stop.wait(0.02):
        samples.append(memory_mb(pid).get("VmRSS", 0))  # none once the process has exited
        if samples[-1] > kill_above_mb:  # old code under test: spare the machine (it is shared)
            os.kill(pid, 9)
            return


def main(argv: list[str] | None = None) -> int:
    """Run one burst and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="project folder whose app.py to run")
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--modes", default=",".join(WORST_CASES), help="PNG modes to alternate: I;16, RGBA, RGB, P")
    parser.add_argument("--kill-above-mb", type=int, default=12_000, help="kill the server beyond this RSS")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="upload-burst-") as folder:
        result = measure(args.repo.resolve(), args.uploads, Path(folder), args.kill_above_mb,
                         tuple(args.modes.split(",")))
    if args.json:
        print(json.dumps({**asdict(result), "growth_mb": result.growth_mb}, indent=2))
    else:
        print(f"{args.repo}: {result.uploads} uploads in {result.seconds} s; idle RSS {result.idle_rss_mb} MB, "
              f"peak {result.peak_rss_mb} MB (+{result.growth_mb} MB; polled peak {result.polled_peak_mb} MB)")
        for outcome in result.outcomes:
            print("  " + outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
