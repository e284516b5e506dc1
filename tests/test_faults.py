"""Fault injection for build_index.py: a flaky loopback server (~10 % of requests fail), and a kill loop
(SIGKILL at random moments, resumed each time) that must end with the bundle an uninterrupted build makes: 3 kills
in the suite, 10 with `pytest -m fuzz` (each kill costs a fresh build_index.py process's start-up)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import build_index
from search.bundle.store import Bundle
from search.config import REPO_ROOT
from tests.conftest import DEMO_MODEL_DIR
from tests.loopback import LoopbackServer
from tests.test_sources import jpeg_bytes, write_unsplash_parquet

ITEMS = 90
SEED = 6
# Permanent faults and the words their recorded reason must contain.
PERMANENT = {"404": "HTTP 404", "500": "HTTP 500", "reset": "connection failed", "slow": "timed out",
             "corrupt": "image format"}
TRANSIENT = ("500-once", "reset-once", "429-once")  # fail once: a retry must still bring the item in
FLAGS = ["--model", f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--timeout", "1.0", "--retries", "1",
         "--no-progress", "--allow-private-hosts"]  # the flaky CDN twin is on loopback


class FlakyRows:
    """A parquet of ITEMS rows on a loopback server where a seeded ~10 % of the items fail for good."""

    def __init__(self, server: LoopbackServer, folder: Path, seed: int = SEED) -> None:
        rng = random.Random(seed)
        numbers = list(range(ITEMS))
        rng.shuffle(numbers)
        permanent = dict(zip(numbers[: len(PERMANENT)], PERMANENT, strict=True))  # one of each kind: 5 of 90
        transient = dict(zip(numbers[len(PERMANENT): len(PERMANENT) + len(TRANSIENT)], TRANSIENT, strict=True))
        urls = []
        for number in range(ITEMS):
            colour = ((number * 53) % 256, (number * 101) % 256, (number * 29) % 256)
            server.add(f"p{number}.jpg", jpeg_bytes(colour, (48 + number % 7, 40 + number % 5)))
            fault = permanent.get(number) or transient.get(number, "ok")
            urls.append((f"item-{number:03d}", server.url(f"p{number}.jpg", fault)))
        self.failing = {f"item-{number:03d}": fault for number, fault in permanent.items()}
        self.good = sorted(item for item, _ in urls if item not in self.failing)
        self.path = write_unsplash_parquet(folder / "rows.parquet", urls)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(slow_s=2.5) as running:
        yield running


def vectors_by_id(root: Path) -> dict[str, np.ndarray]:
    """The bundle's embeddings keyed by item id, after checking every id is there only once."""
    bundle = Bundle.load(root)  # verifies checksums, counts and the manifest
    ids = pq.read_table(root / "metadata.parquet").column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an item is in the bundle twice"
    return dict(zip(ids, bundle.embeddings, strict=True))


def failure_reasons(root: Path) -> dict[str, str]:
    """failures.parquet as id -> reason, after checking each failure is listed once."""
    rows = pq.read_table(root / "failures.parquet").to_pylist()
    assert len(rows) == len({row["id"] for row in rows}), "a failure is listed twice"
    return {row["id"]: row["reason"] for row in rows}


def test_build_survives_a_flaky_server_and_lists_every_failure(server: LoopbackServer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rows = FlakyRows(server, tmp_path)
    out = tmp_path / "out"
    code = build_index.main(["--data-files", str(rows.path), "--out", str(out), "--workers", "4",
                             "--batch-size", "8", "--shard-size", "10", *FLAGS])
    assert code == 0, capsys.readouterr().err
    assert f"{len(rows.good)} items, {len(rows.failing)} failures" in capsys.readouterr().out
    faulty = sum(count for path, count in server.hits.items() if not path.startswith("/ok/")) - len(TRANSIENT)
    assert 0.08 <= faulty / sum(server.hits.values()) <= 0.15  # about 10 % of all requests failed
    assert sorted(vectors_by_id(out)) == rows.good
    reasons = failure_reasons(out)
    assert set(reasons) == set(rows.failing)
    for item, fault in rows.failing.items():
        assert PERMANENT[fault] in reasons[item], (fault, reasons[item])
    assert json.loads((out / "manifest.json").read_text())["failures"] == len(rows.failing)


def _shards(out: Path) -> int:
    return len(list((out / ".build" / "shards").glob("shard-*.parquet")))


def _kill_at_a_random_moment(command: list[str], out: Path, rng: random.Random) -> bool:
    """Start the build and SIGKILL it a random moment after its next shard; False if it finished first."""
    before = _shards(out)
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _shards(out) <= before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.15))  # somewhere in fetching, embedding or writing a shard
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=30)
    if process.returncode != -signal.SIGKILL:
        assert process.returncode == 0, err.decode()[-2000:]
        return False
    return True


def kill_loop_then_resume(server: LoopbackServer, tmp_path: Path, kills: int) -> None:
    """SIGKILL the build `kills` times at seeded random moments, resume it, and compare with an uninterrupted build."""
    rows = FlakyRows(server, tmp_path)
    out = tmp_path / "killed"
    command = [sys.executable, "build_index.py", "--data-files", str(rows.path), "--out", str(out),
               "--workers", "2", "--batch-size", "2", "--shard-size", "2", *FLAGS]
    server.delay_s = 0.03  # a few seconds of downloads per run: room for 10 kills at different stages
    rng = random.Random(SEED)
    progress = []
    for _ in range(kills):
        assert _kill_at_a_random_moment(command, out, rng), f"the build finished after {len(progress)} kills"
        progress.append(_shards(out))
    assert progress == sorted(set(progress)), progress  # every run got further before it was killed
    finished = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    server.delay_s = 0.0
    assert build_index.main(["--data-files", str(rows.path), "--out", str(tmp_path / "reference"), "--workers", "4",
                             "--batch-size", "8", "--shard-size", "10", *FLAGS]) == 0
    resumed, reference = vectors_by_id(out), vectors_by_id(tmp_path / "reference")
    assert sorted(resumed) == sorted(reference) == rows.good
    for item, vector in reference.items():
        np.testing.assert_allclose(resumed[item], vector, atol=1e-5)
    assert failure_reasons(out).keys() == failure_reasons(tmp_path / "reference").keys() == rows.failing.keys()


@pytest.mark.slow
def test_sigkills_at_random_moments_then_resume_give_the_uninterrupted_bundle(server: LoopbackServer,
                                                                             tmp_path: Path) -> None:
    kill_loop_then_resume(server, tmp_path, kills=3)


@pytest.mark.fuzz
def test_ten_sigkills_then_resume_give_the_uninterrupted_bundle(server: LoopbackServer, tmp_path: Path) -> None:
    kill_loop_then_resume(server, tmp_path, kills=10)
