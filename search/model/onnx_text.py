"""The CLIP text tower on ONNX Runtime: open_clip's vectors (max abs diff ≤ 1e-4, checked), twice as fast on CPU.

A short text query on a 2-core CPU takes ~15-17 ms in PyTorch's text tower and ~8-9 ms when ONNX Runtime
runs the same graph (bench/query_latency.py; docs/performance.md has what else was tried). The
token-trimmed tower (`search.model.encoder.text_tower`) is exported once per model into a cache folder (8-9 s
for ViT-B-32, in the background while the app already answers with PyTorch) and reused after. Every load
is checked against PyTorch on probe texts, so a stale or damaged cache is re-exported, never trusted. An int8 copy
of the export (`choose_text_precision`) serves instead only where the agreement gate of search/model/quantised.py,
measured on the bundle being served, says it ranks that bundle as fp32 does (or where SEARCH_TEXT_PRECISION=int8).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from search.errors import SearchError, one_line
from search.model.encoder import ClipEncoder, text_tower, trim_tokens
from search.model.quantised import (
    MIN_RECALL,
    PROBE_COUNT,
    RECALL_K,
    Agreement,
    PrecisionDecision,
    TopRows,
    agreement,
    decide,
    probe_texts,
    quantise_onnx,
    unit_rows,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "text_tower.onnx"  # its weights go beside it in text_tower.onnx.data
INT8_FILE = "text_tower.int8.onnx"  # the same tower with int8 weights, made from MODEL_FILE (one file)
MIN_INT8_COSINE = 0.9  # int8 rounding moves a probe's vector by ~1e-3; a file further off is damaged or stale
PROBE_BATCH = 32
MAX_ABS_DIFF = 1e-4  # allowed distance from PyTorch's normalised vectors, per coordinate
PROBES = ("", "a photo of a dog", "an aerial view of a winding river through green fields, " * 12)
_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
ABANDONED_AFTER_S = 3600  # an export takes seconds; a temporary folder this old was left by a killed process
_CACHE_LOCK = threading.Lock()  # one export at a time per process: two would replace each other's folder


class OnnxTextError(SearchError):
    """The text tower cannot run on ONNX Runtime (an unsupported model, a failed export or check)."""


class OnnxTextTower:
    """An ONNX Runtime session computing `text_tower`: (batch, length) int64 tokens -> unnormalised features."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        self.path, self.threads = path, threads
        self.decision: PrecisionDecision | None = None  # set once the int8 gate has decided which tower serves

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; its warnings about unused initialisers are noise
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """Features for already trimmed token ids; Run is thread-safe, so queries may overlap."""
        return self._session.run(None, {"tokens": tokens.astype(np.int64, copy=False)})[0]


def default_text_threads() -> int:
    """Threads for one text query unless SEARCH_TEXT_THREADS says otherwise: torch's, one per core.

    On 2 cores a lone query is 1.3-1.6x faster on 2 threads than on 1 (docs/performance.md, Tuning),
    while under steady concurrent text load 1 thread each answered up to 1.6x more queries: a deployment that
    expects that load sets SEARCH_TEXT_THREADS=1, and pictures keep their threads either way."""
    return torch.get_num_threads()


def enable_onnx_text(encoder: ClipEncoder, cache_dir: Path, threads: int = 0) -> bool:
    """Switch the encoder's text queries to ONNX Runtime (`threads` per query; 0: `default_text_threads`); on any
    failure log why and keep PyTorch."""
    start = time.perf_counter()
    try:
        encoder.onnx_text = load_onnx_text(encoder, cache_dir, threads)
    except Exception as exc:  # an optional speed-up: whatever went wrong, PyTorch keeps answering
        logger.warning("text queries stay on PyTorch: %s", one_line(exc, 300))
        return False
    logger.info("text queries run on ONNX Runtime (ready in %.1f s)", time.perf_counter() - start)
    return True


def enable_onnx_text_in_background(encoder: ClipEncoder, cache_dir: Path, threads: int = 0,
                                   then: Callable[[], object] | None = None) -> threading.Thread:
    """`enable_onnx_text` in a daemon thread, followed by `then()` once text queries run on ONNX Runtime; queries
    are answered by PyTorch until then."""

    def switch() -> None:
        if enable_onnx_text(encoder, cache_dir, threads) and then is not None:
            then()

    thread = threading.Thread(target=switch, name="onnx-text", daemon=True)
    thread.start()
    return thread


