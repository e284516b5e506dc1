"""The load test, short: 4 clients for 5 s against `python app.py` on the demo bundle, with no errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.load_test import KEYS, percentile
from search.config import REPO_ROOT


@pytest.mark.slow
def test_four_clients_for_five_seconds_get_answers_and_no_errors() -> None:
    finished = subprocess.run([sys.executable, "bench/load_test.py", "--clients", "4", "--seconds", "5"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads(finished.stdout.strip().splitlines()[-1])
    assert tuple(record) == KEYS
    assert (record["clients"], record["seconds"], record["errors"]) == (4, 5.0, 0)
    assert record["requests"] >= 10 and record["rps"] == pytest.approx(record["requests"] / 5, rel=0.5)
    assert 0 < record["p50_ms"] <= record["p95_ms"] <= record["p99_ms"] < 30_000
    assert 200 < record["peak_rss_mb"] < 8_000  # a model, a bundle and gradio: hundreds of MiB, not gigabytes
    for endpoint in ("/search_text", "/search_image", "/similar"):  # the mix reached every endpoint
        assert f"{endpoint}: " in finished.stderr


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
