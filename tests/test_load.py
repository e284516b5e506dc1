"""The load test, short: the async generator against the demo app, over REST and gradio's call route, no errors."""

from __future__ import annotations

import argparse
import os

import pytest

from bench.load_gen import MIXES
from bench.load_gradio_client import percentile
from bench.load_test import COLUMNS, one_run, proc_stats


@pytest.mark.slow
@pytest.mark.parametrize("route", ["rest", "gradio"])
def test_four_clients_for_three_seconds_get_answers_and_no_errors(app_url: str, route: str) -> None:
    args = argparse.Namespace(route=route, mix="mixed", seconds=3.0, client="aiohttp", generator_cpus="0,1")
    run = one_run(args, app_url, os.getpid(), 4)  # the app is served by this process: its CPU and RSS are ours
    assert run["errors"] == 0, run["error_samples"]
    assert set(COLUMNS) <= set(run) and run["clients"] == 4
    assert run["requests"] >= 12 and run["rps"] > 4
    assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] < 30_000
    assert set(run["per_kind_p50_ms"]) == set(MIXES["mixed"])  # the mix reached every kind of request
    assert 0 <= run["generator_cpu_pct"] <= 100 and run["server_cpu_pct"] > 0
    assert 200 < run["peak_rss_mb"] < 8_000  # a model, a bundle and gradio: hundreds of MiB, not gigabytes


def test_proc_stats_reads_this_process() -> None:
    stats = proc_stats(os.getpid())
    sum(range(2_000_000))  # some CPU time
    later = proc_stats(os.getpid())
    assert later["cpu_s"] > stats["cpu_s"] and 0 < stats["rss_mb"] <= later["peak_rss_mb"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
