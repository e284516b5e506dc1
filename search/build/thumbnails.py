"""Local pictures inside a bundle: thumbnails written by `--images-dir` builds, and copies from another bundle.

A bundle must be self-contained (it is moved, pushed to the Hub, served by the UI), so a build from a
folder stores a small JPEG of each picture under `images/` and records that relative path as the item's
`image`. Every file here is written under a unique temporary name created exclusively in the target
folder, then renamed over the target: a planted symlink is replaced, never written through, and a
killed build leaves at most a hidden temporary file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image

from search.bundle.durable import sync_folder
from search.errors import SearchError

IMAGES_DIR = "images"
THUMBNAIL_SIDE = 512
"""Longest side in pixels: the gallery asks for 480-px-wide renditions, which this covers for landscape
pictures (the common case) while a portrait stays 512 px tall; at JPEG quality 85 that is ~20–60 KB each."""
JPEG_QUALITY = 85
_THUMBNAIL_NAME = re.compile(r"[0-9a-f]{32}\.jpg")
_TEMP_PREFIX = ".tmp-"  # hidden: write_bundle leaves hidden names out of the manifest


class ThumbnailError(SearchError):
    """A thumbnail or bundle picture that cannot be written (disk full, permissions, an unsafe folder)."""


def thumbnail_path(item_id: str) -> str:
    """The bundle-relative thumbnail path of an item: `images/` + the first 128 bits of sha256(id), hex.

    A hash, not a sanitised id: ids are relative paths of any depth and alphabet, and two of them may differ
    only in case or extension; 32 lowercase hex digits can neither collide in practice nor escape `images/`,
    stay flat (the Hub download pattern is `images/*`) and mean the same on case-insensitive file systems.
    """
    return f"{IMAGES_DIR}/{hashlib.sha256(item_id.encode('utf-8')).hexdigest()[:32]}.jpg"


def images_folder(bundle: Path) -> Path:
    """`bundle/images`, created if needed; refused when it is a symlink (writes must stay inside the bundle)."""
    folder = bundle / IMAGES_DIR
    if folder.is_symlink():
        raise ThumbnailError(f"{folder} is a symbolic link; a bundle keeps its pictures in a real folder, "
                             "so remove the link and run the build again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ThumbnailError(f"cannot create {folder} ({exc.strerror}); check the permissions of --out") from exc
    return folder


def save_thumbnail(image: Image.Image, bundle: Path, relative: str) -> None:
    """Write a JPEG of `image` no larger than THUMBNAIL_SIDE to `bundle/relative` (never enlarged)."""
    scale = min(1.0, THUMBNAIL_SIDE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # reducing_gap: a fast box reduction first, then bicubic; indistinguishable at this size.
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    replace_file(bundle / relative, lambda handle: image.save(handle, "JPEG", quality=JPEG_QUALITY))


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temporary file made with O_EXCL beside it, fsynced, then renamed over `path`."""
    descriptor, temporary = _exclusive_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # renames over a symlink at `path`, never through it
    except OSError as exc:
        raise ThumbnailError(f"cannot write {path} ({exc.strerror or exc}); check free space and "
                             "permissions") from exc
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _exclusive_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`; O_EXCL fails on any existing name, a planted symlink included.

    Not tempfile.mkstemp: its files are mode 0600, and bundle files should get the umask's usual mode.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(8):
        temporary = path.with_name(f"{_TEMP_PREFIX}{secrets.token_hex(8)}{path.suffix}")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise ThumbnailError(f"cannot write in {path.parent} ({exc.strerror}); check free space and "
                                 "permissions") from exc
    raise ThumbnailError(f"cannot create a temporary file in {path.parent}; remove its .tmp-* files")


def prune_thumbnails(bundle: Path, referenced: Iterable[str | None]) -> int:
    """Delete thumbnails under `bundle/images` that no item refers to (failed or interrupted items); count them.

    Only names this module makes are touched, so pictures put there by hand or copied from a --from bundle
    under their own names stay.
    """
    folder = bundle / IMAGES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return 0
    keep = {name for name in referenced if name}
    removed = 0
    for path in folder.iterdir():
        stale = path.name.startswith(_TEMP_PREFIX) or (
            _THUMBNAIL_NAME.fullmatch(path.name) is not None and f"{IMAGES_DIR}/{path.name}" not in keep)
        if stale and not path.is_dir():
            path.unlink()
            removed += 1
    return removed


def copy_pictures(images: Iterable[str | None], source: Path, target: Path) -> int:
    """Copy the bundle-relative pictures among `images` from bundle `source` into bundle `target`; count them.

    URLs are left alone. A relative path must stay inside the bundle (no `..`, not absolute); bundle
    loading has checked the source side already, this keeps the writes inside `target`.
    """
    folders: set[Path] = set()
    copied = 0
    for image in sorted({image for image in images if image and "://" not in image}):
        relative = _inside_path(image)
        origin, destination = source / relative, target / relative
        if not destination.parent.resolve().is_relative_to(target.resolve()):
            raise ThumbnailError(f"{destination.parent} leads outside {target}; remove that link and run again")
        try:
            if not destination.is_symlink() and destination.exists() and os.path.samefile(origin, destination):
                continue  # --from and --out name the same bundle
            destination.parent.mkdir(parents=True, exist_ok=True)
            with origin.open("rb") as reader:
                replace_file(destination, lambda handle, reader=reader: _copy_stream(reader, handle))
        except OSError as exc:
            raise ThumbnailError(f"cannot copy {image} of bundle {source.name} ({exc.strerror or exc}); "
                                 "check that bundle, free space and permissions") from exc
        folders.add(destination.parent)
        copied += 1
    for folder in folders:
        sync_folder(folder)
    return copied


def _inside_path(image: str) -> PurePosixPath:
    relative = PurePosixPath(image)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ThumbnailError(f"image path {image!r} is not a path inside the bundle; rebuild that bundle "
                             "with build_index.py")
    return relative


def _copy_stream(reader: BinaryIO, writer: BinaryIO) -> None:
    for chunk in iter(lambda: reader.read(1 << 20), b""):
        writer.write(chunk)
