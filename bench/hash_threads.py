"""First-start checksums: a bundle's files hashed one after the other against the big ones in threads.

    python bench/hash_threads.py                 # the cached 1 000 000-item bundle (bench/bundles.py)
    python bench/hash_threads.py --n 25000

Alternating pairs of runs with no verification record, as on a first start; `search/bundle/verified.py` hashes
files of at least PARALLEL_MIN_BYTES in worker threads (hashlib releases the GIL while it hashes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import cached_bundle


def main(argv: list[str] | None = None) -> int:
    """Time both ways in alternating pairs; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="bundle size")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args(argv)
    from search.bundle import verified

    bundle = cached_bundle(args.n)
    files = {path.name: path for path in sorted(bundle.iterdir()) if path.is_file() and path.suffix != ".json"}
    size_mb = sum(path.stat().st_size for path in files.values()) / 2**20
    times: dict[str, list[float]] = {"one after the other": [], "big files in threads": []}
    for _ in range(args.pairs):
        for name, minimum in [("one after the other", 1 << 62), ("big files in threads", verified.PARALLEL_MIN_BYTES)]:
            record = verified.VerificationRecord(Path("/nonexistent/record.json"), {})
            saved, verified.PARALLEL_MIN_BYTES = verified.PARALLEL_MIN_BYTES, minimum
            start = time.perf_counter()
            record.digests(files)
            times[name].append(time.perf_counter() - start)
            verified.PARALLEL_MIN_BYTES = saved
    print(f"sha256 of {len(files)} files, {size_mb:.0f} MB; {common.machine()}")
    common.print_table(["way", "seconds (each pair)", "MB/s (median)"],
                       [[name, " ".join(f"{t:.2f}" for t in runs), size_mb / common.p50(runs)]
                        for name, runs in times.items()])
    common.emit_json({name: round(common.p50(runs), 2) for name, runs in times.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
