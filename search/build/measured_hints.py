"""Example queries and default thresholds measured on a bundle's own items (recorded in its manifest at build time).

A threshold that suits real CLIP (a matching caption ~0.2–0.35) is wrong for another model (the demo's tiny CLIP
scores a matching caption ~0.85), so defaults are measured, never guessed from a name: the text threshold lies
halfway between how the items' own descriptions score against their pictures and how they score against other
pictures; the image threshold halfway between an item's nearest neighbour and a random other item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa

from search.bundle.hnsw_index import SearchIndex
from search.bundle.manifest import MAX_EXAMPLE_CHARS, UiHints
from search.bundle.store import Bundle, HintsOf
from search.model.encoder import ClipEncoder
from search.types import FeatureVector

logger = logging.getLogger(__name__)

SAMPLE = 64  # items measured: enough for stable medians, one batched text encode
EXAMPLES = 4
OPENING = 12  # pictures a collection without example queries opens on: one screen of the grid
OPENING_POOL = 20_000  # items the opening sample is picked from (evenly spread): bounded work on any collection
EXAMPLE_CHARS = 60  # examples are buttons: short ones read as queries


def measure_ui_hints(describe: Callable[[int], str], embeddings: FeatureVector, index: SearchIndex,
                     encoder: ClipEncoder) -> UiHints:
    """Examples and thresholds for a collection, measured on an even sample of its items: `describe(row)` is an
    item's description, `index` its graph (a bundle being written, or a loaded one)."""
    count = len(embeddings)
    rows = np.unique(np.linspace(0, count - 1, min(SAMPLE, count)).astype(int)) if count else np.array([], int)
    described = [(int(row), (describe(int(row)) or "").strip()) for row in rows]
    described = [(row, text) for row, text in described if text]
    text_threshold = None
    if len(described) >= 2:  # a mismatched pair needs two items
        vectors = encoder.encode_text([text for _, text in described])
        text_threshold = _halfway(vectors @ embeddings[[row for row, _ in described]].T)
    image_threshold = _image_threshold(embeddings, index, rows) if len(rows) >= 3 else None
    return UiHints(_examples([text for _, text in described]), text_threshold, image_threshold)


def hints_for_metadata(metadata: pa.Table, embeddings: FeatureVector, encoder: ClipEncoder) -> HintsOf:
    """What write_bundle measures the `ui` block with, for a bundle being written from `metadata`."""
    descriptions, ids = metadata.column("description"), metadata.column("id")

    def hints(index: SearchIndex) -> UiHints:
        measured = measure_ui_hints(lambda row: descriptions[row].as_py(), embeddings, index, encoder)
        return replace(measured, sample=tuple(str(ids[int(row)].as_py()) for row in diverse_sample(embeddings)))

    return hints


def diverse_sample(embeddings: FeatureVector, count: int = OPENING) -> np.ndarray:
    """Rows of `count` items that differ from each other: farthest-point sampling from the most typical item (the
    one nearest the mean), each next pick the item least like every pick so far (bench/opening_sample.py)."""
    pool = np.unique(np.linspace(0, len(embeddings) - 1, min(OPENING_POOL, len(embeddings))).astype(int))
    vectors = embeddings[pool]
    if not len(pool):
        return pool
    picked = [int(np.argmax(vectors @ vectors.mean(axis=0)))]
    closest = vectors @ vectors[picked[0]]  # each item's similarity to its most similar pick
    for _ in range(min(count, len(pool)) - 1):
        closest[picked] = np.inf
        picked.append(int(np.argmin(closest)))
        closest = np.maximum(closest, vectors @ vectors[picked[-1]])
    return pool[picked]


def _halfway(scores: np.ndarray) -> float:
    """Halfway between the median matched (diagonal) and median mismatched score, cut to 2 decimals."""
    matched = float(np.median(np.diag(scores)))
    mismatched = float(np.median(scores[~np.eye(len(scores), dtype=bool)]))
    return _cut((matched + mismatched) / 2)


def _image_threshold(embeddings: FeatureVector, index: SearchIndex, rows: np.ndarray) -> float:
    """Halfway between the median nearest-neighbour score and the median score of two sampled items."""
    vectors = embeddings[rows]
    nearest = [index.query(vector, 2)[1][-1] for vector in vectors]  # [0] is the item itself
    random_pairs = (vectors @ vectors.T)[~np.eye(len(rows), dtype=bool)]
    return _cut((float(np.median(nearest)) + float(np.median(random_pairs))) / 2)


def _cut(value: float) -> float:
    return float(np.floor(value * 100) / 100)


def _examples(texts: list[str]) -> tuple[str, ...]:
    """Up to EXAMPLES distinct descriptions spread over the sample, each cut at a word to a button's length."""
    picked: list[str] = []
    for text in texts[:: max(1, len(texts) // EXAMPLES)]:
        short = text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS].rsplit(" ", 1)[0]
        short = " ".join(short.split())[:MAX_EXAMPLE_CHARS]
        if short and short.isprintable() and short not in picked:
            picked.append(short)
    return tuple(picked[:EXAMPLES])


def ui_hints(bundle: Bundle, encoder: ClipEncoder) -> UiHints:
    """The hints the manifest records, else measured now (bundles written before they were recorded)."""
    ui = bundle.manifest.ui
    if ui is not None and not ui.examples and not ui.sample:  # written before samples were recorded
        return replace(ui, sample=tuple(bundle.catalog.item_id(int(row)) for row in diverse_sample(bundle.embeddings)))
    if ui is not None:
        return ui
    logger.info("bundle %s records no example queries or thresholds; measuring them", bundle.label)
    catalog = bundle.catalog
    measured = measure_ui_hints(lambda row: catalog.hit(row, 0.0).description, bundle.embeddings, bundle.index,
                                encoder)
    return replace(measured, sample=tuple(catalog.item_id(int(row)) for row in diverse_sample(bundle.embeddings)))
