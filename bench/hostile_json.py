"""Peak memory loading hostile (and large legitimate) bundle JSON files, with this checkout's code and, side by
side in the same run, with the code of an earlier revision.

    python bench/hostile_json.py --before 2e58be3     # `git archive`s that revision's search/ into a temp folder

Each load is a fresh process: it imports the loader, reads /proc/self/status (VmRSS), loads one file the way a
bundle load does (`search.bundle.store.read_manifest` for manifest.json, `search.bundle.keywords.read_keywords` for
keywords.json: the same functions in both revisions, at the paths each revision has), then reports its peak RSS
(VmHWM, what `getrusage(RUSAGE_SELF).ru_maxrss` reports) and the outcome. "growth" is peak minus the RSS before
the load: what loading that file cost. The files are written once into a temp folder (~450 MB of disk).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

REPO = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys
from pathlib import Path
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) >> 10
kind, path = sys.argv[1], Path(sys.argv[2])
try:  # this checkout's layout, else an earlier revision's (the same functions, before the modules moved)
    from search.bundle.store import read_manifest
    from search.bundle.keywords import read_keywords
except ModuleNotFoundError:
    from search.bundle import read_manifest
    from search.keywords import read_keywords
before = status("VmRSS:")
try:
    if kind == "manifest":
        read_manifest(path.parent)
    else:
        read_keywords({path.name: path, **{f"keywords-{n}.npy": path.parent / f"{n}.npy"
                                          for n in ("offsets", "docs", "weights")}}, 8)
    outcome = "loaded"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
print(json.dumps({"before": before, "peak": status("VmHWM:"), "outcome": outcome}))
"""
MANIFEST = {"format_version": 1, "encoder": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}, "dim": 512,
            "count": 8, "space": "cosine", "hnsw": {"m": 16, "ef_construction": 200, "ef_search": 64},
            "source": {"name": "bench", "revision": None}, "created": "2024-01-01T00:00:00Z", "failures": 0}
KEYWORDS = {"format": 1, "count": 8, "k1": 1.5, "b": 0.75}


def repeated(head: str, item: str, size: int, tail: str) -> bytes:
    """`head` + `item` repeated to about `size` bytes (comma-separated) + `tail`."""
    return (head + ",".join([item] * (size // (len(item) + 1))) + tail).encode()


def manifest_with(field: str, item: str, size: int) -> bytes:
    head = json.dumps({**MANIFEST, "files": {}})[:-1] + f', "{field}": ['
    return repeated(head, item, size, "]}")


def legit_manifest(files: int) -> bytes:
    names = {f"images/{n // 1000:03d}/{n:07d}.jpg": f"{n:064x}" for n in range(files)}
    return json.dumps({**MANIFEST, "files": names}).encode()


def legit_keywords(words: int) -> bytes:
    return json.dumps({**KEYWORDS, "vocab": [f"w{n:08d}" for n in range(words)]}).encode()


CASES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "keywords 32 MiB of {}": ("keywords", lambda: repeated(json.dumps(KEYWORDS)[:-1] + ', "vocab": [', "{}",
                                                          32 << 20, "]}")),
    "keywords 128 MiB of {}": ("keywords", lambda: repeated(json.dumps(KEYWORDS)[:-1] + ', "vocab": [', "{}",
                                                           128 << 20, "]}")),
    "keywords 64 MiB of 0": ("keywords", lambda: repeated(json.dumps(KEYWORDS)[:-1] + ', "vocab": [', "0",
                                                         64 << 20, "]}")),
    "manifest 63 MiB extra [{a:{}}]": ("manifest", lambda: manifest_with("extra", '{"a": {}}', 63 << 20)),
    "manifest 63 MiB extra [{}]": ("manifest", lambda: manifest_with("extra", "{}", 63 << 20)),
    "legit manifest 500k files": ("manifest", lambda: legit_manifest(500_000)),
    "legit keywords 1M words": ("keywords", lambda: legit_keywords(1_000_000)),
}


def write_case(folder: Path, kind: str, data: bytes) -> Path:
    folder.mkdir()
    path = folder / ("manifest.json" if kind == "manifest" else "keywords.json")
    path.write_bytes(data)
    words = len(json.loads(data)["vocab"]) if kind == "keywords" and b"w0" in data[:4096] else 0
    np.save(folder / "offsets.npy", np.zeros(words + 1, "<i8"))
    np.save(folder / "docs.npy", np.zeros(0, "<i4"))
    np.save(folder / "weights.npy", np.zeros(0, "<f4"))
    return path


def measure(code: Path, kind: str, path: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], cwd=code, capture_output=True, text=True,
                          timeout=600, check=True, env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a git revision whose search/ to measure beside this checkout's")
    args = parser.parse_args()
    print(common.machine())
    with tempfile.TemporaryDirectory() as temp:
        codes = {"after": REPO}
        if args.before:
            old = Path(temp) / "before"
            old.mkdir()
            archive = subprocess.run(["git", "archive", args.before, "search"], cwd=REPO, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            codes = {f"before ({args.before})": old, **codes}
        rows = []
        for number, (name, (kind, make)) in enumerate(CASES.items()):
            data = make()
            path = write_case(Path(temp) / f"case-{number}", kind, data)
            del data
            for label, code in codes.items():
                result = measure(code, kind, path)
                rows.append([name, f"{path.stat().st_size / 2**20:.0f}", label, result["peak"],
                             int(result["peak"]) - int(result["before"]), str(result["outcome"])[:90]])
    common.print_table(["file", "MiB", "code", "peak RSS MiB", "growth MiB", "outcome"], rows)


if __name__ == "__main__":
    main()
