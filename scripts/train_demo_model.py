"""Train the tiny offline demo CLIP model on synthetic shapes and write it as an open_clip local-dir model.

Usage: python scripts/train_demo_model.py [--out assets/demo] [--seed 0] [--steps N]
Writes <out>/model/open_clip_config.json and <out>/model/open_clip_model.safetensors, evaluates the
written model on held-out images through open_clip's own `local-dir:` loading path, then writes the demo
index bundle <out>/index/ (300 more images, embedded by the project's own encoder).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as nnf
from open_clip.model import CLIP
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import save_file

if __package__ in (None, ""):  # run as a script: make `scripts.` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.demo_bundle import write_demo_index
from scripts.synthetic_shapes import ShapeSpec, all_specs, caption_variants, make_samples
from search.model.encoder import trimmed_text_features

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
THREADS = 2
RENDER_SIZE = 128
IMAGES_PER_CLASS = 150
EVAL_SEED_OFFSET = 1000
INDEX_SEED_OFFSET = 2000  # the demo bundle shows images neither trained on nor evaluated on
EVAL_GALLERY_PER_CLASS = 6

Preprocess = Callable[[Image.Image], torch.Tensor]

# Standard CLIP text tower (default tokenizer, 77 tokens, argmax pooling, causal mask), just very narrow.
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 64, "head_width": 16, "layers": 3},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}
PREPROCESS_CFG: dict[str, Any] = {
    "size": 64,
    "mode": "RGB",
    "mean": list(open_clip.OPENAI_DATASET_MEAN),
    "std": list(open_clip.OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser schedule for the demo model."""

    steps: int = 2500
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05


def seed_everything(seed: int) -> None:
    """Fix every random source and the thread count so a run reproduces bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)


def build_pool(seed: int, preprocess: Preprocess) -> tuple[torch.Tensor, list[list[int]]]:
    """Render the training images once; returns the preprocessed tensors and their indices per class."""
    specs = all_specs()
    samples = make_samples(IMAGES_PER_CLASS * len(specs), seed, RENDER_SIZE)
    by_class: list[list[int]] = [[] for _ in specs]
    class_of = {spec: i for i, spec in enumerate(specs)}
    for row, (spec, _) in enumerate(samples):
        by_class[class_of[spec]].append(row)
    images = torch.stack([preprocess(image) for _, image in samples])
    return images, by_class


def consistent(caption: str, owner: ShapeSpec, other: ShapeSpec) -> bool:
    """Whether `caption` (written for `owner`) also describes an image of `other`."""
    if (owner.colour, owner.shape) != (other.colour, other.shape):
        return False
    return owner.background == other.background or "background" not in caption


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss with several positives per row, so a caption without background has no false negative."""
    image_targets = positives / positives.sum(dim=1, keepdim=True)
    text_targets = positives.T / positives.T.sum(dim=1, keepdim=True)
    return (nnf.cross_entropy(logits, image_targets) + nnf.cross_entropy(logits.T, text_targets)) / 2


def make_optimizer(model: CLIP, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on gains, biases, embeddings and the logit scale (as open_clip trains)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exclude = param.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, foreach=True)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * progress))


def train(model: CLIP, images: torch.Tensor, by_class: list[list[int]], cfg: TrainConfig, seed: int) -> None:
    """Each batch holds one random image of every class, each with a random caption variant."""
    specs = all_specs()
    # The default CLIP tokenizer: what get_tokenizer("local-dir:...") builds for this config.
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    variants = [caption_variants(spec) for spec in specs]
    tokens = [tokenizer(texts) for texts in variants]
    rng = random.Random(seed)
    optimizer = make_optimizer(model, cfg)
    model.train()
    start = time.perf_counter()
    for step in range(cfg.steps):
        rows = [rng.choice(rows_of_class) for rows_of_class in by_class]
        picks = [rng.randrange(len(texts)) for texts in variants]
        text = torch.stack([tokens[c][k] for c, k in enumerate(picks)])
        positives = torch.tensor(
            [[consistent(variants[t][picks[t]], specs[t], specs[i]) for t in range(len(specs))]
             for i in range(len(specs))], dtype=torch.float32)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        image_features = model.encode_image(images[rows], normalize=True)
        text_features = nnf.normalize(trimmed_text_features(model, text), dim=-1)
        logit_scale = model.logit_scale.exp()
        loss = contrastive_loss(logit_scale * image_features @ text_features.T, positives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # CLIP's clamp: keep the temperature from collapsing
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == cfg.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  scale {logit_scale.item():6.2f}  "
                  f"{time.perf_counter() - start:6.1f}s", flush=True)