def load_onnx_text(encoder: ClipEncoder, cache_dir: Path, threads: int = 0) -> OnnxTextTower:
    """The encoder's text tower on ONNX Runtime, from the cache or freshly exported, checked against PyTorch;
    `threads` per query (0: `default_text_threads`)."""
    if threads < 0:
        raise ValueError(f"threads must be 0 (the default) or a positive number, got {threads}")
    if not encoder.can_trim_text or encoder.device.type != "cpu":
        raise OnnxTextError(f"model {encoder.spec} on {encoder.device} has no exportable CPU text tower")
    folder = Path(cache_dir).expanduser() / cache_key(encoder)

    def open_checked() -> OnnxTextTower:
        return _checked(encoder, OnnxTextTower(folder / MODEL_FILE, threads or default_text_threads()))

    with _CACHE_LOCK:
        if (folder / MODEL_FILE).is_file():
            try:
                return open_checked()
            except Exception as exc:  # damaged or stale files: export again below
                logger.warning("re-exporting the cached ONNX text tower in %s: %s", folder, one_line(exc, 300))
        export_text_tower(encoder, folder)
        return open_checked()


def cache_key(encoder: ClipEncoder) -> str:
    """A folder name for one model's export: its spec, the library versions and a fingerprint of its weights."""
    model = encoder.model
    digest = hashlib.sha256(f"{encoder.spec}|{open_clip.__version__}|{torch.__version__}".encode())
    for tensor in (model.positional_embedding, *model.ln_final.parameters()):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    name = "".join(c if c.isalnum() else "-" for c in str(encoder.spec))[:60]
    return f"{name}-{digest.hexdigest()[:16]}"


