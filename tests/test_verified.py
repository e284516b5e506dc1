"""The verification record: a restart skips re-hashing unchanged files, and no change to a file's bytes gets past
it (same size, mtime set back, renamed over, manifest edited), nor does a damaged record."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from search.bundle import verified
from search.bundle.manifest import KEYWORD_FILES
from search.bundle.store import EMBEDDINGS_FILE, INDEX_FILE, MANIFEST_FILE, METADATA_FILE, Bundle
from search.errors import BundleError

MakeBundle = Callable[..., Path]
MARGIN_S = 0.05
CHECKED = sorted([EMBEDDINGS_FILE, INDEX_FILE, METADATA_FILE, *KEYWORD_FILES])  # what a load hashes
CORRUPT = re.escape("is corrupt (sha256 differs from manifest.json)")


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The files read for hashing, by handle name, in order; and a racy margin short enough for a test."""
    seen: list[str] = []
    stream = verified._sha256_stream

    def counting(handle: object) -> str:
        seen.append(Path(handle.name).name)  # type: ignore[attr-defined]
        return stream(handle)

    monkeypatch.setattr(verified, "_sha256_stream", counting)
    monkeypatch.setattr(verified, "RACY_MARGIN_NS", int(MARGIN_S * 1e9))
    yield seen


@pytest.fixture
def bundle(make_bundle: MakeBundle, hashed: list[str], tmp_path: Path) -> Path:
    """A bundle loaded once (so recorded) with the record in a private cache folder."""
    root = fresh_bundle(make_bundle, hashed)
    time.sleep(2 * MARGIN_S)  # older than the racy margin, so the first load records every file
    Bundle.load(root, cache_dir=tmp_path / "cache")
    assert sorted(hashed) == CHECKED
    hashed.clear()
    return root


def fresh_bundle(make_bundle: MakeBundle, hashed: list[str]) -> Path:
    """A new 30-item bundle; the hashing that writing it did is not counted."""
    root = make_bundle(count=30, dim=8)
    hashed.clear()
    return root


def load(root: Path) -> Bundle:
    """Bundle.load with the fixture's cache folder."""
    return Bundle.load(root, cache_dir=root.parent / "cache")


def test_an_unchanged_bundle_is_not_hashed_again(bundle: Path, hashed: list[str]) -> None:
    assert len(load(bundle).catalog) == 30
    assert hashed == []
    record = json.loads(next((bundle.parent / "cache" / "verified").glob("*.json")).read_text())
    assert sorted(record["files"]) == CHECKED


def test_bytes_changed_in_place_with_size_and_mtime_kept_are_refused(bundle: Path, hashed: list[str]) -> None:
    path = bundle / EMBEDDINGS_FILE
    before = os.stat(path)
    with path.open("r+b") as handle:  # one byte of the last row: still a plausible file
        handle.seek(-3, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-3, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back; the kernel still sets ctime
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    with pytest.raises(BundleError, match=f"embeddings.npy {CORRUPT}"):
        load(bundle)
    assert hashed == [EMBEDDINGS_FILE]


def test_a_file_renamed_over_with_size_and_mtime_kept_is_refused(bundle: Path, hashed: list[str]) -> None:
    path = bundle / METADATA_FILE
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    other = bundle / ".swap"
    other.write_bytes(bytes(data))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    with pytest.raises(BundleError, match=f"metadata.parquet {CORRUPT}"):
        load(bundle)
    assert hashed == [METADATA_FILE]


def test_a_manifest_edited_to_another_checksum_is_refused(bundle: Path, hashed: list[str]) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"][INDEX_FILE] = "0" * 64  # the file is the recorded version; the record never overrides this
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"index.hnsw {CORRUPT}"):
        load(bundle)
    assert hashed == []


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"version": 1, "files": {"index.hnsw": [1, 2]}}',
                                    b'{"version": 2, "files": {}}', b"[]"])
def test_a_damaged_record_only_costs_hashing(bundle: Path, hashed: list[str], damage: bytes) -> None:
    next((bundle.parent / "cache" / "verified").glob("*.json")).write_bytes(damage)
    assert len(load(bundle).catalog) == 30
    assert sorted(hashed) == CHECKED
    hashed.clear()
    load(bundle)
    assert hashed == []  # and the record is whole again


def test_files_changed_just_before_hashing_are_not_recorded(make_bundle: MakeBundle, hashed: list[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verified, "RACY_MARGIN_NS", 3600 * 10**9)  # every file counts as just written
    root = fresh_bundle(make_bundle, hashed)
    load(root)
    load(root)
    assert sorted(hashed) == sorted(CHECKED * 2)


def test_a_cache_folder_that_cannot_be_written_only_costs_hashing(make_bundle: MakeBundle, hashed: list[str],
                                                                  tmp_path: Path) -> None:
    root = fresh_bundle(make_bundle, hashed)
    (tmp_path / "a-file").write_text("not a folder")
    for _ in range(2):
        assert len(Bundle.load(root, cache_dir=tmp_path / "a-file").catalog) == 30
    assert len(hashed) == 2 * len(CHECKED)


def test_big_files_hashed_in_threads_are_still_checked(make_bundle: MakeBundle, hashed: list[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verified, "PARALLEL_MIN_BYTES", 0)  # every file goes to the thread pool
    root = make_bundle(count=30, dim=8)
    data = bytearray((root / INDEX_FILE).read_bytes())
    data[-5] ^= 0x10
    (root / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"index.hnsw {CORRUPT}"):
        load(root)
