"""A bundle's `embeddings.npy` as untrusted input: header checked against the manifest and the file size before
any allocation, never a pickle, and every row a finite unit vector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import BundleError
from search.manifest import EMBEDDINGS_FILE, REBUILD_HINT, Manifest
from search.types import FeatureVector, non_unit_rows

NPY_DTYPE = np.dtype("<f4")


def read_embeddings(path: Path, manifest: Manifest) -> FeatureVector:
    """`embeddings.npy` as float32 (count, dim) unit rows; its header is checked against the manifest and the
    file size before any array is allocated, and no pickle is ever read."""
    expected = (manifest.count, manifest.dim)
    try:
        with path.open("rb") as handle:
            shape, fortran_order, dtype = _npy_header(handle)
            if dtype.hasobject:
                raise ValueError("pickle")
            if dtype != NPY_DTYPE or fortran_order or shape != expected:
                kind = dtype.name if dtype.byteorder in "=<|" else f"{dtype.name} (big-endian)"
                order = " in Fortran order" if fortran_order else ""
                raise BundleError(f"{EMBEDDINGS_FILE} holds {kind} {_shape(shape)}{order}, expected float32 "
                                  f"{expected}; {REBUILD_HINT}")
            data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
            if data_bytes != manifest.count * manifest.dim * NPY_DTYPE.itemsize:
                raise BundleError(f"{EMBEDDINGS_FILE} has {data_bytes} bytes of data, not the "
                                  f"{manifest.count * manifest.dim * 4} its header declares; {REBUILD_HINT}")
            embeddings = np.fromfile(handle, NPY_DTYPE, count=manifest.count * manifest.dim).reshape(expected)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{EMBEDDINGS_FILE} is not a plain .npy array ({_npy_problem(exc)}); {REBUILD_HINT}") \
            from None
    check_unit_rows(embeddings)
    return embeddings.astype(np.float32, copy=False)


def _npy_header(handle: Any) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported")


def _shape(shape: tuple) -> str:
    return str(shape) if len(str(shape)) <= 60 else "an array of another shape"


def _npy_problem(exc: Exception) -> str:
    # numpy's messages quote header bytes from the file: keep them out, say only what kind of problem it is.
    text = str(exc)
    if "pickle" in text or "object" in text.lower():
        return "it needs pickle, which is never used"
    return "unreadable header or data" if isinstance(exc, ValueError | EOFError) else "read error"


def check_unit_rows(embeddings: FeatureVector) -> None:
    """Every row finite with an L2 norm within UNIT_TOLERANCE of 1 (NaN and inf rows fail the comparison)."""
    bad = non_unit_rows(embeddings)
    if len(bad):
        raise BundleError(f"{EMBEDDINGS_FILE} has {len(bad)} row(s) that are not finite unit vectors (row "
                          f"{int(bad[0])} first); {REBUILD_HINT}")
