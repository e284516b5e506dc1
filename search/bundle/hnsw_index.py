"""The engine's vector index interface (`SearchIndex`), and its default: hnswlib in cosine space, thread-safe."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import hnswlib
import numpy as np
import numpy.typing as npt

from search.bundle.hnsw_check import check_hnsw_file, corrupt
from search.config import HnswParams
from search.errors import one_line
from search.types import FeatureVector

logger = logging.getLogger(__name__)

Labels = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float64]

VECTOR_SAMPLE = 1024
"""Rows of the embeddings compared with the graph's stored vectors on load (see `VectorIndex.load`)."""

SCORE_DECIMALS = 6
"""Scores are cosine similarities rounded to this many decimals, once, in `to_scores`.

Why: hnswlib's float32 distances carry ~7 significant digits and the last one depends on the CPU's SIMD
kernels (it is built with -march=native). Rounding once, here, makes the number compared with a threshold,
the number sorted on and the number returned the same value; each is the double nearest to a 6-decimal
number, so it survives JSON and a user who types a shown score as the threshold keeps that hit.
"""


@dataclass(frozen=True, slots=True)
class Allowed:
    """The rows a filter keeps: the filter itself (for a backend that filters on its own) and the rows as arrays."""

    filters: Hashable
    """The query's filters (search.query.options.Filters), opaque here: a backend that filters natively reads them."""
    mask: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.int64]
    flags: bytes
    """One byte per row, 1 where kept: hnswlib's filter callback reads it."""
    vectors: FeatureVector | None
    """The rows' embeddings, contiguous, when few enough to search exactly (the gather was most of the cost)."""

    @property
    def fraction(self) -> float:
        """Share of the collection kept."""
        return len(self.rows) / max(len(self.mask), 1)


