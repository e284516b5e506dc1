"""Structural check of an hnswlib 0.8 `index.hnsw` before native code walks it (the file is untrusted input).

hnswlib trusts its file: a neighbour id, entry point or level out of range makes a query read outside its
buffers (a segfault). This module proves, with numpy and without hnswlib, that every pointer hnswlib will
follow stays inside the arrays it allocates. The layout (hnswalg.h, saveIndex/loadIndex, v0.8.0):

- header, packed little-endian: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
  label_offset, offsetData (size_t each), maxlevel (int32), enterpoint_node (uint32), maxM, maxM0, M
  (size_t), mult (double), ef_construction (size_t): 96 bytes;
- cur_element_count level-0 records of size_data_per_element bytes: a uint32 whose low 16 bits count the
  links (byte 2 holds the deleted mark), maxM0 uint32 neighbour ids, dim float32, a uint64 label;
- then for each element a uint32 linkListSize and that many bytes: one list per upper level, each a
  uint32 count plus maxM uint32 ids (4 * (1 + maxM) bytes); the element's level is linkListSize / that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from search.errors import BundleError
from search.types import non_unit_rows

INDEX_NAME = "index.hnsw"
HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("maxlevel", "<i4"), ("entry_point", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])
NO_ENTRY_POINT = 0xFFFFFFFF  # hnswlib's tableint(-1): the entry point of an empty index
MAX_M = 10_000  # hnswlib caps M here
MAX_EF_CONSTRUCTION = 1 << 20
LEVEL0_CHUNK_BYTES = 64 << 20  # level-0 records are read in blocks of about this size: bounded memory
UPPER_CHUNK_LISTS = 1 << 16  # upper-level lists checked per block
COUNT_MASK = 0xFFFF  # hnswlib reads a link count as an unsigned short; the upper bytes must stay 0


class CorruptIndexError(BundleError):
    """An `index.hnsw` whose structure hnswlib could not walk safely (or that disagrees with its bundle)."""


@dataclass(frozen=True, slots=True)
class HnswHeader:
    """The checked header fields that the rest of the check needs."""

    count: int
    dim: int
    max_m: int
    max_m0: int
    size_per_element: int
    maxlevel: int
    entry_point: int


def corrupt(reason: str) -> CorruptIndexError:
    """The one-line error for a bad file; names only the bundle's own file."""
    return CorruptIndexError(f"{INDEX_NAME} is corrupt or not an hnswlib 0.8 cosine index ({reason}); "
                             "download the bundle again or rebuild its index from embeddings.npy")


def check_hnsw_file(path: Path, dim: int, count: int | None = None, m: int | None = None, *,
                    vectors: npt.NDArray[np.float32] | None = None, vector_stride: int = 1) -> HnswHeader:
    """Raise CorruptIndexError unless `path` is an hnswlib index of `dim` (and `count` items, `m` links) safe to load.

    With `vectors` (row i = the item labelled i), the stored vectors of every `vector_stride`-th record must
    also be those rows, normalised: a consistency check, not a safety one (vector values steer no memory access).
    """
    if vectors is not None and (count is None or vectors.shape != (count, dim)):
        raise ValueError(f"vectors must have shape (count, {dim}), got {vectors.shape} for count {count}")
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(0)
            header = _check_header(file.read(HEADER.itemsize), size, dim, count, m)
            _check_level0(file, header, vectors, vector_stride)
            region = file.read(size - file.tell())
    except OSError as exc:
        raise CorruptIndexError(f"{INDEX_NAME} cannot be read ({exc.strerror or type(exc).__name__}); "
                                "download the bundle again") from None
    element_levels, list_starts = _parse_upper_region(region, header)
    _check_upper_lists(np.frombuffer(region, "<u4"), header, element_levels, list_starts)
    _check_levels(header, element_levels)
    return header


