"""Data types shared across layers: feature vectors and search hits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FeatureVector = npt.NDArray[np.float32]
"""float32, shape (n, dim) or (dim,), L2-normalised; produced only by the encoder."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: an item of the collection and its cosine similarity to the query."""

    id: str
    score: float
    image: str
    page_url: str | None
    description: str
    photographer: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with the field names of the public API."""
        return asdict(self)
