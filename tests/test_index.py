"""VectorIndex: cosine scores, k clamping, ef persistence, hnswlib's short-result error, locking."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from search.bundle.hnsw_index import ReadWriteLock, VectorIndex
from search.config import HnswParams
from tests.conftest import unit_vectors

PARAMS = HnswParams(m=16, ef_construction=100, ef_search=50)


def test_query_returns_cosine_similarities_best_first() -> None:
    vectors = unit_vectors(200, 32)
    index = VectorIndex.build(vectors, PARAMS)
    labels, scores = index.query(vectors[7], 5)
    exact = vectors @ vectors[7]
    assert labels[0] == 7
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(scores, exact[labels], atol=1e-5)
    assert list(scores) == sorted(scores, reverse=True)
    assert scores.dtype == np.float64 and labels.dtype == np.int64
    # Each score is exactly the number its 6-decimal text reads as: what a caller sees is what was compared.
    assert all(float(f"{score:.6f}") == score for score in scores)


@pytest.mark.parametrize(("k", "expected"), [(0, 0), (-3, 0), (1, 1), (10, 10), (11, 10), (10_000, 10)])
def test_k_is_clamped_to_the_item_count(k: int, expected: int) -> None:
    index = VectorIndex.build(unit_vectors(10, 8), PARAMS)
    labels, scores = index.query(unit_vectors(1, 8, seed=1)[0], k)
    assert len(labels) == len(scores) == expected
    assert len(set(labels.tolist())) == expected


def test_empty_index_answers_nothing() -> None:
    index = VectorIndex.create(8, PARAMS, capacity=0)
    labels, _ = index.query(unit_vectors(1, 8)[0], 5)
    assert len(index) == 0 and len(labels) == 0


def test_ef_search_is_reapplied_on_load(tmp_path: Path) -> None:
    VectorIndex.build(unit_vectors(100, 16), PARAMS).save(tmp_path / "g.hnsw")
    loaded = VectorIndex.load(tmp_path / "g.hnsw", 16, HnswParams(m=16, ef_construction=100, ef_search=77))
    assert loaded._raw.ef == 77  # hnswlib itself would come back with its default of 10
    assert loaded.params.ef_search == 77
    assert len(loaded) == 100


def test_short_result_runtime_error_is_answered_by_exact_search() -> None:
    # Near-duplicate clusters with M=2 split hnswlib's graph: asking for every item makes
    # hnswlib raise "Cannot return the results in a contiguous 2D array".
    rng = np.random.default_rng(0)
    centres = unit_vectors(30, 16)
    vectors = np.repeat(centres, 10, axis=0) + rng.normal(scale=1e-4, size=(300, 16)).astype(np.float32)
    index = VectorIndex.build(vectors.astype(np.float32), HnswParams(m=2, ef_construction=10, ef_search=10))
    with pytest.raises(RuntimeError):
        index._raw.knn_query(vectors[:1], k=300)
    labels, scores = index.query(vectors[0], 300)
    normalised = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert sorted(labels.tolist()) == list(range(300))
    np.testing.assert_allclose(scores, (normalised @ normalised[0])[labels], atol=1e-5)
    assert list(scores) == sorted(scores, reverse=True)


def test_add_grows_capacity_and_rejects_wrong_shapes() -> None:
    index = VectorIndex.create(8, PARAMS, capacity=2)
    index.add(unit_vectors(5, 8), np.arange(5))
    assert len(index) == 5
    with pytest.raises(ValueError, match="dim 8"):
        index.add(unit_vectors(2, 9), np.arange(5, 7))


def test_concurrent_adds_and_queries_keep_every_item() -> None:
    index = VectorIndex.create(16, PARAMS, capacity=10)
    batches = [unit_vectors(50, 16, seed=seed) for seed in range(8)]
    errors: list[BaseException] = []

    def add(batch_no: int) -> None:
        index.add(batches[batch_no], np.arange(batch_no * 50, (batch_no + 1) * 50))

    def query() -> None:
        try:
            for _ in range(50):
                index.query(batches[0][0], 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=query) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(index) == 400
    labels, _ = index.query(batches[5][3], 1)
    assert labels[0] == 5 * 50 + 3


def test_write_lock_waits_for_readers_and_blocks_new_ones() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    with lock.reading():
        writer = threading.Thread(target=lambda: _hold(lock.writing(), events, "write"))
        writer.start()
        time.sleep(0.05)
        assert events == []  # the writer is still waiting for this reader
        late_reader = threading.Thread(target=lambda: _hold(lock.reading(), events, "read"))
        late_reader.start()
        time.sleep(0.05)
        assert events == []  # a waiting writer keeps new readers out
    writer.join(2)
    late_reader.join(2)
    assert events == ["write", "read"]


def _hold(context, events: list[str], name: str) -> None:
    with context:
        events.append(name)


def test_set_ef_search_changes_the_beam_without_rebuilding() -> None:
    vectors = unit_vectors(300, 32)
    index = VectorIndex.build(vectors, PARAMS)
    before = index.query(vectors[3], 10)
    index.set_ef_search(200)
    assert index.params == HnswParams(PARAMS.m, PARAMS.ef_construction, 200)
    labels, scores = index.query(vectors[3], 10)
    assert labels[0] == before[0][0] == 3
    np.testing.assert_allclose(scores, np.sort(vectors @ vectors[3])[::-1][:10], atol=1e-5)  # exact at ef 200
    with pytest.raises(ValueError, match="ef_search must be at least 1"):
        index.set_ef_search(0)
