"""The encoder's preprocessing split in two: the PIL steps per picture in worker threads, the tensor steps per
batch in the main thread."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SplitTransform:
    """The encoder's preprocessing in two parts: per image in a worker thread, then per batch in the main thread.

    Why: a torch op on a whole picture (ToTensor, Normalize: ~150k elements, above torch's parallel grain)
    run from a worker thread gives that thread an OpenMP team of its own. With more OpenMP threads than
    cores, libgomp cuts its spin-wait from 300,000 to 100 spins (GOMP_SPINCOUNT), so the model's own
    threads sleep and wake at every op: ~6% of build throughput on 2 cores (bench/build_throughput.py).
    So workers run only the PIL steps (resize, crop, RGB) and hand over uint8 arrays; the main thread
    converts a whole batch, bit-identical to the full transform per image (tests/test_build_transform.py).
    """

    in_worker: Callable[[Image.Image], Any]
    in_batch: Callable[[Sequence[Any]], torch.Tensor]


def split_transform(preprocess: Callable[[Image.Image], torch.Tensor]) -> SplitTransform:
    """Split a `Compose([PIL steps..., ToTensor, Normalize...])`; any other transform runs whole in the worker."""
    steps = list(preprocess.transforms) if isinstance(preprocess, Compose) else []
    cuts = [number for number, step in enumerate(steps) if isinstance(step, ToTensor)]
    if len(cuts) != 1 or not all(isinstance(step, Normalize) for step in steps[cuts[0] + 1:]):
        logger.debug("preprocessing %s runs whole in the worker threads", preprocess)
        return SplitTransform(preprocess, torch.stack)
    pil_steps, tensor_steps = steps[:cuts[0]], steps[cuts[0] + 1:]  # Normalize works on (N, C, H, W) as is
    return SplitTransform(functools.partial(_pil_pixels, pil_steps), functools.partial(_batch_tensor, tensor_steps))


def _pil_pixels(steps: Sequence[Callable], image: Image.Image) -> np.ndarray:
    """Worker thread: the PIL steps only, as an (H, W, 3) uint8 array (load_image gives RGB, resize keeps it)."""
    for step in steps:
        image = step(image)
    return np.asarray(image, dtype=np.uint8)


def _batch_tensor(steps: Sequence[Callable], arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Main thread: torchvision's ToTensor on a stack of arrays (same ops, same order), then Normalize."""
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # contiguous NCHW, as stacked
    batch = pixels.to(dtype=torch.get_default_dtype()).div(255)
    for step in steps:
        batch = step(batch)
    return batch
