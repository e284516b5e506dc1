"""Load any image file, upload or PIL image as an upright, fully decoded RGB picture, or refuse clearly."""

from __future__ import annotations

import codecs
import io
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image

from search.errors import BadImageError, one_line

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS: int = 64_000_000
"""Our own limit on declared width × height, checked before decoding (PIL's bomb guard stays on too)."""
REDUCE_ABOVE_PIXELS: int = 4_000_000
"""With `min_side`, a decoded picture over this many pixels is shrunk (box average by a whole factor, short side
kept at least `min_side`) before any conversion, so a 64 MP upload costs its decode buffer and little more.
Smaller pictures keep their exact pixels: their conversions cost at most a few tens of MB."""

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image

_FORMATS_HINT = "use a JPEG, PNG, GIF, WebP, BMP or TIFF image"
_CORRUPT_HINT = "it may be truncated or corrupt; re-download or re-export it"
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What PIL and its plugins raise on broken files; anything else is a bug worth a traceback.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_EXIF_ERRORS = (SyntaxError, ValueError, KeyError, TypeError, struct.error)
# Modes Image.reduce averages; others are converted to one of them first, strip by strip (see _shrunk).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr"})
_REDUCIBLE_AS = {"1": "L", "P": "RGB", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
_STRIP_PIXELS = 1 << 20  # pixels per strip when a big picture is converted piece by piece
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the turn that makes it upright (as ImageOps uses)
# Metadata that could state the orientation again once it has been applied.
_ORIENTATION_INFO = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def load_image(source: ImageSource, *, min_side: int | None = None) -> Image.Image:
    """Return `source` as an upright RGB image, or raise BadImageError saying what is wrong and what to do.

    With `min_side`, a big picture may come back smaller, never with a short side under `min_side`: JPEGs are
    decoded at reduced size, others over REDUCE_ABOVE_PIXELS are shrunk right after decoding.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "upload"
        _check_pixels(source, name)
        return _normalise(source, name, min_side)
    if isinstance(source, str | os.PathLike):
        with _open_file(Path(source)) as stream:
            return _load_stream(stream, str(source), min_side)
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else source.read()
    if not data:
        raise BadImageError(f"upload: empty (0 bytes); {_FORMATS_HINT}")
    return _load_stream(io.BytesIO(data), "upload", min_side)


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Read only the header: refuse what `load_image` would refuse before decoding, else return the size."""
    with _open_file(Path(path)) as stream, _identified(stream, str(path)) as image:
        return image.size


def _open_file(path: Path) -> BinaryIO:
    """The file opened for reading (the caller closes it), or a BadImageError saying why it cannot be."""
    if path.is_dir():
        raise BadImageError(f"{path}: is a folder, not an image file; pass the path of one image")
    try:
        stream = path.open("rb")
    except FileNotFoundError as exc:
        raise BadImageError(f"{path}: no such file; check the path and that the file was not moved") from exc
    except OSError as exc:
        raise BadImageError(f"{path}: cannot open the file ({exc.strerror}); check its permissions") from exc
    if os.fstat(stream.fileno()).st_size == 0:
        stream.close()
        raise BadImageError(f"{path}: the file is empty (0 bytes); {_CORRUPT_HINT}")
    return stream


def _load_stream(stream: BinaryIO, name: str, min_side: int | None) -> Image.Image:
    """Identify the format lazily, check the declared size, then decode and normalise."""
    with _identified(stream, name) as image:
        if min_side is not None and image.format == "JPEG":
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, never below the requested box.
            image.draft("RGB", (min_side, min_side))
            logger.debug("%s: decoding JPEG at reduced size %s", name, image.size)
        return _normalise(image, name, min_side)


def _identified(stream: BinaryIO, name: str) -> Image.Image:
    """The picture opened lazily (header only) with its declared size checked; use it in a `with` block."""
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
    try:
        _check_pixels(image, name)
    except BadImageError:
        image.close()
        raise
    return image


def _check_pixels(image: Image.Image, name: str) -> None:
    """Refuse a picture whose declared size is empty or too large to decode safely."""
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImageError(f"{name}: declares an empty {width}×{height} picture; re-export the image")
    if width * height > MAX_IMAGE_PIXELS:
        limit = f"over the limit of {MAX_IMAGE_PIXELS:,}"
        raise BadImageError(f"{name}: declares {width}×{height} pixels, {limit}; resize it before adding it")


def _normalise(image: Image.Image, name: str, min_side: int | None) -> Image.Image:
    """Decode fully (first frame only), shrink if big, apply EXIF orientation and convert to RGB as a new image."""
    try:
        image.load()  # inside the try: a truncated file must fail here, not come back half grey
        turn = _orientation(image, name)  # read first: a TIFF keeps it in tags that a shrunk copy lacks
        image = _shrunk(image, min_side)
        rgb = _to_rgb(image if turn is None else image.transpose(turn))
    except _DECODE_ERRORS as exc:
        raise _decode_error(name, exc) from exc
    for key in _ORIENTATION_INFO:  # applied now: a second load_image must not turn it again
        rgb.info.pop(key, None)
    return rgb


def _orientation(image: Image.Image, name: str) -> Image.Transpose | None:
    """The turn its EXIF orientation tag asks for; a broken EXIF block is not worth refusing the picture."""
    try:
        return _TURNS.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    except _EXIF_ERRORS as exc:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, one_line(exc, 200))
        return None


def _shrunk(image: Image.Image, min_side: int | None) -> Image.Image:
    """`image` shrunk by the largest whole factor that keeps its short side at least `min_side`, if it is big.

    Strip by strip: Image.reduce itself makes a full-size premultiplied copy of RGBA and LA pictures, and the
    palette, 1-bit, 16-bit and colour-keyed modes need converting first; a strip at a time, no full-size copy
    ever exists. Strips hold whole boxes, so the result equals one reduce of the whole picture.
    """
    if min_side is None or image.width * image.height <= REDUCE_ABOVE_PIXELS:
        return image
    factor = min(image.size) // min_side
    keyed = "transparency" in image.info
    mode = "RGBA" if keyed else _REDUCIBLE_AS.get(image.mode, image.mode)
    if factor < 2 or mode not in _REDUCIBLE_MODES:
        return image  # a rare mode (LAB, HSV...) is converted whole, as before
    width, height = image.size
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    rows = max(1, _STRIP_PIXELS // (width * factor)) * factor
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        reduced.paste((strip if strip.mode == mode else strip.convert(mode)).reduce(factor), (0, top // factor))
    return reduced


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
    # Strip by strip: float64 copies of a whole 64 MP picture would take 512 MB each.
    peak = max(float(values.max(initial=0.0)) for _, values in _float_strips(image))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "I":
        full_scale = 65535.0 if peak <= 65535 else peak  # PNG 16-bit data, else whatever range it has
    else:
        full_scale = 1.0 if peak <= 1 else 255.0 if peak <= 255 else peak  # float: [0,1], [0,255] or raw
    result = np.empty((image.height, image.width), np.uint8)
    for top, values in _float_strips(image):
        result[top:top + len(values)] = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255)
    return Image.fromarray(result)


def _float_strips(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float64 values with NaN as 0) for consecutive strips of about _STRIP_PIXELS pixels."""
    rows = max(1, _STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        strip = image.crop((0, top, image.width, min(image.height, top + rows)))
        yield top, np.nan_to_num(np.asarray(strip, dtype=np.float64))


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

