"""Retrieval quality: text->image and image->text Recall@1/5/10 for any open_clip model spec.

    # offline: the demo model on held-out synthetic images with captions phrased unlike its training ones
    python bench/quality.py

    # online, with real weights (reproduces open_clip's retrieval table; not run here: no network)
    python bench/quality.py --model ViT-B-32 --pretrained laion2b_s34b_b79k \\
        --dataset nlphuji/flickr_1k_test_image_text_retrieval --split test
    python bench/quality.py --model ViT-B-32 --pretrained laion2b_s34b_b79k --data 'coco-5k-test/*.parquet'

    # real Unsplash searches: text search on a built Unsplash Lite bundle, CLIP alone vs hybrid (CLIP + keywords)
    python bench/quality.py --conversions unsplash-lite/conversions.tsv000 --index index/ --max-queries 1000

A data set has one row per image: an image column (a `datasets` Image, {"bytes": ...} from parquet, or a
local path) and a caption column (one string or a list of them, e.g. Flickr30k's five). Metrics follow
open_clip / clip_benchmark: t2i R@K counts a caption as found when its image is in the top K; i2t R@K counts
an image as found when any of its captions is in the top K.
With --conversions, each row of Unsplash's conversions file (someone searched `keyword`, then downloaded
`photo_id`) becomes a judgement; the most frequent keywords whose photos the bundle holds are searched with the
bundle's own model, and R@1/5/10 (out of min(relevant, K)) and nDCG@10 are reported (bench/relevance.py).
Published reference (open_clip's retrieval results, ViT-B-32 / laion2b_s34b_b79k): Flickr30k 1k test
text->image R@1 66.8, MSCOCO 5k test text->image R@1 39.3.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

DEMO_MODEL = f"local-dir:{common.REPO_ROOT / 'assets' / 'demo' / 'model'}"
HELD_OUT_SEED = 777_001  # neither the training, evaluation, demo-bundle nor test seeds
# Phrasings the demo model never saw in training (scripts/synthetic_shapes.caption_variants); each names
# colour, shape and background, so exactly one image of the gallery fits.
HELD_OUT_TEMPLATES = (
    "an image of {one} on a {bg} background", "{one} placed on a {bg} background",
    "a simple {colour} {shape} on a {bg} background", "there is {one} on a {bg} background",
    "{one}, {bg} background",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL, help="open_clip name, hf-hub:ID or local-dir:DIR")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or weights file (built-in names)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="local parquet file(s), glob allowed")
    source.add_argument("--dataset", help="a Hub data set name for datasets.load_dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--per-class", type=int, default=1, help="synthetic set: images per class (48 classes)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--conversions", type=Path, help="Unsplash conversions TSV: judge text search on --index")
    parser.add_argument("--index", type=Path, help="with --conversions: the bundle (its manifest names the model)")
    parser.add_argument("--max-queries", type=int, default=1000, help="with --conversions: most frequent keywords")
    return parser.parse_args(argv)


def synthetic_set(per_class: int) -> tuple[list[Image.Image], list[list[str]]]:
    """Held-out rendered shapes, each with captions in phrasings the demo model was not trained on."""
    from scripts.synthetic_shapes import all_specs, make_samples

    samples = make_samples(per_class * len(all_specs()), HELD_OUT_SEED)
    captions = [[t.format(one=s.short_caption, colour=s.colour, shape=s.shape, bg=s.background)
                 for t in HELD_OUT_TEMPLATES] for s, _ in samples]
    return [image for _, image in samples], captions


def dataset_set(args: argparse.Namespace) -> tuple[list[Image.Image], list[list[str]]]:
    """Images and their captions from parquet files or a Hub data set."""
    import datasets

    if args.data:
        rows = datasets.load_dataset("parquet", data_files=args.data, split="train")
    else:
        rows = datasets.load_dataset(args.dataset, split=args.split)
    if args.limit:
        rows = rows.select(range(min(args.limit, len(rows))))
    images = [as_image(row[args.image_column]) for row in rows]
    captions = [[c] if isinstance(c, str) else list(c) for c in rows[args.caption_column]]
    return images, captions


def as_image(value: Any) -> Image.Image:
    """A PIL image from a `datasets` Image, a {"bytes", "path"} struct or a local path."""
    from search.model.images import load_image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    return load_image(io.BytesIO(value) if isinstance(value, bytes) else value)


def recalls(image_vectors: np.ndarray, text_vectors: np.ndarray, owner: np.ndarray,
            ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """t2i and i2t Recall@K from unit vectors; owner[j] is the image row of caption j."""
    scores = text_vectors @ image_vectors.T  # (captions, images)
    rank_of_truth = (scores > scores[np.arange(len(owner)), owner][:, None]).sum(axis=1)
    result = {f"t2i_r{k}": float(np.mean(rank_of_truth < k)) for k in ks}
    by_image = scores.T  # (images, captions): the best-ranked own caption decides
    own = owner[None, :] == np.arange(len(image_vectors))[:, None]
    best_own = np.where(own, by_image, -np.inf).max(axis=1)
    image_rank = (np.where(own, -np.inf, by_image) > best_own[:, None]).sum(axis=1)
    result.update({f"i2t_r{k}": float(np.mean(image_rank < k)) for k in ks})
    return result


def conversions_main(args: argparse.Namespace) -> int:
    """Judge text search on a bundle with real searches: CLIP alone vs hybrid; print the table and JSON line."""
    from bench.relevance import bundle_rankers, compare, read_conversions
    from search.bundle.store import Bundle
    from search.model.encoder import ClipEncoder

    if args.index is None:
        raise SystemExit("--conversions needs --index BUNDLE (a built Unsplash Lite bundle)")
    bundle = Bundle.load(args.index)
    ids = [bundle.catalog.hit(row, 0.0).id for row in range(len(bundle.catalog))]
    judgements = read_conversions(args.conversions, set(ids))
    queries = {word: judgements.relevant[word] for word in judgements.top(args.max_queries)}
    encoder = ClipEncoder.load(bundle.encoder_spec)
    texts = list(queries)
    vectors = [row for i in range(0, len(texts), 256) for row in encoder.encode_text(texts[i:i + 256])]
    results = compare(queries, vectors, ids, bundle_rankers(bundle))
    print(f"text search on {bundle.label} ({len(ids)} items, model {encoder.spec}): {len(queries)} keywords from "
          f"{judgements.rows} conversions ({judgements.malformed} malformed, {judgements.outside} of other photos)")
    common.print_table(["ranking", "R@1", "R@5", "R@10", "nDCG@10"],
                       [[name, m["r1"], m["r5"], m["r10"], m["ndcg10"]] for name, m in results.items()])
    common.emit_json({"queries": len(queries), "malformed": judgements.malformed,
                      **{f"{name}_{key}": round(m[key], 4) for name, m in results.items()
                         for key in ("r1", "r5", "r10", "ndcg10")}})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Encode the set, print the table and the JSON line."""
    from search.config import EncoderSpec
    from search.model.encoder import ClipEncoder

    args = parse_args(argv)
    if args.conversions is not None:
        return conversions_main(args)
    encoder = ClipEncoder.load(EncoderSpec(args.model, args.pretrained))
    images, captions = dataset_set(args) if args.data or args.dataset else synthetic_set(args.per_class)
    flat = [text for group in captions for text in group]
    owner = np.array([row for row, group in enumerate(captions) for _ in group])
    image_vectors = encoder.encode_images(images, args.batch_size)
    text_vectors = np.concatenate([encoder.encode_text(flat[i:i + 256]) for i in range(0, len(flat), 256)])
    result = recalls(image_vectors, text_vectors, owner)
    source = args.data or args.dataset or f"synthetic held-out shapes (seed {HELD_OUT_SEED})"
    print(f"retrieval quality, model {encoder.spec}, {source}: {len(images)} images, {len(flat)} captions")
    common.print_table(["direction", "R@1", "R@5", "R@10"],
                       [[d, result[f"{d}_r1"], result[f"{d}_r5"], result[f"{d}_r10"]] for d in ("t2i", "i2t")])
    common.emit_json({key: round(result[key], 4) for key in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
