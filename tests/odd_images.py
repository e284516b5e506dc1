"""Factories of odd real image files for tests: each writes one file into a folder and returns its path."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
EXIF_ORIENTATION_TAG = 0x0112
MARKED_SIZE = (120, 80)
"""Upright size of `marked_picture`: landscape, so a missed 90° turn shows in the size."""

# How the stored pixels relate to the upright picture for each EXIF orientation (EXIF 2.3, tag 0x0112):
# the writer applies these, a correct reader undoes them.
_STORE_TRANSFORM: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # shown after turning 90° clockwise, so stored 90° anticlockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # shown after turning 90° anticlockwise, so stored 90° clockwise
}


def marked_picture(size: tuple[int, int] = MARKED_SIZE) -> Image.Image:
    """Blue picture with a red block top-left and a green block top-right (fixes all 8 orientations)."""
    width, height = size
    image = Image.new("RGB", size, BLUE)
    block = (width // 4, height // 4)
    image.paste(RED, (0, 0, *block))
    image.paste(GREEN, (width - block[0], 0, width, block[1]))
    return image


def exif_rotated_jpeg(folder: Path, orientation: int) -> Path:
    """`marked_picture` stored transformed, tagged with the EXIF orientation that undoes it."""
    path = folder / f"exif_orientation_{orientation}.jpg"
    method = _STORE_TRANSFORM[orientation]
    upright = marked_picture()
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


def rgb_jpeg(folder: Path) -> Path:
    """A plain, unremarkable RGB JPEG (the control case)."""
    path = folder / "plain.jpg"
    marked_picture().save(path, quality=95)
    return path


def cmyk_jpeg(folder: Path) -> Path:
    """A pure red CMYK JPEG (as printers and Photoshop export)."""
    path = folder / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(path, quality=95)
    return path


def greyscale_jpeg(folder: Path) -> Path:
    """A mid-grey 8-bit greyscale JPEG."""
    path = folder / "grey.jpg"
    Image.new("L", (64, 48), 128).save(path, quality=95)
    return path


def rgba_png(folder: Path) -> Path:
    """Left half opaque red, right half fully transparent with black colour under the alpha."""
    path = folder / "rgba.png"
    image = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    image.paste((*RED, 255), (0, 0, 32, 48))
    image.save(path)
    return path


def la_png(folder: Path) -> Path:
    """Greyscale + alpha: left half opaque black, right half transparent."""
    path = folder / "la.png"
    image = Image.new("LA", (64, 48), (0, 0))
    image.paste((0, 255), (0, 0, 32, 48))
    image.save(path)
    return path


def palette_png_transparent(folder: Path) -> Path:
    """Palette PNG whose index 0 (black) is transparent: left half red (index 1), right half index 0."""
    path = folder / "palette_transparent.png"
    image = Image.new("P", (64, 48), 0)
    image.putpalette([0, 0, 0, *RED])
    image.paste(1, (0, 0, 32, 48))
    image.save(path, transparency=0)
    return path


def png_16bit(folder: Path) -> Path:
    """16-bit greyscale PNG: columns 0..255 hold x * 257, so 8-bit column x must read back as x."""
    path = folder / "grey16.png"
    gradient = (np.arange(256, dtype=np.uint16) * 257).reshape(1, 256).repeat(8, axis=0)
    Image.fromarray(gradient).save(path)
    return path


def animated_gif(folder: Path) -> Path:
    """Three-frame GIF: red, green, blue; a loader must return the red first frame."""
    path = folder / "animated.gif"
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def animated_png(folder: Path) -> Path:
    """Three-frame APNG: red, green, blue; a loader must return the red first frame."""
    path = folder / "animated.png"
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def unicode_named_png(folder: Path) -> Path:
    """A small red PNG whose name has Cyrillic letters, a space and an emoji."""
    path = folder / "фото 🌲.png"
    Image.new("RGB", (40, 30), RED).save(path)
    return path


def large_jpeg(folder: Path) -> Path:
    """A 4000×3000 JPEG, big enough for the reduced-size (draft) decoding path."""
    path = folder / "large.jpg"
    Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(path, quality=80)
    return path


def text_as_jpg(folder: Path) -> Path:
    """A text file with a .jpg name."""
    path = folder / "notes.jpg"
    path.write_text("This is not a picture, only a note saved under the wrong name.\n", encoding="utf-8")
    return path


def zero_bytes(folder: Path) -> Path:
    """An empty file named like a JPEG (an interrupted download)."""
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def truncated_jpeg(folder: Path) -> Path:
    """The first half of a valid noisy JPEG, cut in the middle of its scan data."""
    path = folder / "truncated.jpg"
    noise = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_png(folder: Path) -> Path:
    """A PNG whose image data bytes were flipped, so its chunk checksum no longer matches."""
    path = folder / "corrupt.png"
    Image.new("RGB", (64, 48), RED).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    path.write_bytes(bytes(data))
    return path


def svg_file(folder: Path) -> Path:
    """A small SVG vector drawing (PIL cannot read SVG)."""
    path = folder / "drawing.svg"
    path.write_text(
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        '<rect width="10" height="10" fill="red"/></svg>\n',
        encoding="utf-8",
    )
    return path


def pdf_file(folder: Path) -> Path:
    """A one-page PDF holding a picture (PIL writes PDF but cannot read it)."""
    path = folder / "scan.pdf"
    Image.new("RGB", (32, 32), RED).save(path, "PDF")
    return path


def missing_file(folder: Path) -> Path:
    """A path where no file exists."""
    return folder / "does_not_exist.jpg"


def directory(folder: Path) -> Path:
    """A folder whose name looks like an image file."""
    path = folder / "album.jpg"
    path.mkdir()
    return path


def huge_declared_png(folder: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A tiny but valid-looking greyscale PNG whose header declares `width`×`height` pixels."""
    path = folder / f"huge_{width}x{height}.png"
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    idat = zlib.compress(b"\x00" * 64)  # a few bytes of one row: fine until anyone decodes it
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def flat_png(folder: Path, mode: Literal["I;16", "RGBA", "RGB", "P"], width: int = 8_000, height: int = 8_000,
             name: str | None = None) -> Path:
    """A valid PNG of one flat colour at a worst-case size: a few hundred KB that decode to hundreds of MB.

    Written as zlib of one repeated row, so it takes well under a second however large it declares itself.
    """
    depth, colour_type, channels, value = _FLAT_PNG_LAYOUT[mode]
    path = folder / (name or f"flat_{mode.replace(';', '')}_{width}x{height}.png")
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    row = b"\x00" + bytes([value]) * (width * channels * depth // 8)  # filter byte 0, then the samples
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    palette = _png_chunk(b"PLTE", bytes([200, 40, 40]) * 256) if mode == "P" else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + palette + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


# mode: (bit depth, PNG colour type, samples per pixel, byte value of every sample)
_FLAT_PNG_LAYOUT = {"I;16": (16, 0, 1, 0x80), "RGBA": (8, 6, 4, 0x80), "RGB": (8, 2, 3, 0x80), "P": (8, 3, 1, 7)}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type + data."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


class OddCase(NamedTuple):
    """A factory of one odd file and whether `load_image` should accept it."""

    factory: Callable[[Path], Path]
    expected: Literal["ok", "error"]


ODD_IMAGES: dict[str, OddCase] = {
    "rgb_jpeg": OddCase(rgb_jpeg, "ok"),
    "cmyk_jpeg": OddCase(cmyk_jpeg, "ok"),
    "greyscale_jpeg": OddCase(greyscale_jpeg, "ok"),
    "rgba_png": OddCase(rgba_png, "ok"),
    "la_png": OddCase(la_png, "ok"),
    "palette_png_transparent": OddCase(palette_png_transparent, "ok"),
    "png_16bit": OddCase(png_16bit, "ok"),
    "animated_gif": OddCase(animated_gif, "ok"),
    "animated_png": OddCase(animated_png, "ok"),
    "unicode_named_png": OddCase(unicode_named_png, "ok"),
    "large_jpeg": OddCase(large_jpeg, "ok"),
    **{
        f"exif_orientation_{n}": OddCase(functools.partial(exif_rotated_jpeg, orientation=n), "ok") for n in range(1, 9)
    },
    "text_as_jpg": OddCase(text_as_jpg, "error"),
    "zero_bytes": OddCase(zero_bytes, "error"),
    "truncated_jpeg": OddCase(truncated_jpeg, "error"),
    "corrupt_png": OddCase(corrupt_png, "error"),
    "svg_file": OddCase(svg_file, "error"),
    "pdf_file": OddCase(pdf_file, "error"),
    "missing_file": OddCase(missing_file, "error"),
    "directory": OddCase(directory, "error"),
    "huge_declared_png": OddCase(huge_declared_png, "error"),
    "over_our_limit_png": OddCase(functools.partial(huge_declared_png, width=9_000, height=8_000), "error"),
}
"""Every odd file by case name, for table-driven tests."""
