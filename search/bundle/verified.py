"""Checksums of bundle files, computed once per file version: a record in the cache folder lets a restart skip
re-hashing gigabytes while any change to a file's bytes still makes it hashed (and refused) again.

The record maps each verified file to the sha256 it hashed to and the identity of the file version that was
hashed: (device, inode, size, mtime_ns, ctime_ns) from the very descriptor that was read. A file's bytes cannot
change through the file system without its ctime changing: writing sets mtime and ctime to "now", `os.utime`
can set mtime back but sets ctime to "now", and a file renamed into place is another inode with its own ctime.
Only the kernel sets ctime, so matching it after a change needs root (setting the system clock, or writing the
block device), which is beyond the reach of this check anyway (root can change the code). The record lives in
SEARCH_CACHE_DIR, the folder whose ONNX export the app already runs, so it is trusted as much as that is.
Two guards keep it exact: a file whose ctime is within RACY_MARGIN_NS of the hash's start is not recorded (a
file system with coarse timestamps could give a write right after the hash the same ctime: git's "racy clean"
problem), nor is one whose identity changed while it was being hashed. See docs/reliability-and-trust.md, "Trust model".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 << 20
RACY_MARGIN_NS = 2_000_000_000  # > the coarsest timestamps of common file systems (FAT: 2 s mtime)
PARALLEL_MIN_BYTES = 8 << 20  # files at least this large are hashed in worker threads (hashlib frees the GIL)

FileKey = tuple[int, int, int, int, int]
"""st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns of a file version."""


class UnreadableFileError(Exception):
    """A listed file that could not be read: its bundle-relative name and the system's reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def file_key(status: os.stat_result) -> FileKey:
    """The identity of one version of a file (see the module docstring for why this set)."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as handle:
        return _sha256_stream(handle)


def _sha256_stream(handle: object) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):  # type: ignore[attr-defined]
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class VerificationRecord:
    """The files of one bundle folder already hashed, by name: their version's FileKey and sha256."""

    path: Path
    entries: dict[str, tuple[FileKey, str]] = field(default_factory=dict)
    hashed: int = 0  # files this load really read (the rest came from the record): for tests and benches

    @classmethod
    def open(cls, cache_dir: Path, bundle_folder: str) -> VerificationRecord:
        """The record for the bundle at real path `bundle_folder`; empty when missing or unreadable."""
        name = hashlib.sha256(bundle_folder.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        record = cls(Path(cache_dir).expanduser() / "verified" / f"{name}.json")
        record.entries = _read_entries(record.path)
        return record

    def digests(self, paths: dict[str, Path]) -> dict[str, str]:
        """sha256 of every file: from the record where its version is the one recorded, else hashed (the big
        files in worker threads) and recorded when safe (see the module docstring)."""
        big = {name: path for name, path in paths.items() if _size(path) >= PARALLEL_MIN_BYTES}
        with ThreadPoolExecutor(max_workers=max(1, min(len(big), os.cpu_count() or 1)),
                                thread_name_prefix="sha256") as pool:
            pending = {name: pool.submit(self._digest, name, path) for name, path in big.items()}
            results = {name: self._digest(name, path) for name, path in paths.items() if name not in big}
            results.update({name: future.result() for name, future in pending.items()})
        for name, (_, entry, hashed) in results.items():
            self.hashed += hashed
            if entry is not None:
                self.entries[name] = entry
            elif hashed:
                self.entries.pop(name, None)  # changed recently or while read: hash it again next time
        return {name: digest for name, (digest, _, _) in results.items()}

    def _digest(self, name: str, path: Path) -> tuple[str, tuple[FileKey, str] | None, bool]:
        """(sha256, the entry to keep or None, whether the file was read); runs in worker threads."""
        try:
            with path.open("rb") as handle:
                before = file_key(os.fstat(handle.fileno()))
                known = self.entries.get(name)
                if known is not None and known[0] == before:
                    return known[1], known, False
                started = time.time_ns()
                value = _sha256_stream(handle)
                after = file_key(os.fstat(handle.fileno()))
        except OSError as exc:
            raise UnreadableFileError(name, exc.strerror or type(exc).__name__) from None
        safe = after == before and before[4] <= started - RACY_MARGIN_NS
        return value, (before, value) if safe else None, True

    def text(self, names: set[str]) -> str:
        """The record as JSON, keeping only `names` (the files of the manifest just verified)."""
        files = {name: [*key, digest] for name, (key, digest) in sorted(self.entries.items()) if name in names}
        return json.dumps({"version": RECORD_VERSION, "files": files}, separators=(",", ":"))


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # hashed in this thread, where the error is reported


def _read_entries(path: Path) -> dict[str, tuple[FileKey, str]]:
    """The record's entries; any problem (missing, too large, not this format) gives none: everything is hashed."""
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(MAX_RECORD_BYTES + 1) or b"null")
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("files"),
                                                                                               dict):
        return {}
    entries = {}
    for name, entry in data["files"].items():
        if isinstance(entry, list) and len(entry) == 6 and all(type(v) is int for v in entry[:5]) \
                and isinstance(entry[5], str):
            entries[name] = (tuple(entry[:5]), entry[5])
    return entries  # type: ignore[return-value]
