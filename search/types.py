"""Data types shared across layers: feature vectors and search hits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FeatureVector = npt.NDArray[np.float32]
"""float32, shape (n, dim) or (dim,), L2-normalised; produced only by the encoder."""

UNIT_TOLERANCE = 1e-3
"""|norm - 1| allowed for a vector read from a bundle: float32 rounding is ~1e-7, a bad row far more."""


def non_unit_rows(vectors: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
    """Row numbers of `vectors` (n, dim) that are not finite with an L2 norm within UNIT_TOLERANCE of 1."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are what is looked for; they fail below
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # no (n, dim) temporary, unlike np.isfinite
        return np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_TOLERANCE))


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: an item of the collection and its cosine similarity to the query."""

    id: str
    score: float
    image: str
    page_url: str | None
    description: str
    photographer: str | None
    # All optional: bundles without these columns give None.
    duplicates: int = 0
    """Near-duplicates folded into this hit (search with a collapse radius)."""
    width: int | None = None
    height: int | None = None
    date: str | None = None
    """When it was submitted (Unsplash, UTC: "YYYY-MM-DDTHH:MM:SSZ") or taken (EXIF, local time: no "Z")."""
    featured: bool | None = None
    photographer_username: str | None = None
    location: str | None = None
    city: str | None = None
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    camera: str | None = None
    views: int | None = None
    downloads: int | None = None
    colour: str | None = None
    colour_hex: str | None = None
    blur_hash: str | None = None
    words_in_picture: str | None = None
    """Text found in the picture by OCR (build_index.py --ocr), one fragment per line."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with the field names of the public API."""
        return asdict(self)