def _check_header(raw: bytes, size: int, dim: int, count: int | None, m: int | None) -> HnswHeader:
    if len(raw) < HEADER.itemsize:
        raise corrupt(f"{size} bytes, shorter than the {HEADER.itemsize}-byte header")
    h = {name: value.item() for name, value in zip(HEADER.names, np.frombuffer(raw, HEADER)[0], strict=True)}
    graph_m = h["m"]
    if not 2 <= graph_m <= MAX_M or h["max_m"] != graph_m or h["max_m0"] != 2 * graph_m:
        raise corrupt(f"link limits M={graph_m}, maxM={h['max_m']}, maxM0={h['max_m0']} are inconsistent")
    if m is not None and graph_m != m:
        raise corrupt(f"graph built with M={graph_m}, the manifest says M={m}")
    links0 = 4 * (1 + h["max_m0"])
    stored_dim, rest = divmod(h["size_per_element"] - links0 - 8, 4)
    if stored_dim != dim or rest:
        raise corrupt(f"records of {h['size_per_element']} bytes hold vectors of dim {stored_dim}, expected {dim}")
    if (h["offset_level0"], h["offset_data"], h["label_offset"]) != (0, links0, links0 + 4 * dim):
        raise corrupt("record offsets do not match the record layout")
    n = h["count"]
    if count is not None and n != count:
        raise corrupt(f"it holds {n} items, the manifest says {count}")
    if n >= NO_ENTRY_POINT or HEADER.itemsize + n * (h["size_per_element"] + 4) > size:
        raise corrupt(f"{n} items do not fit in its {size} bytes (truncated?)")
    upper_bytes = size - HEADER.itemsize - n * h["size_per_element"]
    if upper_bytes > 4 * n + (2 * n + 64) * 4 * (1 + graph_m):  # a real graph has about n / (M - 1) lists
        raise corrupt(f"{upper_bytes} bytes of upper-level links are far more than {n} items can have")
    if not n <= h["max_elements"] <= 2 * n + 1024:
        raise corrupt(f"capacity {h['max_elements']} is not between the item count {n} and twice it")
    mult = h["mult"]
    if not (math.isfinite(mult) and math.isclose(mult, 1 / math.log(graph_m), rel_tol=1e-9)):
        raise corrupt(f"level multiplier {mult!r} is not 1/ln(M)")
    if not graph_m <= h["ef_construction"] <= MAX_EF_CONSTRUCTION:
        raise corrupt(f"ef_construction {h['ef_construction']} is out of range")
    entry, maxlevel = h["entry_point"], h["maxlevel"]
    if (n == 0 and (entry, maxlevel) != (NO_ENTRY_POINT, -1)) or (n > 0 and (entry >= n or maxlevel < 0)):
        raise corrupt(f"entry point {entry} at level {maxlevel} is out of range for {n} items")
    return HnswHeader(n, dim, h["max_m"], h["max_m0"], h["size_per_element"], maxlevel, entry)


def _record_dtype(header: HnswHeader) -> np.dtype:
    return np.dtype({"names": ["links", "ids", "vector", "label"],
                     "formats": ["<u4", ("<u4", (header.max_m0,)), ("<f4", (header.dim,)), "<u8"],
                     "offsets": [0, 4, 4 * (1 + header.max_m0), 4 * (1 + header.max_m0 + header.dim)],
                     "itemsize": header.size_per_element})


def _check_level0(file: BinaryIO, header: HnswHeader, vectors: npt.NDArray[np.float32] | None,
                  vector_stride: int) -> None:
    """Link counts, neighbour ids, labels (a permutation of 0..count-1), unit vectors and optionally the bundle's
    rows, block by block."""
    record = _record_dtype(header)
    per_block = max(1, LEVEL0_CHUNK_BYTES // header.size_per_element)
    buffer = np.empty(min(per_block, header.count) * header.size_per_element, np.uint8)
    seen = np.zeros(header.count, bool)
    slots = np.arange(header.max_m0, dtype=np.uint32)
    for start in range(0, header.count, per_block):
        n = min(per_block, header.count - start)
        view = memoryview(buffer)[: n * header.size_per_element]
        if file.readinto(view) != len(view):
            raise corrupt("the level-0 records are truncated")
        records = np.frombuffer(view, record)
        counts = records["links"] & COUNT_MASK
        bad = np.flatnonzero((records["links"] >> 16 != 0) | (counts > header.max_m0))
        if len(bad):
            raise corrupt(f"item {start + bad[0]} has a level-0 link count above {header.max_m0} or a deleted mark")
        used = slots < counts[:, None]
        if np.any(records["ids"][used] >= header.count):
            raise corrupt(f"a level-0 neighbour id is not below the item count {header.count}")
        labels = records["label"]
        if np.any(labels >= header.count):
            raise corrupt(f"a label is not below the item count {header.count}")
        seen[labels.astype(np.intp)] = True
        _check_unit(records["vector"], labels)
        if vectors is not None:
            first = -start % vector_stride  # records start, start + stride, ... of the whole file
            _check_vectors(records["vector"][first::vector_stride], vectors, labels[first::vector_stride])
    if not seen.all():  # count labels, each below count, all seen: a permutation
        raise corrupt("labels are not the row numbers 0..count-1, each once")


def _check_unit(stored: np.ndarray, labels: np.ndarray) -> None:
    """Every stored vector finite with norm 1 (±UNIT_TOLERANCE): cosine scores then stay in [-1, 1].

    hnswlib computes 1 - dot(query, stored) without normalising the stored side, so a scaled record would
    put its item first with a score far above 1, and a NaN record would silently drop out of results.
    """
    bad = non_unit_rows(stored)
    if len(bad):
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.sqrt(np.dot(stored[bad[0]], stored[bad[0]])))
        raise corrupt(f"the stored vector of item {labels[bad[0]]} is not a finite unit vector: norm {norm:.6g}")


