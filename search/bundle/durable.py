"""Writing files so that a crash never leaves half of one: a hidden exclusive temp file, fsync, rename, fsync the
folder. Used by every writer of bundle, shard and record files."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.errors import BundleError


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write via a new hidden temp file beside `path`, fsync it, rename over `path`, fsync the folder.

    Readers see the old file or the new one, never half of one; hidden names stay out of the manifest. The temp
    name is random and created exclusively (O_EXCL | O_NOFOLLOW), so a symlink planted beside `path` is never
    written through; a temp file swapped while `write` ran is refused, and a failed write leaves no temp file.
    """
    tmp, descriptor = _exclusive_temp(path)
    try:
        write(tmp)
        # The creation descriptor stays open until here, so its inode number cannot be reused by a swapped-in file.
        created, now = os.fstat(descriptor), os.lstat(tmp)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino):
            raise BundleError(f"the temporary file for {path.name} was replaced while being written; "
                              f"check who else writes in {path.parent}")
        os.fsync(descriptor)
        os.replace(tmp, path)  # replaces a symlink at `path` itself, never writes through it
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.close(descriptor)
    sync_folder(path.parent)  # make the rename itself durable, not only the data


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the renames into it survive a power cut before anything that refers to them."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _exclusive_temp(path: Path) -> tuple[Path, int]:
    """A new empty hidden file beside `path` (keeping its suffix: np.save appends .npy), open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")
        try:
            return tmp, os.open(tmp, flags, 0o666)  # not mkstemp's 0600: bundle files get the umask's mode
        except FileExistsError:
            continue
    raise BundleError(f"cannot create a temporary file beside {path.name}; remove the hidden .*.tmp files in "
                      f"{path.parent}")
