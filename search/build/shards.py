"""Build checkpoints: shards of embeddings + item rows, written atomically so a killed build loses nothing.

A shard is `shard-NNNNNN.npy` (float32 vectors of its ok rows, in order) and `shard-NNNNNN.parquet`
(one row per item, ok or failed, with its metadata). The parquet file is written last and is the commit
point: a `.npy` without its parquet file is an interrupted write and is ignored, then overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from search.bundle.durable import atomic_write
from search.errors import SearchError
from search.types import FeatureVector

logger = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
FAILURE_COLUMNS = ("id", "image", "reason")


class ShardError(SearchError):
    """A checkpoint folder whose shards do not agree with each other."""


@dataclass(frozen=True, slots=True)
class Collected:
    """Everything the committed shards hold: ok rows with their vectors, and failures (deduplicated)."""

    embeddings: FeatureVector
    metadata: pa.Table
    failures: pa.Table


class ShardStore:
    """The committed shards of one build folder, and the writer of new ones."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        folder.mkdir(parents=True, exist_ok=True)
        self._numbers = sorted(int(path.stem.split("-")[1]) for path in folder.glob("shard-*.parquet"))

    def _path(self, number: int, suffix: str) -> Path:
        return self.folder / f"shard-{number:06d}{suffix}"

    def write(self, rows: list[Mapping[str, Any]], embeddings: FeatureVector) -> None:
        """Commit one shard: rows in order (status ok or failed), vectors of the ok rows in the same order."""
        ok = sum(row["status"] == STATUS_OK for row in rows)
        if embeddings.shape != (ok, self.dim) or embeddings.dtype != np.float32:
            raise ValueError(f"shard needs float32 ({ok}, {self.dim}) vectors, got {embeddings.dtype} "
                             f"{embeddings.shape}")
        number = (self._numbers[-1] + 1) if self._numbers else 0
        atomic_write(self._path(number, ".npy"), lambda tmp: np.save(tmp, embeddings, allow_pickle=False))
        table = pa.Table.from_pylist(list(rows))
        atomic_write(self._path(number, ".parquet"), lambda tmp: pq.write_table(table, tmp))
        self._numbers.append(number)
        logger.debug("committed shard %d: %d ok, %d failed", number, ok, len(rows) - ok)

    def tables(self) -> list[pa.Table]:
        """The item rows of every committed shard, in commit order."""
        return [pq.read_table(self._path(number, ".parquet")) for number in self._numbers]

    def done_ids(self, include_failed: bool = True) -> set[str]:
        """Ids already recorded; failed ones only when `include_failed` (else they are tried again)."""
        done: set[str] = set()
        for table in self.tables():
            kept = table if include_failed else table.filter(pc.equal(table["status"], STATUS_OK))
            done.update(kept.column("id").to_pylist())
        return done

    def collect(self) -> Collected:
        """All ok rows (first occurrence of each id) with their vectors, and failures of ids never ok."""
        tables, vectors = [], []
        for number, table in zip(self._numbers, self.tables(), strict=True):
            ok = table.filter(pc.equal(table["status"], STATUS_OK))
            array = _load_plain(self._path(number, ".npy"))
            if array.shape != (ok.num_rows, self.dim):
                raise ShardError(f"shard {number} of {self.folder} holds {array.shape} vectors for {ok.num_rows} "
                                 "ok rows; delete that folder to start the build over")
            tables.append(table)
            vectors.append(array)
        rows = pa.concat_tables(tables, promote_options="default") if tables else pa.table(
            {"id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
        stacked = np.concatenate(vectors) if vectors else np.empty((0, self.dim), np.float32)
        return _deduplicated(rows, stacked.astype(np.float32, copy=False))


def _load_plain(path: Path) -> FeatureVector:
    # allow_pickle=False refuses object arrays, whose loading could run code; say what to do instead.
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ShardError(f"{path} is not a plain .npy array ({exc}); delete {path.parent} to start the "
                         "build over") from exc


def _deduplicated(rows: pa.Table, vectors: FeatureVector) -> Collected:
    ok_mask = np.asarray(pc.equal(rows["status"], STATUS_OK).to_numpy(zero_copy_only=False), bool)
    ids = rows.column("id").to_pylist()
    keep_rows, keep_vectors, seen = [], [], set()
    for position, vector_row in zip(np.flatnonzero(ok_mask), range(int(ok_mask.sum())), strict=True):
        if ids[position] not in seen:  # a retried id can succeed twice only if the source repeats it
            seen.add(ids[position])
            keep_rows.append(position)
            keep_vectors.append(vector_row)
    bookkeeping = [name for name in ("status", "reason") if name in rows.column_names]
    metadata = rows.take(pa.array(keep_rows, pa.int64())).drop_columns(bookkeeping)
    failed: dict[str, tuple[str, str]] = {}
    images = rows.column("image").to_pylist() if "image" in rows.column_names else [None] * len(ids)
    reasons = rows.column("reason").to_pylist() if "reason" in rows.column_names else [None] * len(ids)
    for position in np.flatnonzero(~ok_mask):
        if ids[position] not in seen:
            failed[ids[position]] = (images[position], reasons[position])  # the latest reason wins
    failures = pa.table({"id": list(failed), "image": [v[0] for v in failed.values()],
                         "reason": [v[1] for v in failed.values()]},
                        schema=pa.schema([(name, pa.string()) for name in FAILURE_COLUMNS]))
    return Collected(vectors[keep_vectors], metadata, failures)
