"""embeddings.npy read as a read-only memory map: still refused when rows are not finite unit vectors, when the
header or size disagree with the manifest, and served from the file that was checked."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from search.bundle import embeddings as embeddings_module
from search.bundle.embeddings import read_embeddings
from search.bundle.manifest import Manifest
from search.bundle.store import EMBEDDINGS_FILE, Bundle, read_manifest
from search.errors import BundleError
from tests.conftest import unit_vectors

MakeBundle = Callable[..., Path]


@pytest.fixture
def bundle(make_bundle: MakeBundle) -> tuple[Path, Manifest]:
    """A 40 x 8 bundle's embeddings path and manifest."""
    root = make_bundle(count=40, dim=8)
    return root / EMBEDDINGS_FILE, read_manifest(root)


def test_rows_are_mapped_read_only_not_copied(bundle: tuple[Path, Manifest]) -> None:
    path, manifest = bundle
    array = read_embeddings(path, manifest)
    np.testing.assert_array_equal(array, unit_vectors(40, 8))
    assert array.dtype == np.float32 and array.shape == (40, 8)
    assert not array.flags.owndata and not array.flags.writeable  # a view of the map
    with pytest.raises(ValueError, match="read-only"):
        array[0, 0] = 2.0
    assert np.load(path)[0, 0] != 2.0


def test_the_checked_file_is_what_is_served(bundle: tuple[Path, Manifest]) -> None:
    path, manifest = bundle
    array = read_embeddings(path, manifest)
    other = path.with_name("other.npy")
    np.save(other, unit_vectors(40, 8, seed=9))
    os.replace(other, path)  # a file renamed over the checked one afterwards is not picked up
    np.testing.assert_array_equal(array, unit_vectors(40, 8))


@pytest.mark.parametrize("rows, value, first", [
    ([7, 11, 30], np.nan, 7), ([33], np.inf, 33), ([0, 39], 1.5, 0), ([20], 0.0, 20),
])
def test_bad_rows_in_any_block_are_refused(bundle: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch,
                                           rows: list[int], value: float, first: int) -> None:
    path, manifest = bundle
    monkeypatch.setattr(embeddings_module, "CHECK_CHUNK_BYTES", 3 * 8 * 4)  # 3 rows a block: 14 blocks
    array = unit_vectors(40, 8)
    array[rows] = value if not np.isfinite(value) or value == 0.0 else array[rows] * value
    np.save(path, array)
    with pytest.raises(BundleError, match=rf"has {len(rows)} row\(s\) that are not finite unit vectors "
                                          rf"\(row {first} first\)"):
        read_embeddings(path, manifest)


def test_a_header_of_another_shape_is_refused(bundle: tuple[Path, Manifest]) -> None:
    path, manifest = bundle
    np.save(path, unit_vectors(40, 9))
    with pytest.raises(BundleError, match=r"holds float32 \(40, 9\), expected float32 \(40, 8\)"):
        read_embeddings(path, manifest)


def test_a_file_cut_short_or_padded_is_refused(bundle: tuple[Path, Manifest]) -> None:
    path, manifest = bundle
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(BundleError, match="has 1276 bytes of data, not the 1280"):
        read_embeddings(path, manifest)
    path.write_bytes(data + b"\0" * 32)
    with pytest.raises(BundleError, match="has 1312 bytes of data, not the 1280"):
        read_embeddings(path, manifest)


def test_no_rows_maps_nothing(bundle: tuple[Path, Manifest]) -> None:
    path, manifest = bundle
    np.save(path, np.empty((0, 8), np.float32))
    array = read_embeddings(path, dataclasses.replace(manifest, count=0))  # mmap refuses an empty range
    assert array.shape == (0, 8) and array.dtype == np.float32


def resident_kb(path: Path) -> int:
    """KB of `path` mapped into this process and resident (Linux /proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            current = fields[5] if len(fields) > 5 else None
        elif fields[0] == "Rss:" and current == str(path):
            total += int(fields[1])
    return total


def test_loading_leaves_no_row_resident_until_read(make_bundle: MakeBundle) -> None:
    root = make_bundle(count=4000, dim=64)  # 1 MB of rows
    path = (root / EMBEDDINGS_FILE).resolve()
    array = read_embeddings(path, read_manifest(root))
    assert resident_kb(path) == 0  # the check read through a buffer, not the map
    bundle = Bundle.load(root)  # the graph check samples rows through the map; the load unmaps them again
    assert resident_kb(path) == 0
    assert float(np.abs(bundle.embeddings).sum()) > 0 and float(np.abs(array).sum()) > 0
    assert resident_kb(path) >= 1000  # now read: every page of both maps
