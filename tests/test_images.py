"""Tests for search.model.images.load_image: odd real files, uploads, open PIL images, limits and file handles."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from search.errors import BadImageError
from search.model import images
from search.model.images import load_image
from tests.odd_images import (
    BLUE,
    GREEN,
    MARKED_SIZE,
    ODD_IMAGES,
    RED,
    WHITE,
    exif_rotated_jpeg,
    huge_declared_png,
    large_jpeg,
    png_16bit,
    rgba_png,
    text_as_jpg,
    truncated_jpeg,
)

Colour = tuple[int, int, int]
Point = tuple[int, int]
BLACK = (0, 0, 0)
GOOD = [name for name, case in ODD_IMAGES.items() if case.expected == "ok"]
BAD = [name for name, case in ODD_IMAGES.items() if case.expected == "error"]


def _marker_points(size: tuple[int, int]) -> dict[Point, Colour]:
    """Where `marked_picture` has its colours when upright: red top-left, green top-right, blue below."""
    width, height = size
    top, bottom = height // 8, height * 7 // 8
    return {
        (width // 8, top): RED,
        (width * 7 // 8, top): GREEN,
        (width // 8, bottom): BLUE,
        (width * 7 // 8, bottom): BLUE,
    }


def _halves(left: Colour, right: Colour) -> dict[Point, Colour]:
    """Sample points of the 64×48 two-half pictures."""
    return {(8, 24): left, (56, 24): right}


# Per good case: the upright size and colours at a few points.
GOOD_EXPECTED: dict[str, tuple[tuple[int, int], dict[Point, Colour]]] = {
    "rgb_jpeg": (MARKED_SIZE, _marker_points(MARKED_SIZE)),
    "cmyk_jpeg": ((64, 48), _halves(RED, RED)),
    "greyscale_jpeg": ((64, 48), _halves((128, 128, 128), (128, 128, 128))),
    "rgba_png": ((64, 48), _halves(RED, WHITE)),
    "la_png": ((64, 48), _halves(BLACK, WHITE)),
    "palette_png_transparent": ((64, 48), _halves(RED, WHITE)),
    "png_16bit": ((256, 8), {(0, 4): BLACK, (128, 4): (128, 128, 128), (255, 4): WHITE}),
    "animated_gif": ((32, 32), {(16, 16): RED}),
    "animated_png": ((32, 32), {(16, 16): RED}),
    "unicode_named_png": ((40, 30), {(20, 15): RED}),
    "large_jpeg": ((4000, 3000), {(2000, 5): BLACK, (2000, 2994): WHITE}),
    **{f"exif_orientation_{n}": (MARKED_SIZE, _marker_points(MARKED_SIZE)) for n in range(1, 9)},
}

# Per bad case: a word the message must contain, so each failure is explained, not just refused.
BAD_REASON: dict[str, str] = {
    "text_as_jpg": "text file",
    "zero_bytes": "empty",
    "truncated_jpeg": "truncated",
    "corrupt_png": "cannot decode",
    "svg_file": "SVG",
    "pdf_file": "PDF",
    "missing_file": "no such file",
    "directory": "folder",
    "huge_declared_png": "too large",
    "over_our_limit_png": "9000×8000",
}


def _assert_colours(image: Image.Image, expected: dict[Point, Colour], tolerance: int = 40) -> None:
    """Each sampled pixel is within `tolerance` of its expected colour on every channel."""
    for point, colour in expected.items():
        actual = image.getpixel(point)
        assert all(abs(a - e) <= tolerance for a, e in zip(actual, colour, strict=True)), (point, actual, colour)


def _assert_one_line_error(error: BadImageError, name: str) -> None:
    """A user-facing message: names the file, one line, no traceback text."""
    message = str(error)
    assert name in message
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message


def _open_fds() -> int:
    """Number of file descriptors this process holds (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def test_every_case_has_expectations() -> None:
    assert set(GOOD_EXPECTED) == set(GOOD)
    assert set(BAD_REASON) == set(BAD)


@pytest.mark.parametrize("name", GOOD)
def test_good_file_loads_upright_rgb(tmp_path: Path, name: str) -> None:
    size, colours = GOOD_EXPECTED[name]
    image = load_image(ODD_IMAGES[name].factory(tmp_path))
    assert image.mode == "RGB"
    assert image.size == size
    _assert_colours(image, colours)


@pytest.mark.badinput
@pytest.mark.parametrize("name", BAD)
def test_bad_file_raises_one_line_bad_image_error(tmp_path: Path, name: str) -> None:
    path = ODD_IMAGES[name].factory(tmp_path)
    with pytest.raises(BadImageError, match=BAD_REASON[name]) as info:
        load_image(path)
    _assert_one_line_error(info.value, str(path))


@pytest.mark.badinput
@pytest.mark.parametrize("name", [n for n in BAD if n not in {"missing_file", "directory"}])
def test_bad_upload_bytes_raise_error_naming_upload(tmp_path: Path, name: str) -> None:
    data = ODD_IMAGES[name].factory(tmp_path).read_bytes()
    with pytest.raises(BadImageError) as info:
        load_image(data)
    assert str(info.value).startswith("upload: ")
    _assert_one_line_error(info.value, "upload")


def test_sixteen_bit_png_scales_every_level_instead_of_clipping(tmp_path: Path) -> None:
    grey = np.asarray(load_image(png_16bit(tmp_path)))[0, :, 0]
    np.testing.assert_array_equal(grey, np.arange(256))  # the file holds x * 257 at column x


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0, 32768, 65535]], dtype=np.uint16),  # I;16
        np.array([[0, 32768, 65535]], dtype=">u2"),  # I;16B
        np.array([[0, 32768, 65535]], dtype=np.int32),  # I
        np.array([[0.0, 0.5, 1.0]], dtype=np.float32),  # F in [0, 1]
        np.array([[0.0, 128.0, 255.0]], dtype=np.float32),  # F in [0, 255]
    ],
    ids=["I;16", "I;16B", "I", "F-unit", "F-bytes"],
)
def test_deep_greyscale_pil_image_scales_to_8_bit(array: np.ndarray) -> None:
    source = Image.fromarray(array)
    assert source.mode in {"I;16", "I;16B", "I", "F"}
    np.testing.assert_array_equal(np.asarray(load_image(source))[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_survives_reduced_size_decoding(tmp_path: Path, orientation: int) -> None:
    image = load_image(exif_rotated_jpeg(tmp_path, orientation), min_side=20)
    assert image.width > image.height and min(image.size) >= 20
    assert image.width < MARKED_SIZE[0] and image.height < MARKED_SIZE[1]
    _assert_colours(image, _marker_points(image.size))


@pytest.mark.parametrize("min_side", [224, 500, 1000, 2999, 3000, 5000])
def test_min_side_decodes_large_jpeg_smaller_but_never_below_min_side(tmp_path: Path, min_side: int) -> None:
    image = load_image(large_jpeg(tmp_path), min_side=min_side)
    assert min(image.size) >= min(min_side, 3000)
    assert image.width * 3 == pytest.approx(image.height * 4, abs=4)  # 4:3 kept
    if min_side <= 1500:
        assert image.width < 4000 and image.height < 3000
    _assert_colours(image, {(image.width // 2, 1): BLACK, (image.width // 2, image.height - 2): WHITE})


def test_min_side_is_ignored_for_formats_without_reduced_decoding(tmp_path: Path) -> None:
    assert load_image(png_16bit(tmp_path), min_side=2).size == (256, 8)


def test_min_side_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_side"):
        load_image(rgba_png(tmp_path), min_side=0)


def _as_bytes(path: Path) -> Image.Image:
    return load_image(path.read_bytes())


def _as_file_object(path: Path) -> Image.Image:
    with path.open("rb") as stream:
        image = load_image(stream)
        assert not stream.closed  # the caller's file is the caller's to close
    return image


def _as_bytes_io(path: Path) -> Image.Image:
    return load_image(io.BytesIO(path.read_bytes()))


def _as_open_pil_image(path: Path) -> Image.Image:
    with Image.open(path) as source:
        return load_image(source)


def _as_str_path(path: Path) -> Image.Image:
    return load_image(str(path))


@pytest.mark.parametrize("loader", [_as_bytes, _as_file_object, _as_bytes_io, _as_open_pil_image, _as_str_path])
@pytest.mark.parametrize("name", GOOD)
def test_every_input_kind_gives_the_same_pixels_as_a_path(
    tmp_path: Path, name: str, loader: Callable[[Path], Image.Image]
) -> None:
    path = ODD_IMAGES[name].factory(tmp_path)
    expected = np.asarray(load_image(path))
    np.testing.assert_array_equal(np.asarray(loader(path)), expected)


def test_pil_image_input_is_copied_not_changed() -> None:
    source = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    result = load_image(source)
    assert result is not source
    assert source.mode == "RGBA" and source.getpixel((0, 0)) == (0, 0, 0, 0)
    assert result.getpixel((0, 0)) == WHITE


def test_empty_pil_image_is_refused() -> None:
    with pytest.raises(BadImageError, match="empty") as info:
        load_image(Image.new("RGB", (0, 0)))
    _assert_one_line_error(info.value, "upload")


def test_empty_upload_is_refused() -> None:
    with pytest.raises(BadImageError, match="empty"):
        load_image(b"")


def test_huge_declared_png_opens_lazily_with_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's guard off: only ours is left
    path = huge_declared_png(tmp_path)
    with Image.open(path) as image:
        assert image.size == (20_000, 20_000)
    with pytest.raises(BadImageError, match="declares 20000×20000 pixels"):
        load_image(path)


def test_our_limit_applies_to_pil_images_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImageError, match="declares 20×20 pixels"):
        load_image(Image.new("RGB", (20, 20)))


def test_sizes_pil_only_warns_about_are_refused_by_our_lower_limit(tmp_path: Path) -> None:
    assert images.MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # why no warning filter is needed
    path = huge_declared_png(tmp_path, 10_000, 10_000)  # over PIL's warning level, under its error level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(BadImageError, match="over the limit") as info:
            load_image(path)
    _assert_one_line_error(info.value, path.name)


def test_pil_decompression_bomb_error_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10**12)  # our limit off: only PIL's is left
    path = huge_declared_png(tmp_path, 20_000, 20_000)  # over twice PIL's limit: PIL raises
    with pytest.raises(BadImageError, match="too large") as info:
        load_image(path)
    _assert_one_line_error(info.value, path.name)


def test_truncated_images_stay_refused_after_import() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unicode_name_appears_in_error(tmp_path: Path) -> None:
    path = truncated_jpeg(tmp_path).rename(tmp_path / "сломано 🌲.jpg")
    with pytest.raises(BadImageError) as info:
        load_image(path)
    _assert_one_line_error(info.value, "сломано 🌲.jpg")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to count open files")
@pytest.mark.filterwarnings("error::ResourceWarning")  # a file closed only by garbage collection
@pytest.mark.parametrize("name", list(ODD_IMAGES))
def test_no_file_handle_is_left_open(tmp_path: Path, name: str) -> None:
    path = ODD_IMAGES[name].factory(tmp_path)
    before = _open_fds()
    try:
        image = load_image(path)
    except BadImageError:
        image = None
    assert _open_fds() == before
    if image is not None:
        path.unlink()  # works on every OS only when nothing holds the file
        assert image.getpixel((0, 0)) is not None


def test_text_file_message_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="use a JPEG, PNG"):
        load_image(text_as_jpg(tmp_path))