class SearchIndex(Protocol):
    """What the engine needs from a vector index: hnswlib's `VectorIndex` or Qdrant's `QdrantIndex`.

    Labels are bundle row numbers; scores cosine similarities rounded by `to_scores`, best first.
    """

    native_filters: bool
    """True: `query` answers a filter with the backend's own filtered search and the Retriever hands it every
    filter; False: the Retriever picks exact search, post-filter or `query`'s filtered walk by measured cost."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    @property
    def ef_search(self) -> int:
        """Beam width of a graph search (what a filtered search is costed against)."""
        ...

    def __len__(self) -> int: ...

    def query(self, vector: FeatureVector, k: int, allowed: Allowed | None = None) -> tuple[Labels, Scores]:
        """The k nearest rows (only `allowed` ones when given; then fewer may come back), best first."""
        ...


class ReadWriteLock:
    """Many concurrent readers or one writer; a waiting writer blocks new readers so it cannot starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared."""
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._writers_waiting == 0)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock exclusively."""
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class VectorIndex:
    """hnswlib index whose labels are row numbers 0..count-1 and whose scores are cosine similarities."""

    native_filters = False  # hnswlib's filter callback is slowest when it keeps many: the Retriever plans

    def __init__(self, raw: hnswlib.Index, params: HnswParams) -> None:
        self._raw = raw
        self._params = params
        self._lock = ReadWriteLock()
        raw.set_ef(params.ef_search)

    @classmethod
    def create(cls, dim: int, params: HnswParams, capacity: int) -> VectorIndex:
        """An empty index with room for `capacity` items (it grows on add when needed)."""
        raw = hnswlib.Index(space="cosine", dim=dim)
        raw.init_index(max_elements=max(capacity, 1), ef_construction=params.ef_construction, M=params.m)
        return cls(raw, params)

    @classmethod
    def build(cls, vectors: FeatureVector, params: HnswParams) -> VectorIndex:
        """An index over `vectors`, labelled by row number."""
        index = cls.create(vectors.shape[1], params, capacity=len(vectors))
        index.add(vectors, np.arange(len(vectors), dtype=np.int64))
        return index

    @classmethod
    def load(cls, path: Path, dim: int, params: HnswParams, count: int | None = None,
             vectors: FeatureVector | None = None) -> VectorIndex:
        """Load a saved index after checking its structure (CorruptIndexError if hnswlib could not walk it safely).

        `count` is the number of items the bundle says it holds; `vectors` its embeddings, of which about
        VECTOR_SAMPLE evenly spaced rows must match the graph's (a graph built from other embeddings is refused;
        comparing every row cost 1.1-1.4 s more at 1M items, a third of the load: bench/hnsw_check.py).
        `params.ef_search` is re-applied because hnswlib does not save it.
        """
        stride = max(1, len(vectors) // VECTOR_SAMPLE) if vectors is not None else 1
        header = check_hnsw_file(path, dim, count, params.m, vectors=vectors, vector_stride=stride)
        raw = hnswlib.Index(space="cosine", dim=dim)
        try:
            # The checked count, not the file's capacity field, sizes hnswlib's allocations (at least 1: it
            # treats a failed malloc(0) as out of memory).
            raw.load_index(str(path), max_elements=max(header.count, 1))
        except (RuntimeError, MemoryError) as exc:
            raise corrupt(one_line(exc, 200)) from None
        return cls(raw, params)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._raw.dim)

    @property
    def params(self) -> HnswParams:
        """The graph parameters this index was built and is searched with."""
        return self._params

    @property
    def ef_search(self) -> int:
        """Beam width of a search."""
        return self._params.ef_search

    def __len__(self) -> int:
        return int(self._raw.get_current_count())

    def set_ef_search(self, ef_search: int) -> None:
        """Change the query-time beam width (recall against speed) without rebuilding the graph."""
        if ef_search < 1:
            raise ValueError(f"ef_search must be at least 1, got {ef_search}")
        with self._lock.writing():
            self._raw.set_ef(ef_search)
            self._params = HnswParams(self._params.m, self._params.ef_construction, ef_search)

    def add(self, vectors: FeatureVector, labels: Labels) -> None:
        """Insert vectors under the given labels, growing capacity as needed."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(labels):
            raise ValueError(f"expected {len(labels)} vectors of dim {self.dim}, got shape {vectors.shape}")
        with self._lock.writing():
            needed = len(self) + len(vectors)
            if needed > self._raw.get_max_elements():
                self._raw.resize_index(max(needed, 2 * self._raw.get_max_elements()))
            self._raw.add_items(vectors, labels)

    def query(self, vector: FeatureVector, k: int, allowed: Allowed | None = None) -> tuple[Labels, Scores]:
        """The k nearest labels with their cosine similarities, best first; k is clamped to the count.

        `allowed`: only its rows may be returned (hnswlib's filter callback walks the graph skipping the others);
        then fewer than k come back when fewer are allowed.
        """
        k = min(k, len(self) if allowed is None else len(allowed.rows))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        with self._lock.reading():
            labels, distances = self._knn(vector.reshape(1, -1), k, None if allowed is None else allowed.flags)
        return labels[0].astype(np.int64), to_scores(distances[0])

    def _knn(self, vectors: FeatureVector, k: int, allowed: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
        try:
            if allowed is None:
                return self._raw.knn_query(vectors, k=k, num_threads=1)
            # bytes.__getitem__ is a C call returning 0/1: the cheapest callback hnswlib can make per node.
            return self._raw.knn_query(vectors, k=k, num_threads=1, filter=allowed.__getitem__)
        except RuntimeError:
            # hnswlib raises when its graph walk reaches fewer than k items (tiny M, clustered data,
            # k near the count). An exact scan of the stored vectors always finds them.
            logger.debug("hnswlib found fewer than %d results; answering by exact search", k)
            return self._exact_knn(vectors, k, allowed)

    def _exact_knn(self, vectors: FeatureVector, k: int, allowed: bytes | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(self._raw.get_ids_list(), dtype=np.int64)
        if allowed is not None:
            labels = labels[np.frombuffer(allowed, np.uint8)[labels] != 0]
        stored = self._raw.get_items(labels, return_type="numpy")  # normalised by hnswlib on add
        query = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = query @ stored.T
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return labels[order], 1.0 - np.take_along_axis(similarity, order, axis=1)

    def save(self, path: Path) -> None:
        """Write the hnswlib graph to `path` (ef_search must be stored elsewhere: the bundle manifest)."""
        with self._lock.reading():
            self._raw.save_index(str(path))


def to_scores(distances: npt.NDArray[np.floating]) -> Scores:
    """hnswlib's cosine distances (1 - cosine similarity) as scores: the one place they are converted and rounded."""
    # Clipped as a last guard of the [-1, 1] contract (the load check already refuses stored vectors that are
    # not unit; float32 rounding alone can give 1.0000001). np.round computes rint(x * 1e6) / 1e6: an integer
    # divided by 1e6, i.e. the double nearest that decimal; +-1 stay exact. `+ 0.0` turns the -0.0 that rounding
    # a tiny negative gives into 0.0.
    similarity = np.clip(1.0 - np.asarray(distances, dtype=np.float64), -1.0, 1.0)
    return np.round(similarity, SCORE_DECIMALS) + 0.0
