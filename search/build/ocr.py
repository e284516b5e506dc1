"""Words in the picture: the text OCR finds in a picture (`build_index.py --ocr`), cleaned and bounded for the bundle.

rapidocr-onnxruntime (PP-OCRv4 detection and recognition, ONNX models inside its wheel) is an optional extra
(requirements-ocr.txt): it is imported here only, when a build asks for OCR, so the app and plain builds run
without it. One engine per process (a build's worker threads, or each Ray task process), loaded once; calls are
serialised because onnxruntime already spreads one picture over every core and the engine keeps per-call state.
What it finds is untrusted text like any bundle cell: fragments below MIN_CONFIDENCE or of one character are
dropped, and at most MAX_FRAGMENTS and MAX_WORDS_CHARS characters are kept (the bundle's load check refuses more).
"""

from __future__ import annotations

import functools
import logging
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from search.bundle.attributes import MAX_WORDS_CHARS
from search.errors import SearchError

logger = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.6
"""Recognition confidence a fragment needs: a margin above the engine's own cut (0.5), chosen, not tuned; every
rendered target word of bench/ocr.py's fixture scored above it."""
MAX_FRAGMENTS = 40
SEPARATOR = "\n"
"""Between fragments in the stored text: one fragment (a sign, a line of a page) per line."""
OCR_SIDE = 640
"""Shortest side a picture is decoded at for OCR (JPEGs decode at reduced size): small print needs pixels."""
DETECT_SIDE = 736
"""The detector sees the picture with its longer side at most this (the engine's default scales the shorter side
up to it: a 320x240 picture became 981x736 and took about twice as long, one try here, for the same words)."""

_lock = threading.Lock()


class OcrUnavailableError(SearchError):
    """--ocr was asked for but the OCR package is not installed or its models do not load."""


@dataclass(frozen=True, slots=True)
class _Reader:
    engine: Any  # rapidocr_onnxruntime.RapidOCR
    failures: tuple[type[BaseException], ...]  # what one odd picture may raise in it


def load_reader() -> None:
    """Load this process's OCR engine now (a build checks before it starts); OcrUnavailableError if it cannot."""
    _reader()


def _reader() -> _Reader:
    with _lock:
        return _loaded()


@functools.cache
def _loaded() -> _Reader:
    try:
        import cv2
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise OcrUnavailableError(f"--ocr needs rapidocr-onnxruntime and OpenCV, which did not import ({exc}): "
                                  "pip install -r requirements-ocr.txt") from exc
    engine = RapidOCR(det_limit_type="max", det_limit_side_len=DETECT_SIDE)
    return _Reader(engine, (cv2.error, Fail, ValueError, IndexError))


def words_in_picture(image: Image.Image) -> str | None:
    """The words found in `image`, one fragment per line ("" when none); None when OCR failed on this picture."""
    reader = _reader()
    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # the engine takes OpenCV's BGR
    try:
        with _lock:
            found, _ = reader.engine(pixels)
    except reader.failures as exc:  # one odd picture: its row keeps no words rather than failing the build
        logger.warning("OCR failed on a picture (%s); its words are left out", exc)
        return None
    return clean_fragments((text, score) for _, text, score in found or ())


def clean_fragments(fragments: Iterable[tuple[Any, Any]]) -> str:
    """(text, confidence) pairs as the stored text: confident fragments of two or more characters, each once,
    whitespace and control characters folded, at most MAX_FRAGMENTS and MAX_WORDS_CHARS characters."""
    kept: list[str] = []
    size = 0
    for text, confidence in fragments:
        fragment = _plain(text)
        if not isinstance(confidence, float | int) or not confidence >= MIN_CONFIDENCE or fragment in kept:
            continue
        if sum(char.isalnum() for char in fragment) < 2:
            continue
        grown = size + len(fragment) + (len(SEPARATOR) if kept else 0)
        if grown <= MAX_WORDS_CHARS:  # one that does not fit is left out; a shorter one after it may fit
            kept.append(fragment)
            size = grown
        if len(kept) == MAX_FRAGMENTS:
            break
    return SEPARATOR.join(kept)


def _plain(text: Any) -> str:
    """One line of printable text: control and format characters (bidi overrides too) become spaces."""
    if not isinstance(text, str):
        return ""
    shown = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in text)
    return " ".join(shown.split())
