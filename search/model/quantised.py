"""Int8 towers that prove themselves: quantise a tower, then let it serve only if it ranks as fp32 does.

Int8 weights stream a quarter of the bytes of fp32 ones, and a CLIP tower on a small CPU is bound by that stream
(docs/performance.md, "The physical limit"). How far int8 moves a ranking depends on the weights and on the
collection, so it is measured where it matters: on the collection itself, with one gate for both towers. The text
tower is quantised by ONNX Runtime at serve time (search/model/onnx_text.py) and judged by probe texts against
the bundle's own index; the image tower is quantised at build time and judged on the build's own pictures
(`GatedImageTower`). The gate passes at recall@10 >= MIN_RECALL of the int8 top 10 against the fp32 top 10.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.errors import SearchError
from search.types import FeatureVector

logger = logging.getLogger(__name__)

RECALL_K = 10
MIN_RECALL = 0.99  # below this, int8 changes what a visitor sees in one top-10 slot in a hundred queries or more
PROBE_COUNT = 300  # probe texts per text gate: ~1 s of int8 + fp32 encodes for ViT-B-32 on 2 cores
MIN_OWN_PROBES = 50  # fewer of the collection's own texts than this: generic probes fill the set
IMAGE_SAMPLE = 200  # pictures the build gate encodes twice (fp32 and int8) before int8 takes over

TopRows = Callable[[FeatureVector, int], np.ndarray]  # (n, dim) query vectors -> (n, k) rows of the collection

_SUBJECTS = ("a dog", "a cat", "a child", "an old man", "a woman", "a red car", "a bicycle", "a bird", "a horse",
             "a boat", "a mountain", "a city street", "a forest", "a beach", "a bowl of fruit", "a cup of coffee",
             "a bridge", "a house", "flowers", "a waterfall")
_SETTINGS = ("at sunset", "in the snow", "at night", "in black and white", "from above", "in the rain",
             "close up", "in a field", "on a table", "under a blue sky", "in autumn", "in a crowd", "in fog",
             "at dawn", "in a museum")
GENERIC_PROBES = tuple(f"{subject} {setting}" for subject in _SUBJECTS for setting in _SETTINGS)


class Int8RefusedError(SearchError):
    """An int8 tower that ranks the collection differently from fp32 (the gate's figure says how much)."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """How an int8 tower's rankings agree with fp32's over one collection."""

    recall: float  # mean share of the fp32 top k that the int8 top k also holds
    max_cosine_diff: float  # largest 1 - cos(fp32 vector, int8 vector) over the probes
    probes: int
    k: int = RECALL_K

    def passes(self, min_recall: float = MIN_RECALL) -> bool:
        """Whether int8 may serve in place of fp32."""
        return self.recall >= min_recall

    def summary(self) -> str:
        """One line with the figures."""
        return (f"recall@{self.k} {self.recall:.4f} over {self.probes} probes, "
                f"max cosine difference {self.max_cosine_diff:.2g}")


def agreement(reference_top: np.ndarray, candidate_top: np.ndarray, reference: FeatureVector,
              candidate: FeatureVector) -> Agreement:
    """The gate's figures: per probe, the top rows by fp32 and by int8 (same order of probes), and the two towers'
    vectors for the probes."""
    if reference_top.shape != candidate_top.shape or reference.shape != candidate.shape or not len(reference):
        raise ValueError("agreement needs the same non-empty probes from both towers")
    k = reference_top.shape[1]
    shared = [len(set(ref.tolist()) & set(got.tolist())) for ref, got in zip(reference_top, candidate_top,
                                                                              strict=True)]
    cosine = np.sum(unit_rows(reference) * unit_rows(candidate), axis=1)
    return Agreement(float(np.mean(shared)) / k, float(np.max(1.0 - cosine)), len(reference), k)


def exact_top_rows(collection: FeatureVector, exclude_self: bool = False) -> TopRows:
    """Top rows by exact dot product over `collection`; `exclude_self` drops row i for query i (a collection
    queried with its own items)."""

    def top_rows(queries: FeatureVector, k: int) -> np.ndarray:
        scores = queries @ collection.T
        if exclude_self:
            np.fill_diagonal(scores, -np.inf)
        k = min(k, collection.shape[0] - int(exclude_self))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)

    return top_rows


def probe_texts(own: Sequence[str], count: int = PROBE_COUNT) -> list[str]:
    """Up to `count` distinct probes: the collection's own texts first, generic ones when it has too few."""
    probes = list(dict.fromkeys(text.strip() for text in own if text and text.strip()))[:count]
    if len(probes) < MIN_OWN_PROBES:
        probes += [text for text in GENERIC_PROBES if text not in probes][: count - len(probes)]
    return probes


