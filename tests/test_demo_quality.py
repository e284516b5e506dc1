"""The shipped demo model and bundle: held-out retrieval quality, size, and the threshold contract."""

from __future__ import annotations

import numpy as np

from scripts.synthetic_shapes import all_specs, make_samples
from search.model.encoder import ClipEncoder
from search.query.engine import SearchEngine
from tests.conftest import DEMO_INDEX_DIR, DEMO_MODEL_DIR

HELD_OUT_SEED = 424_242  # neither the training seed nor the demo bundle's


def _held_out_gallery(encoder: ClipEncoder, count: int) -> tuple[list[str], np.ndarray]:
    samples = make_samples(count, HELD_OUT_SEED)
    return [spec.label for spec, _ in samples], encoder.encode_images([image for _, image in samples])


def test_text_to_image_recall_at_1_on_held_out_images(demo_encoder: ClipEncoder) -> None:
    labels, gallery = _held_out_gallery(demo_encoder, 240)
    specs = all_specs()
    queries = [spec.caption for spec in specs] + sorted({f"a {spec.label}" for spec in specs})
    wanted = [spec.label for spec in specs] + sorted({spec.label for spec in specs})
    best = (demo_encoder.encode_text(queries) @ gallery.T).argmax(axis=1)
    recall_at_1 = np.mean([labels[row] == label for row, label in zip(best, wanted, strict=True)])
    print(f"demo text->image R@1 = {recall_at_1:.3f} over {len(queries)} queries")
    assert recall_at_1 >= 0.9


def test_image_queries_find_their_class_in_the_top_5(demo_engine: SearchEngine) -> None:
    queries = make_samples(len(all_specs()), HELD_OUT_SEED + 1)
    found = [any(spec.label in hit.description for hit in demo_engine.search_image(image, top_k=5))
             for spec, image in queries]
    print(f"demo image->image top-5 class hit rate = {np.mean(found):.3f}")
    assert all(found)


def test_a_threshold_above_the_best_score_returns_nothing(demo_engine: SearchEngine) -> None:
    best = demo_engine.search_text("a yellow star on a dark background", top_k=1)[0].score
    assert demo_engine.search_text("a yellow star on a dark background", top_k=10, threshold=best + 1e-3) == []


def test_demo_assets_stay_small() -> None:
    total = sum(path.stat().st_size for folder in (DEMO_MODEL_DIR, DEMO_INDEX_DIR)
                for path in folder.rglob("*") if path.is_file())
    assert total <= 10 * 1024 * 1024