def save_model(model: CLIP, model_dir: Path) -> None:
    """Write the config and float16 weights in open_clip's local-dir layout."""
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # float16 halves the file (the 49408-row token table dominates); open_clip casts it back to fp32 on load.
    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(model_dir / WEIGHTS_FILE))
    (model_dir / WEIGHTS_FILE).chmod(0o644)  # safetensors creates it owner-only; it is a shipped asset


@torch.no_grad()
def _encode_images(model: CLIP, preprocess: Preprocess, images: list[Image.Image]) -> torch.Tensor:
    """L2-normalised image features."""
    return model.encode_image(torch.stack([preprocess(image) for image in images]), normalize=True)


def _text_top1(model: CLIP, tokenizer: Callable[[list[str]], torch.Tensor], image_features: torch.Tensor,
               queries: list[tuple[str, ShapeSpec]]) -> torch.Tensor:
    """Gallery row of the best image for each (query text, spec it describes)."""
    with torch.no_grad():
        text_features = model.encode_text(tokenizer([text for text, _ in queries]), normalize=True)
    return (text_features @ image_features.T).argmax(dim=1)


def _image_top5(image_features: torch.Tensor, gallery: list[ShapeSpec]) -> tuple[float, float]:
    """Each gallery image as a query against the rest: (any of top 5 shares colour+shape, precision@5)."""
    similarity = image_features @ image_features.T
    similarity.fill_diagonal_(-2.0)  # a query never retrieves itself
    top5 = similarity.topk(5, dim=1).indices.tolist()
    same = np.array([[gallery[j].label == gallery[i].label for j in row] for i, row in enumerate(top5)])
    return float(same.any(axis=1).mean()), float(same.mean())


def evaluate(model_dir: Path, seed: int) -> dict[str, float]:
    """Retrieval quality of a saved model on held-out images rendered with `seed`, loaded as the app loads it."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    specs = all_specs()
    samples = make_samples(EVAL_GALLERY_PER_CLASS * len(specs), seed, RENDER_SIZE)
    gallery = [spec for spec, _ in samples]
    image_features = _encode_images(model, preprocess, [image for _, image in samples])
    full = [(spec.caption, spec) for spec in specs]
    # Short queries name no background, so one spec per colour+shape suffices.
    short = [(text, spec) for spec in specs if spec.background == specs[0].background
             for text in (spec.short_caption, spec.label)]
    best_full = _text_top1(model, tokenizer, image_features, full).tolist()
    best_short = _text_top1(model, tokenizer, image_features, short).tolist()
    full_hits = [gallery[b].label == spec.label for b, (_, spec) in zip(best_full, full, strict=True)]
    short_hits = [gallery[b].label == spec.label for b, (_, spec) in zip(best_short, short, strict=True)]
    image_hit, image_precision = _image_top5(image_features, gallery)
    return {
        "text_r1": float(np.mean(full_hits + short_hits)),
        "text_r1_full_caption": float(np.mean(full_hits)),
        "text_r1_short_query": float(np.mean(short_hits)),
        "text_r1_full_caption_with_background": float(
            np.mean([gallery[b] == spec for b, (_, spec) in zip(best_full, full, strict=True)])),
        "image_top5_hit": image_hit,
        "image_top5_precision": image_precision,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets" / "demo", help="writes <out>/model/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, save, evaluate on held-out images and report."""
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    model = CLIP(**MODEL_CFG)
    preprocess = image_transform_v2(PreprocessCfg(**PREPROCESS_CFG), is_train=False)
    images, by_class = build_pool(args.seed, preprocess)
    print(f"rendered {len(images)} training images in {time.perf_counter() - start:.1f}s", flush=True)
    train(model, images, by_class, TrainConfig(steps=args.steps), args.seed)
    model_dir = args.out / "model"
    save_model(model, model_dir)
    size = sum(path.stat().st_size for path in model_dir.iterdir())
    print(f"wrote {model_dir} ({size} bytes); training took {time.perf_counter() - start:.1f}s", flush=True)
    metrics = evaluate(model_dir, args.seed + EVAL_SEED_OFFSET)
    for name, value in metrics.items():
        print(f"{name:40s} {value:.4f}")
    index_bytes = write_demo_index(model_dir, args.out / "index", args.seed + INDEX_SEED_OFFSET)
    print(f"wrote {args.out / 'index'} ({index_bytes} bytes)")
    print(f"total {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