@dataclass(frozen=True, slots=True)
class PrecisionDecision:
    """Which weights a tower serves with, and why (logged, and shown by /api/health for the text tower)."""

    asked: str  # auto, int8 or fp32
    serving: str  # int8 or fp32
    reason: str
    agreement: Agreement | None = None

    def record(self) -> dict[str, Any]:
        """The decision as plain JSON values."""
        figures = self.agreement
        return {"asked": self.asked, "serving": self.serving, "reason": self.reason,
                f"recall_at_{RECALL_K}": None if figures is None else round(figures.recall, 4),
                "max_cosine_diff": None if figures is None else float(f"{figures.max_cosine_diff:.3g}"),
                "probes": None if figures is None else figures.probes}


def decide(asked: str, figures: Agreement, min_recall: float = MIN_RECALL) -> PrecisionDecision:
    """Int8 when asked for it, or on `auto` when it passes the gate; else fp32."""
    passed = figures.passes(min_recall)
    verdict = f"{figures.summary()} ({'≥' if passed else '<'} {min_recall})"
    if asked == "int8":
        return PrecisionDecision(asked, "int8", f"int8 was asked for; {verdict}", figures)
    if passed:
        return PrecisionDecision(asked, "int8", f"int8 ranks as fp32 does: {verdict}", figures)
    return PrecisionDecision(asked, "fp32", f"int8 ranks differently from fp32: {verdict}", figures)


def quantise_onnx(source: Path, target: Path) -> None:
    """Write `source` (an ONNX model) with int8 weights to `target`, whole or not at all."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    quiet = _DropAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        logging.getLogger().removeFilter(quiet)
        tmp.unlink(missing_ok=True)


class _DropAdvice(logging.Filter):
    """Drops the quantiser's notes (on the root logger): its advice to pre-process is for static quantisation,
    and it lists each tensor it leaves at fp32 at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        quantiser = f"{os.sep}onnxruntime{os.sep}quantization{os.sep}" in record.pathname
        return not quantiser or record.levelno >= logging.ERROR


class GatedImageTower:
    """`encode_pixels` for a build at int8: the first `sample` pictures are encoded by both towers and stored at
    fp32; once they are in, int8 serves the rest if its image-to-image recall@10 over them passes the gate, else
    the build stops with Int8RefusedError and its figure (a resumed build may go on at fp32)."""

    def __init__(self, encoder: Any, sample: int | None = None, min_recall: float | None = None) -> None:
        self.encoder = encoder
        self.sample = max(sample or IMAGE_SAMPLE, RECALL_K + 1)
        self.min_recall = MIN_RECALL if min_recall is None else min_recall
        self.decision: PrecisionDecision | None = None
        self._int8 = int8_visual(encoder.model.visual)
        self._seen: tuple[list[FeatureVector], list[FeatureVector]] = ([], [])
        logger.info("image tower at int8 once the first %d pictures pass the agreement gate", self.sample)

    def int8(self, pixels: torch.Tensor) -> FeatureVector:
        """Int8 vectors for a preprocessed batch."""
        with torch.inference_mode():
            return unit_rows(self._int8(pixels).float().numpy())

    def __call__(self, pixels: torch.Tensor) -> FeatureVector:
        """Vectors for a preprocessed batch (N, 3, H, W)."""
        if self.decision is not None:
            return self.int8(pixels)
        reference = self.encoder.encode_pixels(pixels)
        self._seen[0].append(reference)
        self._seen[1].append(self.int8(pixels))
        if sum(map(len, self._seen[0])) >= self.sample:
            self._judge(np.concatenate(self._seen[0]), np.concatenate(self._seen[1]))
        return reference

    def _judge(self, reference: FeatureVector, candidate: FeatureVector) -> None:
        """Image to image: each sampled picture queries the sample at fp32 and at int8 (itself left out)."""
        figures = agreement(exact_top_rows(reference, True)(reference, RECALL_K),
                            exact_top_rows(candidate, True)(reference, RECALL_K), reference, candidate)
        decision = decide("auto", figures, self.min_recall)
        if decision.serving != "int8":
            raise Int8RefusedError(f"--precision int8 refused for this build's pictures: {decision.reason}; "
                                   "build with --precision fp32")
        logger.info("image tower at int8 from now on: %s", decision.reason)
        self.decision = decision


def int8_visual(visual: torch.nn.Module) -> torch.nn.Module:
    """A copy of an image tower whose Linear layers run on int8 weights (torch dynamic quantisation).

    torch marks torch.ao.quantization deprecated in favour of torchao (not a dependency here); it still runs and
    the gate checks what it makes, so its notices are silenced rather than shown on every build."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*are deprecated")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(visual).eval(), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
