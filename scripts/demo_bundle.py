"""Write the demo index bundle: synthetic shape images embedded with the demo model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from scripts.synthetic_shapes import make_samples
from search.build.measured_hints import hints_for_metadata
from search.bundle.store import BundleInfo, write_bundle
from search.config import EncoderSpec, HnswParams
from search.model.encoder import ClipEncoder
from search.model.images import load_image

DEMO_ITEMS = 300
IMAGE_SIZE = 128
JPEG_QUALITY = 85  # noisy backgrounds make PNGs ~6x larger; the bundle must stay small
DEMO_HNSW = HnswParams(m=16, ef_construction=200, ef_search=64)


def write_demo_index(model_dir: Path, index_dir: Path, seed: int, count: int = DEMO_ITEMS) -> int:
    """Render `count` captioned images into `index_dir/images/`, embed them, write the bundle; returns bytes."""
    if index_dir.exists():
        shutil.rmtree(index_dir)
    (index_dir / "images").mkdir(parents=True)
    rows: dict[str, list] = {name: [] for name in ("id", "image", "page_url", "description", "photographer",
                                                   "colour", "shape", "background")}
    for number, (spec, image) in enumerate(make_samples(count, seed, IMAGE_SIZE)):
        relative = f"images/shape-{number:03d}.jpg"
        image.save(index_dir / relative, quality=JPEG_QUALITY)
        for name, value in (("id", f"shape-{number:03d}"), ("image", relative), ("page_url", None),
                            ("description", spec.caption), ("photographer", None), ("colour", spec.colour),
                            ("shape", spec.shape), ("background", spec.background)):
            rows[name].append(value)
    encoder = ClipEncoder.load(EncoderSpec(f"local-dir:{model_dir}"))
    # Embed the files as saved (JPEG and all), so an image query with a shipped file scores 1.0.
    embeddings = encoder.encode_images([load_image(index_dir / path) for path in rows["image"]])
    info = BundleInfo(encoder.spec, DEMO_HNSW, source="synthetic-shapes", source_revision=f"seed={seed}")
    table = pa.table(rows)  # with the example queries and thresholds the app offers, measured on it
    write_bundle(index_dir, embeddings, table, info, hints_for_metadata(table, embeddings, encoder))
    return sum(path.stat().st_size for path in index_dir.rglob("*") if path.is_file())
