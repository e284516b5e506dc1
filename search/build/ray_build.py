"""The build as a Ray Data job: fetch + decode in CPU tasks, embed in an actor pool (GPUs when the cluster has them).

The same `search.build.pipeline.build_bundle` runs around it: the same resume check, --from, skip set, shard store and
verified bundle. Only the middle step differs. The driver streams the source with the same reader
(`search.build.sources.iter_items`: same ids, order, limits, repeated ids taken once) and hands it to Ray Data in
windows of `RayOptions.window` items; the rows come back in source order, and the driver commits them as the
same checkpoint shards, so a killed build resumes as a single-process one does. Ray is an optional extra
(requirements-scale.txt): it is imported only here, and only when `--ray` is given.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from search.build.fetch import FetchConfig, ImageFetcher
from search.build.pipeline import (
    STATUS_OK,
    BuildConfig,
    BuildError,
    Preparer,
    _Counts,
    _fresh,
    _Pipeline,
    _row,
    _with_facts,
    build_bundle,
    failure_row,
)
from search.build.sources import Item
from search.build.thumbnails import images_folder
from search.build.transform import split_transform
from search.bundle.store import Manifest
from search.config import EncoderSpec
from search.errors import one_line

logger = logging.getLogger(__name__)

FETCH_CPUS = 0.5
# The search package, shipped to a remote cluster's workers (runtime_env py_modules).
PACKAGE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where the job runs and how it is cut: `address` None starts a local Ray instance."""

    address: str | None = None  # "auto", "ray://HOST:10001", "HOST:6379"
    window: int = 50_000  # items per Ray Data job: bounds the driver's memory; each job loads the model again


@dataclass(frozen=True, slots=True)
class _Stage:
    """What the Ray tasks and actors need from the build config (picklable, small)."""

    fetch: FetchConfig
    in_worker: Any  # the PIL half of the model's preprocessing (search.build.transform.split_transform)
    input_side: int
    out: Path
    local_files: bool
    workers: int
    spec: EncoderSpec
    device: str  # as asked for (auto, cpu, cuda); resolved on the worker that holds the model
    shape: tuple[int, ...]  # of the prepared pixels: a failed row carries zeros of this shape and dtype
    dtype: str
    ocr: bool  # --ocr: each task process reads the words in its pictures (search/build/ocr.py), as threads do


def build_bundle_on_ray(config: BuildConfig, options: RayOptions) -> Manifest:
    """`search.build.pipeline.build_bundle` with the fetch and embed steps run as Ray Data jobs."""
    try:
        import ray
    except ImportError as exc:  # an optional extra: say how to get it
        raise BuildError("--ray needs Ray Data: pip install -r requirements-scale.txt") from exc

    started = not ray.is_initialized()
    if started:
        _connect(options)
    try:
        runner = functools.partial(embed_on_ray, device=config.device, window=options.window)
        # The driver's own copy of the model only gives the dimension and the preprocessing: keep it off the GPU.
        return build_bundle(replace(config, device="cpu"), embed=runner)
    except ray.exceptions.RayError as exc:  # a worker that crashed or a task that raised: what came back is kept
        raise BuildError(f"the Ray job failed ({one_line(exc, 300)}); the shards committed so far are kept: run "
                         "the same command to resume") from exc
    finally:
        if started:
            ray.shutdown()


def _connect(options: RayOptions) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report: builds run offline too
    try:
        if options.address is None:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            return
        # A remote cluster's workers have no copy of this repository: ship the `search` package with the job.
        ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"py_modules": [str(PACKAGE_DIR)]})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BuildError(f"cannot start or reach Ray at {options.address or 'a local instance'} "
                         f"({one_line(exc, 300)}); check --ray ADDRESS and that the cluster is up") from exc


def embed_on_ray(pipeline: _Pipeline, items: Iterable[Item], skip: set[str], device: str = "auto",
                 window: int = RayOptions.window) -> _Counts:
    """Run the items not in `skip` through Ray Data in windows; commit shards from the results, in source order."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data logs every job's plan at INFO
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in source order, as single-process
    context.enable_progress_bars = False  # the build's own bar counts items
    stage = _stage(pipeline, device)
    pool = _embed_pool(device)
    counts = _Counts()
    fresh = _fresh(items, skip)
    with tqdm(unit="img", disable=not pipeline.config.progress, dynamic_ncols=True) as bar:
        try:
            for chunk in _windows(fresh, window):
                for item, reason, vector in _run_window(chunk, stage, pool, pipeline.config.batch_size):
                    _commit(pipeline, item, reason, vector, counts)
                    bar.update(1)
        finally:  # a broken stream or a failed job still gets what came back committed
            pipeline.flush()
    return counts


def _windows(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _stage(pipeline: _Pipeline, device: str) -> _Stage:
    encoder, config = pipeline.encoder, pipeline.config
    in_worker = split_transform(encoder.preprocess).in_worker
    # Shape and dtype, not a blank array: small arguments travel inline, not through Ray's object store.
    probe = np.asarray(in_worker(Image.new("RGB", (encoder.input_side,) * 2)))
    return _Stage(config.fetch, in_worker, encoder.input_side, config.out, config.source.images_dir is not None,
                  config.workers, encoder.spec.resolved(Path.cwd()), device, probe.shape, probe.dtype.str, config.ocr)


def _embed_pool(device: str) -> tuple[int, dict[str, float]]:
    """Embedding actors and what each reserves: one per GPU of the cluster, else one per node (a core each)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device.startswith("cuda") and gpus == 0:
        raise BuildError(f"--device {device} but the Ray cluster has no GPU; use --device auto or cpu")
    if gpus and device not in ("cpu", "mps"):
        return gpus, {"num_gpus": 1}
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive"))), {"num_cpus": 1}


