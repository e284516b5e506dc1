"""A size budget for a folder that untrusted requests write into (gradio's upload cache): what its files and
folders take on disk, measured, plus what was charged since the measure."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

from search.errors import SearchError


class StorageFullError(SearchError):
    """Storing more would take a folder past its DiskBudget."""


RESCAN_S = 1.0
"""How old a DiskBudget's measure of its folder may get while bytes are charged: how soon deleted files free space."""
EMPTY_FOLDER_AGE_S = 60.0
"""How long a top-level folder of a DiskBudget's folder stays once empty: gradio's cache deletion removes files and
leaves their per-file folders, which would otherwise fill the budget with empty folders (4 KiB each) for ever. The
age keeps a folder that gradio has just made, for a file about to be moved into it."""


class DiskBudget:
    """At most `max_bytes` held under `folder`, as the disk counts it (files, partial files and folders alike).

    What is held is the folder's last measure plus what was charged since that measure began; the measure is redone
    when it is over `rescan_s` old (call `measure_if_stale` off the event loop: it walks the folder), so space frees
    as files are deleted, and what was written there without a charge is counted within that time."""

    def __init__(self, folder: Path, max_bytes: int, rescan_s: float = RESCAN_S) -> None:
        self.folder, self.max_bytes, self.rescan_s = folder, max_bytes, rescan_s
        self._lock, self._measuring = threading.Lock(), threading.Lock()
        self._measured, self._charged, self._measured_at = 0, 0, -math.inf

    def held(self) -> int:
        """Bytes counted as held now."""
        with self._lock:
            return self._measured + self._charged

    def stale(self) -> bool:
        """Whether the last measure is over `rescan_s` old."""
        return time.monotonic() - self._measured_at >= self.rescan_s

    def measure_if_stale(self) -> None:
        """Walk the folder again (pruning folders long empty) when the last measure is stale; blocks while it walks."""
        with self._measuring:
            if not self.stale():
                return  # another thread measured meanwhile
            began = time.monotonic()
            with self._lock:
                charged_before = self._charged
            prune_empty_folders(self.folder, EMPTY_FOLDER_AGE_S)
            held = held_bytes(self.folder)
            with self._lock:  # charges made during the walk may be missing from it: they stay counted
                self._measured, self._charged, self._measured_at = held, self._charged - charged_before, began

    def check(self, size: int) -> None:
        """Raise StorageFullError where `size` more bytes would pass the budget."""
        with self._lock:
            self._check(size)

    def charge(self, size: int) -> None:
        """Count `size` more bytes as held; StorageFullError (nothing counted) where that passes the budget."""
        with self._lock:
            self._check(size)
            self._charged += size

    def _check(self, size: int) -> None:
        if self._measured + self._charged + size > self.max_bytes:
            raise StorageFullError(f"the server holds as many recent uploads as it may ({self.max_bytes / 2**20:.0f} "
                                   "MiB); try again in a few minutes, as older ones are deleted")


def held_bytes(folder: Path) -> int:
    """What `folder`'s files and folders take on disk (the larger of size and allocated blocks of each)."""
    total, pending = 0, [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue  # deleted meanwhile
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += max(stat.st_size, getattr(stat, "st_blocks", 0) * 512)
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return total


def prune_empty_folders(folder: Path, age_s: float) -> None:
    """Remove the top-level folders of `folder` that are empty and unchanged for `age_s` seconds."""
    unchanged_since = time.time() - age_s
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < unchanged_since:
                os.rmdir(entry.path)  # refused while anything is in it
        except OSError:
            continue
