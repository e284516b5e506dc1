"""Load any image file, upload or PIL image as an upright, fully decoded RGB picture, or refuse clearly."""

from __future__ import annotations

import codecs
import io
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from search.errors import BadImageError, one_line

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS: int = 64_000_000
"""Our own limit on declared width × height, checked before decoding (PIL's bomb guard stays on too)."""

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image

_FORMATS_HINT = "use a JPEG, PNG, GIF, WebP, BMP or TIFF image"
_CORRUPT_HINT = "it may be truncated or corrupt; re-download or re-export it"
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What PIL and its plugins raise on broken files; anything else is a bug worth a traceback.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def load_image(source: ImageSource, *, min_side: int | None = None) -> Image.Image:
    """Return `source` as an upright RGB image, or raise BadImageError saying what is wrong and what to do."""
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "upload"
        _check_pixels(source, name)
        return _normalise(source, name)
    if isinstance(source, str | os.PathLike):
        return _load_path(Path(source), min_side)
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else source.read()
    if not data:
        raise BadImageError(f"upload: empty (0 bytes); {_FORMATS_HINT}")
    return _load_stream(io.BytesIO(data), "upload", min_side)


def _load_path(path: Path, min_side: int | None) -> Image.Image:
    """Open a file ourselves so the handle is closed on every way out."""
    if path.is_dir():
        raise BadImageError(f"{path}: is a folder, not an image file; pass the path of one image")
    try:
        stream = path.open("rb")
    except FileNotFoundError as exc:
        raise BadImageError(f"{path}: no such file; check the path and that the file was not moved") from exc
    except OSError as exc:
        raise BadImageError(f"{path}: cannot open the file ({exc.strerror}); check its permissions") from exc
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise BadImageError(f"{path}: the file is empty (0 bytes); {_CORRUPT_HINT}")
        return _load_stream(stream, str(path), min_side)


def _load_stream(stream: BinaryIO, name: str, min_side: int | None) -> Image.Image:
    """Identify the format lazily, check the declared size, then decode and normalise."""
    try:
        # PIL only warns between its limit and twice that; ours is lower, so _check_pixels refuses
        # those. (warnings.catch_warnings would be simpler but is not thread-safe in a server.)
        image = Image.open(stream)
    except Image.UnidentifiedImageError as exc:
        raise BadImageError(f"{name}: {_describe_unreadable(stream)}") from exc
    except Image.DecompressionBombError as exc:
        reason = one_line(exc, 200).rstrip(".")
        raise BadImageError(f"{name}: too large to decode safely ({reason}); resize it before adding it") from exc
    except _DECODE_ERRORS as exc:
        raise _decode_error(name, exc) from exc
    with image:
        _check_pixels(image, name)
        if min_side is not None and image.format == "JPEG":
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, never below the requested box.
            image.draft("RGB", (min_side, min_side))
            logger.debug("%s: decoding JPEG at reduced size %s", name, image.size)
        return _normalise(image, name)


def _check_pixels(image: Image.Image, name: str) -> None:
    """Refuse a picture whose declared size is empty or too large to decode safely."""
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImageError(f"{name}: declares an empty {width}×{height} picture; re-export the image")
    if width * height > MAX_IMAGE_PIXELS:
        limit = f"over the limit of {MAX_IMAGE_PIXELS:,}"
        raise BadImageError(f"{name}: declares {width}×{height} pixels, {limit}; resize it before adding it")


def _normalise(image: Image.Image, name: str) -> Image.Image:
    """Decode fully (first frame only), apply EXIF orientation and convert to RGB as a new image."""
    try:
        image.load()  # inside the try: a truncated file must fail here, not come back half grey
        upright = _upright(image, name)
        return _to_rgb(upright)
    except _DECODE_ERRORS as exc:
        raise _decode_error(name, exc) from exc


def _upright(image: Image.Image, name: str) -> Image.Image:
    """Rotate or flip by the EXIF orientation tag; a broken EXIF block is not worth refusing the picture."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error) as exc:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, one_line(exc, 200))
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB: deep greyscale scaled, transparency composited onto white."""
    if image.mode in _HIGH_DEPTH_MODES:
        image = _to_8bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # a new image even when already RGB, so no file stays attached


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float greyscale to 8-bit 'L'; PIL's own convert clips at 255."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "I":
        full_scale = 65535.0 if peak <= 65535 else peak  # PNG 16-bit data, else whatever range it has
    else:
        full_scale = 1.0 if peak <= 1 else 255.0 if peak <= 255 else peak  # float: [0,1], [0,255] or raw
    scaled = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8))


def _describe_unreadable(stream: BinaryIO) -> str:
    """Say what a file PIL cannot identify looks like, and how to turn it into an image."""
    stream.seek(0)
    head = stream.read(1024)
    if head.startswith(b"%PDF"):
        return "is a PDF document, not an image; export the page as PNG or JPEG"
    if b"<svg" in head.lower():
        return "is an SVG vector drawing; render it to PNG first"
    try:
        # Incremental, so a character cut at the 1 KiB boundary does not count as binary.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return f"is not in an image format this program can read; {_FORMATS_HINT}"
    return f"is a text file, not an image (whatever its name says); {_FORMATS_HINT}"


def _decode_error(name: str, exc: BaseException) -> BadImageError:
    """A one-line BadImageError for a file that PIL identified but could not decode."""
    return BadImageError(f"{name}: cannot decode the image ({one_line(exc, 200)}); {_CORRUPT_HINT}")