def _run_window(chunk: list[Item], stage: _Stage, pool: tuple[int, dict[str, float]], batch_size: int
                ) -> Iterator[tuple[Item, str, np.ndarray]]:
    """One Ray Data job over `chunk`: (item, failure reason or "", vector) for each item, in order."""
    import ray.data

    rows = [{"position": number, "id": item.id, "location": item.location, "thumbnail": item.thumbnail or ""}
            for number, item in enumerate(chunk)]
    blocks = max(1, -(-len(rows) // batch_size))  # one fetch task per batch of items
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    # Fetch tasks reserve half a core (they mostly wait on the network), which also keeps Ray Data from fusing
    # them into the model's actors: fetching then runs beside the model, not in turn with it.
    dataset = dataset.map_batches(_prepare_batch, fn_kwargs={"stage": stage}, batch_size=None,
                                  batch_format="numpy", num_cpus=FETCH_CPUS)
    actors, resources = pool
    embedded = dataset.map_batches(_Embedder, fn_constructor_args=(stage,), batch_size=batch_size,
                                   batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                                   **resources)
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for position, reason, vector, facts in zip(batch["position"], batch["reason"], batch["vector"],
                                                   batch["facts"], strict=True):
            yield _with_facts(chunk[int(position)], json.loads(facts)), str(reason), vector


def _commit(pipeline: _Pipeline, item: Item, reason: str, vector: np.ndarray, counts: _Counts) -> None:
    """Driver: queue one item's row (and vector) for the next shard; commit a shard once it is full."""
    if reason:
        counts.failed += 1
        logger.debug("failed %s: %s", item.id, reason)
        pipeline.rows.append(failure_row(item, reason))
    else:
        counts.ok += 1
        pipeline.rows.append(_row(item, STATUS_OK))
        pipeline.vectors.append(np.asarray(vector, np.float32)[None, :])
    if len(pipeline.rows) >= pipeline.config.shard_size:
        pipeline.flush()


def _prepare_batch(batch: dict[str, np.ndarray], stage: _Stage) -> dict[str, np.ndarray]:
    """Ray task: fetch, decode and preprocess a batch of items in threads (the same `Preparer` as single-process)."""
    items = [Item(str(item_id), str(location), {}, str(thumbnail) or None)
             for item_id, location, thumbnail in zip(batch["id"], batch["location"], batch["thumbnail"], strict=True)]
    if stage.local_files:
        images_folder(stage.out)  # made by the driver already; here too, for a node that sees --out first
    with ImageFetcher(stage.fetch) as fetcher, ThreadPoolExecutor(stage.workers) as pool:
        preparer = Preparer(fetcher, stage.in_worker, stage.input_side, stage.out, stage.local_files, stage.ocr)
        results = list(pool.map(preparer, items))
    reasons = [result if isinstance(result, str) else "" for result in results]
    blank = np.zeros(stage.shape, stage.dtype)
    pixels = [blank if isinstance(result, str) else np.asarray(result[0]) for result in results]
    # The picture's facts (colour, EXIF) travel as JSON text: plain values, no pickled objects between processes.
    facts = [json.dumps({} if isinstance(result, str) else result[1]) for result in results]
    return {"position": batch["position"], "reason": np.array(reasons, dtype=object), "pixels": np.stack(pixels),
            "facts": np.array(facts, dtype=object)}


class _Embedder:
    """Ray actor: the model, loaded once per actor; vectors for the prepared rows of a batch (zeros if failed)."""

    def __init__(self, stage: _Stage) -> None:
        from search.model.encoder import ClipEncoder, resolve_device

        # Ray limits a worker to the CPUs it reserved (OMP_NUM_THREADS=1); the model gets the cores a
        # single-process build gives it, while the fetch tasks mostly wait on the network.
        threads = 0 if resolve_device(stage.device) != "cpu" else (os.cpu_count() or 1)
        self.encoder = ClipEncoder.load(stage.spec, resolve_device(stage.device), threads)
        self.in_batch = split_transform(self.encoder.preprocess).in_batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = np.array([not reason for reason in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            prepared = [torch.from_numpy(np.ascontiguousarray(pixels)) for pixels in batch["pixels"][ok]]
            vectors[ok] = self.encoder.encode_pixels(self.in_batch(prepared))
        return {"position": batch["position"], "reason": batch["reason"], "vector": vectors, "facts": batch["facts"]}