def _check_vectors(stored: np.ndarray, vectors: npt.NDArray[np.float32], labels: np.ndarray) -> None:
    """Stored vectors must be the bundle's rows normalised (hnswlib normalises on add in cosine space)."""
    expected = vectors[labels.astype(np.intp)]
    norms = np.sqrt(np.einsum("ij,ij->i", expected, expected))
    error = stored * norms[:, None]  # |stored * norm - row| <= 1e-5 * norm, with as few temporaries as possible
    error -= expected
    np.abs(error, out=error)
    # float32 normalisation by two code paths differs by a few ulp; 1e-5 is far below any real mismatch.
    if not np.all(error.max(axis=1, initial=0.0) <= 1e-5 * norms):  # NaN anywhere fails too
        raise corrupt("its stored vectors differ from embeddings.npy")


def _parse_upper_region(region: bytes, header: HnswHeader) -> tuple[np.ndarray, np.ndarray]:
    """Each element's level and the word index of its first upper-level list; the region must end exactly."""
    if len(region) % 4:
        raise corrupt("the upper-level link lists are not whole 32-bit words")
    words = np.frombuffer(region, "<u4")
    per_level = 1 + header.max_m  # words in one upper-level list
    levels = np.zeros(header.count, np.int64)
    starts = np.zeros(header.count, np.int64)
    nonzero = np.flatnonzero(words)
    position = element = 0
    # Most elements have linkListSize 0; jump over such runs to the next non-zero word, which is the next size
    # word with a list: the loop runs once per element with upper levels (about count / (M - 1) of them).
    while element < header.count:
        found = int(np.searchsorted(nonzero, position))
        following = int(nonzero[found]) if found < len(nonzero) else len(words)
        if element + (following - position) >= header.count:  # the rest have no upper levels
            position += header.count - element
            break
        if found == len(nonzero):
            raise corrupt("the upper-level link lists are truncated")
        element += following - position
        level, rest = divmod(int(words[following]), 4 * per_level)
        if rest:
            raise corrupt(f"item {element} has {words[following]} bytes of upper links, not whole levels")
        levels[element], starts[element] = level, following + 1
        position = following + 1 + level * per_level
        if position > len(words):
            raise corrupt("the upper-level link lists are truncated")
        element += 1
    if position != len(words):
        raise corrupt(f"its size does not match its contents ({4 * (len(words) - position):+d} bytes at the end)")
    return levels, starts


def _check_upper_lists(words: np.ndarray, header: HnswHeader, levels: np.ndarray, starts: np.ndarray) -> None:
    """Every upper-level list: count <= maxM, neighbours < count and themselves present at that level."""
    owners = np.flatnonzero(levels)
    owner_levels = levels[owners]
    per_level = 1 + header.max_m
    first_list = np.repeat(np.cumsum(owner_levels) - owner_levels, owner_levels)
    list_level = np.arange(int(owner_levels.sum())) - first_list + 1  # 1..level for each owner, in file order
    list_start = np.repeat(starts[owners], owner_levels) + (list_level - 1) * per_level
    columns = np.arange(per_level)
    for lo in range(0, len(list_start), UPPER_CHUNK_LISTS):
        block = words[list_start[lo:lo + UPPER_CHUNK_LISTS, None] + columns]
        counts = block[:, 0] & COUNT_MASK
        if np.any(block[:, 0] >> 16) or np.any(counts > header.max_m):
            raise corrupt(f"an upper-level link count above {header.max_m}")
        used = columns[1:] <= counts[:, None]
        ids = block[:, 1:][used]
        if np.any(ids >= header.count):
            raise corrupt(f"an upper-level neighbour id is not below the item count {header.count}")
        needed = np.broadcast_to(list_level[lo:lo + UPPER_CHUNK_LISTS, None], used.shape)[used]
        if np.any(levels[ids] < needed):
            raise corrupt("an upper-level link points at an item that has no list at that level")


def _check_levels(header: HnswHeader, levels: np.ndarray) -> None:
    if header.count and (int(levels.max()) != header.maxlevel or levels[header.entry_point] != header.maxlevel):
        raise corrupt(f"maxlevel {header.maxlevel} is not the level of the entry point and the top level")
