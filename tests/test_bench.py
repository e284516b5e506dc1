"""Smoke tests: every bench script runs at a tiny size and ends with its JSON line (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from search.config import REPO_ROOT

pytestmark = pytest.mark.slow

SCRIPTS = {
    "query_latency.py": (["--n", "300", "--rounds", "1", "--probes", "20"],
                         {"p50_ms", "p95_ms", "naive_p50_ms", "speedup", "int8_p50_ms", "int8_p95_ms", "int8_speedup",
                          "int8_over_fp32", "int8_recall_at_10"}),
    "machine_limits.py": (["--repeats", "1", "--mb", "64", "--cache-mb", "1"],
                          {"dram_gbs", "cache_gbs", "fp32_gops", "int8_gops", "fp32_ms", "int8_ms", "weights_m"}),
    "knn.py": (["--n", "1500", "--queries", "20", "--grid", "defaults"],
               {"n", "recall_at_10", "p50_ms", "exact_p50_ms", "bytes_per_vector", "build_s"}),
    "startup.py": (["--n", "200", "--runs", "1", "--random-weights"],
                   {"ready_s", "onnx_text_first_s", "onnx_text_cached_s"}),
    "build_throughput.py": (["--n", "6", "--model-n", "4", "--batch-size", "2", "--workers", "2",
                             "--variants", "none", "--rounds", "1"],
                            {"pipeline_items_per_s", "model_items_per_s", "ratio"}),
    "quality.py": ([], {"t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1"}),
    "dominant_colour.py": (["--n", "54"], {"n", "whole_picture_right", "subject_right"}),
    "cold_start.py": (["--demo"], {"bundle_mb", "model_mb", "cold_s", "cold_downloads_s", "warm_s",
                                   "warm_downloads_s", "offline_s", "offline_downloads_s"}),
    "hnsw_check.py": (["--sizes", "2000", "--rebuild-max", "2000", "--repeat", "1"],
                      {"n", "check_s", "check_peak_mb", "check_vectors_s", "load_s", "rebuild_s"}),
}


def run_bench(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a bench script from another folder (it must find the repo itself); its last line as JSON."""
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args], capture_output=True,
                          text=True, timeout=300, cwd="/", check=False, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) >= 3, "a readable table comes before the JSON line"
    return json.loads(lines[-1])


def check_values(script: str, result: dict) -> None:
    """Sanity beyond the keys, where a tiny run still means something."""
    if script == "knn.py":
        assert result["n"] == 1500
        assert 0.9 <= result["recall_at_10"] <= 1.0
        assert result["bytes_per_vector"] >= 512 * 4  # the graph holds the float32 vectors themselves
    if script == "quality.py":
        assert result["t2i_r1"] <= result["t2i_r5"] <= result["t2i_r10"] <= 1.0
        assert result["t2i_r1"] >= 0.8  # measured 0.967 on the demo model
    if script == "query_latency.py":
        assert result["speedup"] == pytest.approx(result["naive_p50_ms"] / result["p50_ms"], rel=0.02)
        assert result["int8_speedup"] == pytest.approx(result["naive_p50_ms"] / result["int8_p50_ms"], rel=0.02)
        assert 0 <= result["int8_recall_at_10"] <= 1
    if script == "machine_limits.py":
        assert 30 < result["weights_m"] < 45  # ViT-B-32's text transformer and projection: 37.8 M


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    """Every script of SCRIPTS run once, a few side by side: each is mostly a fresh interpreter's start-up, and
    no timing is asserted here. A script that fails fails its own test, with its stderr."""
    def one(script: str) -> dict | AssertionError:
        try:
            return run_bench(script, SCRIPTS[script][0])
        except AssertionError as failed:
            return failed

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # ~1 GB of memory each
        return dict(zip(SCRIPTS, pool.map(one, SCRIPTS), strict=True))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_ends_with_its_json_line(script: str, results: dict[str, dict]) -> None:
    keys = SCRIPTS[script][1]
    result = results[script]
    if isinstance(result, AssertionError):
        raise result
    assert set(result) == keys
    assert all(isinstance(value, int | float) and value >= 0 for value in result.values())
    check_values(script, result)


def test_quality_reads_a_captioned_parquet_set(tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.synthetic_shapes import make_samples

    images, captions = [], []
    for spec, image in make_samples(12, seed=31):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        captions.append([spec.caption, f"a photo of {spec.short_caption} on a {spec.background} background"])
    pq.write_table(pa.table({"image": images, "caption": captions}), tmp_path / "set.parquet")
    result = run_bench("quality.py", ["--data", str(tmp_path / "set.parquet")],
                       env={"HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "HF_DATASETS_OFFLINE": "1"})
    assert set(result) == SCRIPTS["quality.py"][1]
    assert result["t2i_r10"] == 1.0  # 12 images: every caption's image is within the top 10
    assert result["t2i_r1"] >= 0.5


def test_recalls_match_a_hand_worked_case() -> None:
    from bench.quality import recalls

    images = np.eye(3, dtype=np.float32)
    # captions 0, 1 belong to image 0; caption 2 to image 1 (but points at image 2); caption 3 to image 2
    texts = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0.1, 0.9], [0, 0, 1]], dtype=np.float32)
    result = recalls(images, texts, np.array([0, 0, 1, 2]), ks=(1, 2))
    assert result["t2i_r1"] == 0.5  # captions 1 and 2 rank their image second
    assert result["t2i_r2"] == 1.0
    assert result["i2t_r1"] == pytest.approx(2 / 3)  # image 1's only caption is beaten by caption 1
    assert result["i2t_r2"] == 1.0
