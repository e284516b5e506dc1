"""A bundle's `embeddings.npy` as untrusted input: header checked against the manifest and the file size before
any allocation, never a pickle, every row a finite unit vector; then memory-mapped read-only, not copied.

Why a map: at 1 M items the file is 2 GB, and serving reads one row per "more like this" (the graph holds its
own copy of every vector for search). The rows are checked through a small reused buffer, not through the map, so
the check leaves no mapped page resident: RSS grows only by the rows that queries touch (bench/memory.py).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from search.bundle.manifest import EMBEDDINGS_FILE, Manifest
from search.errors import REBUILD_HINT, BundleError
from search.types import FeatureVector, non_unit_rows

NPY_DTYPE = np.dtype("<f4")
CHECK_CHUNK_BYTES = 16 << 20  # rows are checked in blocks of about this size: bounded memory, cache-friendly


def read_embeddings(path: Path, manifest: Manifest) -> FeatureVector:
    """`embeddings.npy` as a read-only, memory-mapped float32 (count, dim) array of unit rows; its header is
    checked against the manifest and the file size before anything is mapped, and no pickle is ever read."""
    expected = (manifest.count, manifest.dim)
    try:
        with path.open("rb") as handle:
            offset = _checked_header(handle, manifest)
            _check_rows(handle, manifest.dim)
            # The same open file is mapped, so the rows served are those of the inode just checked (a file
            # renamed over `path` meanwhile is not picked up).
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if manifest.count else b""
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{EMBEDDINGS_FILE} is not a plain .npy array ({_npy_problem(exc)}); {REBUILD_HINT}") \
            from None
    if not manifest.count:
        return np.empty(expected, np.float32)
    return np.frombuffer(mapped, NPY_DTYPE, count=manifest.count * manifest.dim, offset=offset).reshape(expected)


def _checked_header(handle: BinaryIO, manifest: Manifest) -> int:
    """Where the data starts, once the header declares float32 (count, dim) in C order and the size agrees."""
    expected = (manifest.count, manifest.dim)
    shape, fortran_order, dtype = _npy_header(handle)
    if dtype.hasobject:
        raise ValueError("pickle")
    if dtype != NPY_DTYPE or fortran_order or shape != expected:
        kind = dtype.name if dtype.byteorder in "=<|" else f"{dtype.name} (big-endian)"
        order = " in Fortran order" if fortran_order else ""
        raise BundleError(f"{EMBEDDINGS_FILE} holds {kind} {shape_text(shape)}{order}, expected float32 "
                          f"{expected}; {REBUILD_HINT}")
    offset = handle.tell()
    data_bytes = os.fstat(handle.fileno()).st_size - offset
    if data_bytes != manifest.count * manifest.dim * NPY_DTYPE.itemsize:
        raise BundleError(f"{EMBEDDINGS_FILE} has {data_bytes} bytes of data, not the "
                          f"{manifest.count * manifest.dim * 4} its header declares; {REBUILD_HINT}")
    return offset


def _check_rows(handle: BinaryIO, dim: int) -> None:
    """Every row finite and unit (`non_unit_rows`), read block by block into one buffer from the header's end."""
    row_bytes = dim * NPY_DTYPE.itemsize
    buffer = np.empty((max(1, CHECK_CHUNK_BYTES // row_bytes), dim), NPY_DTYPE)
    rows, bad, first_bad = 0, 0, -1
    while got := handle.readinto(memoryview(buffer).cast("B")):
        if got % row_bytes:
            raise EOFError("the data ends inside a row")  # only if the file changed while being read
        found = non_unit_rows(buffer[:got // row_bytes])
        if len(found) and first_bad < 0:
            first_bad = rows + int(found[0])
        bad, rows = bad + len(found), rows + got // row_bytes
    if bad:
        raise BundleError(f"{EMBEDDINGS_FILE} has {bad} row(s) that are not finite unit vectors (row {first_bad} "
                          f"first); {REBUILD_HINT}")


def _npy_header(handle: Any) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported")


def shape_text(shape: tuple) -> str:
    """An array shape for a message; a hostile header's endless shape is not repeated."""
    return str(shape) if len(str(shape)) <= 60 else "an array of another shape"


def _npy_problem(exc: Exception) -> str:
    # numpy's messages quote header bytes from the file: keep them out, say only what kind of problem it is.
    text = str(exc)
    if "pickle" in text or "object" in text.lower():
        return "it needs pickle, which is never used"
    return "unreadable header or data" if isinstance(exc, ValueError | EOFError) else "read error"


def release_pages(embeddings: FeatureVector) -> None:
    """Unmap the pages of memory-mapped embeddings that the load touched (the graph check samples ~1 000 rows,
    and the kernel maps ~64 KB around each); they stay in the page cache, and a later read maps them again."""
    base = embeddings
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # numpy keeps a view of the buffer it was given
        base = base.obj
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)  # a read-only shared file map: nothing is lost, only unmapped