def export_text_tower(encoder: ClipEncoder, folder: Path) -> None:
    """Export the trimmed text tower to `folder` (replaced whole, so a crash never leaves half an export)."""
    tokens = trim_tokens(encoder.tokenizer(["a photo of a dog", "a cat"]))  # batch and length above 1: kept dynamic
    length = torch.export.Dim("length", min=1, max=int(encoder.model.positional_embedding.shape[0]))
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    _remove_abandoned(folder)
    tmp.mkdir(parents=True)
    for name in ("onnx_ir", "onnxscript"):  # the exporter's passes log every step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        torch.onnx.export(_TextTower(encoder.model).eval(), (tokens,), str(tmp / MODEL_FILE), input_names=["tokens"],
                          output_names=["features"], dynamic_shapes=({0: torch.export.Dim("batch"), 1: length},),
                          dynamo=True, external_data=True, verbose=False)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except Exception as exc:
        raise OnnxTextError(f"cannot export the text tower of {encoder.spec} to ONNX: {one_line(exc, 300)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned(folder: Path) -> None:
    """Delete temporary exports of this model that a killed process left (untouched for an hour)."""
    for tmp in folder.parent.glob(f"{folder.name}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > ABANDONED_AFTER_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # another process removed it first
            pass


def _checked(encoder: ClipEncoder, tower: OnnxTextTower) -> OnnxTextTower:
    """The tower, if it reproduces PyTorch's normalised vectors on the probe texts, one by one and batched."""
    for texts in [[text] for text in PROBES] + [list(PROBES)]:
        tokens = trim_tokens(encoder.tokenizer(texts))
        with torch.inference_mode():
            expected = torch.nn.functional.normalize(text_tower(encoder.model, tokens).float(), dim=-1).numpy()
        got = tower(tokens.numpy())
        got = got / np.linalg.norm(got, axis=-1, keepdims=True)
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if not diff <= MAX_ABS_DIFF:
            raise OnnxTextError(f"ONNX text tower differs from PyTorch by {diff:.2g} (allowed {MAX_ABS_DIFF})")
    return tower


class _TextTower(torch.nn.Module):
    """A copy of a CLIP model's text half: exporting traces this, never the model that is serving queries."""

    def __init__(self, model: open_clip.CLIP) -> None:
        super().__init__()
        for name in _TEXT_PARTS:
            setattr(self, name, copy.deepcopy(getattr(model, name)))
        mask = model.attn_mask
        self.register_buffer("attn_mask", None if mask is None else mask.clone(), persistent=False)
        self.text_pool_type = model.text_pool_type
        self.text_eos_id = getattr(model, "text_eos_id", None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return text_tower(self, tokens)


def choose_text_precision(encoder: ClipEncoder, asked: str, probes: Sequence[str], top_rows: TopRows,
                          min_recall: float = MIN_RECALL) -> PrecisionDecision:
    """Quantise the encoder's ONNX text tower (cached beside its export), measure the gate with `probes` over the
    collection (`top_rows`), and move text queries to int8 when `asked` (auto, int8, fp32) and the figure say so;
    whatever fails, fp32 keeps answering. The decision is logged and kept on the serving tower."""
    fp32 = encoder.onnx_text
    if not isinstance(fp32, OnnxTextTower):
        raise OnnxTextError("text queries are not on ONNX Runtime, so there is no tower to quantise")
    if asked == "fp32":
        decision = PrecisionDecision(asked, "fp32", "fp32 was asked for (SEARCH_TEXT_PRECISION=fp32)")
    else:
        try:
            int8 = load_int8_text(encoder, fp32)
            decision = decide(asked, measure_agreement(encoder, fp32, int8, probes, top_rows), min_recall)
        except Exception as exc:  # an optional speed-up: fp32 keeps answering
            decision = PrecisionDecision(asked, "fp32", f"no int8 text tower: {one_line(exc, 300)}")
    serving = int8 if decision.serving == "int8" else fp32
    serving.decision = decision
    encoder.onnx_text = serving
    passed = decision.agreement is not None and decision.agreement.passes(min_recall)
    log = logger.info if passed or asked == "fp32" else logger.warning  # int8 was wanted and fell short
    log("text queries at %s: %s", decision.serving, decision.reason)
    return decision


def load_int8_text(encoder: ClipEncoder, fp32: OnnxTextTower) -> OnnxTextTower:
    """The int8 copy of a checked fp32 export, from the cache or freshly quantised, checked against it."""
    target = fp32.path.with_name(INT8_FILE)

    def open_checked() -> OnnxTextTower:
        return _checked_int8(encoder, fp32, OnnxTextTower(target, fp32.threads))

    with _CACHE_LOCK:
        if target.is_file():
            try:
                return open_checked()
            except Exception as exc:  # damaged or stale: quantise again below
                logger.warning("quantising the ONNX text tower again: %s", one_line(exc, 300))
        start = time.perf_counter()
        quantise_onnx(fp32.path, target)
        logger.info("quantised the ONNX text tower to int8 in %.1f s", time.perf_counter() - start)
        return open_checked()


def measure_agreement(encoder: ClipEncoder, fp32: Callable[[np.ndarray], np.ndarray],
                      int8: Callable[[np.ndarray], np.ndarray], probes: Sequence[str], top_rows: TopRows) -> Agreement:
    """The gate's figures for two towers' vectors of `probes` over one collection."""
    reference, candidate = [], []
    for start in range(0, len(probes), PROBE_BATCH):
        tokens = trim_tokens(encoder.tokenizer(list(probes[start:start + PROBE_BATCH]))).numpy()
        reference.append(fp32(tokens))
        candidate.append(int8(tokens))
    ref, got = (unit_rows(np.concatenate(parts)) for parts in (reference, candidate))
    return agreement(top_rows(ref, RECALL_K), top_rows(got, RECALL_K), ref, got)


def bundle_probes(describe: Callable[[int], str | None], count: int, examples: Sequence[str]) -> list[str]:
    """Probe texts for a collection of `count` items: its example queries and the descriptions of an even sample
    of its items (generic probes when it has too few)."""
    rows = np.unique(np.linspace(0, count - 1, min(PROBE_COUNT, count)).astype(int)) if count else []
    return probe_texts([*examples, *(describe(int(row)) or "" for row in rows)])


def text_precision_record(encoder: ClipEncoder) -> dict[str, Any]:
    """What /api/health shows about the text tower's weights."""
    tower = encoder.onnx_text
    decision = getattr(tower, "decision", None)
    if isinstance(decision, PrecisionDecision):
        return decision.record()
    reason = "text queries run on PyTorch" if tower is None else "the int8 agreement gate has not decided yet"
    return {"serving": "fp32", "reason": reason}


def _checked_int8(encoder: ClipEncoder, fp32: OnnxTextTower, int8: OnnxTextTower) -> OnnxTextTower:
    """The int8 tower, if its vectors for the fixed probe texts stay near the fp32 export's."""
    tokens = trim_tokens(encoder.tokenizer(list(PROBES))).numpy()
    got = int8(tokens)
    cosine = np.sum(unit_rows(fp32(tokens)) * unit_rows(got), axis=1) if got.shape[0] == len(PROBES) else np.zeros(1)
    if not float(cosine.min()) >= MIN_INT8_COSINE:
        raise OnnxTextError(f"int8 text tower is off its fp32 export (cosine {float(cosine.min()):.3g}, allowed "
                            f"{MIN_INT8_COSINE} or more)")
    return int8
