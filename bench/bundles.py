"""Synthetic benchmark bundles cached under ~/.cache/clip-search-bench: a 1 M bundle takes 10-15 min to build.

    python bench/bundles.py 25000 1000000      # build (once) and print their folders

Each bundle names a local ViT-B-32 weights file with random weights (`vit-b-32-random.safetensors`, ~600 MB,
saved once), so loading it reads real-size weights as with a cached `laion2b_s34b_b79k`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

CACHE = Path(os.environ.get("CLIP_SEARCH_BENCH_CACHE", Path.home() / ".cache" / "clip-search-bench"))


def cached_weights() -> Path:
    """The random-weight ViT-B-32 checkpoint (torch.manual_seed(0)), saved once."""
    from safetensors.torch import save_file

    path = CACHE / "vit-b-32-random.safetensors"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(".vit-b-32-random.partial.safetensors")
        state = common.random_vit_b32().model.state_dict()
        save_file({name: tensor.contiguous() for name, tensor in state.items()}, partial)
        partial.rename(path)
    return path


def cached_bundle(n: int) -> Path:
    """A synthetic bundle of `n` CLIP-like items for the cached ViT-B-32, written once (renamed into place)."""
    root = CACHE / f"bundle-{n}"
    if (root / "manifest.json").is_file():
        return root
    weights = cached_weights()
    partial = CACHE / f".bundle-{n}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    common.write_synthetic_bundle(partial, n, pretrained=str(weights))
    partial.rename(root)
    return root


if __name__ == "__main__":
    for count in sys.argv[1:] or ["25000"]:
        print(cached_bundle(int(count)), flush=True)
