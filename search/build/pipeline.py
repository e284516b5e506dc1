"""Build pipeline: source items -> fetch + decode + resize (thread pool) -> to tensor + encode -> shards -> bundle."""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from search.build.fetch import FetchConfig, FetchError, ImageFetcher
from search.build.finalize import BaseBundle, finalize_bundle, load_base
from search.build.ocr import OCR_SIDE, load_reader, words_in_picture
from search.build.picture_facts import file_facts
from search.build.shards import STATUS_FAILED, STATUS_OK, ShardStore
from search.build.sources import Item, SourceConfig, count_items, iter_items
from search.build.thumbnails import THUMBNAIL_SIDE, images_folder, save_thumbnail
from search.build.transform import SplitTransform, split_transform
from search.bundle.attributes import WORDS_IN_PICTURE
from search.bundle.colour import dominant_colour
from search.bundle.durable import atomic_write, sync_folder
from search.bundle.store import BundleInfo, Manifest
from search.config import EncoderSpec, HnswParams
from search.errors import BadImageError, SearchError
from search.model.encoder import ClipEncoder, resolve_device, same_model
from search.model.images import load_image
from search.model.quantised import GatedImageTower

logger = logging.getLogger(__name__)

PICTURE_COLUMNS = ("width", "height", "date", "camera_make", "camera_model", "latitude", "longitude", "colour",
                   "colour_hex")
"""Columns `picture_columns` may learn from a picture."""
WORK_DIR = ".build"  # hidden, so write_bundle leaves it out of the manifest
STATE_FILE = "build.json"


class BuildError(SearchError):
    """A build that cannot start or finish as configured (mismatched resume, nothing embedded, ...)."""


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """Everything one build needs; the CLI flags map onto these fields."""

    out: Path
    source: SourceConfig = field(default_factory=SourceConfig)
    encoder: EncoderSpec | None = None  # None: the `base` bundle's encoder, else the default model
    device: str = "auto"
    batch_size: int = 32
    shard_size: int = 512
    workers: int = 8
    limit: int | None = None
    hnsw: HnswParams = field(default_factory=HnswParams)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    base: str | None = None  # --from: a bundle folder or Hub repo whose items are kept and skipped
    retry_failed: bool = False
    progress: bool = True
    precision: str = "fp32"  # int8: the image tower quantised, if it passes the gate (search/model/quantised.py)
    ocr: bool = False  # --ocr: the words in each picture (search/build/ocr.py) in the words_in_picture column


@dataclass(slots=True)
class _Counts:
    ok: int = 0
    failed: int = 0


EmbedRunner = Callable[["_Pipeline", Iterable[Item], set[str]], _Counts]


def build_bundle(config: BuildConfig, embed: EmbedRunner | None = None) -> Manifest:
    """Run (or resume) a build into `config.out` and return the manifest of the verified bundle.

    `embed` runs the items through fetch, encode and shards (default `embed_items`, in this process;
    search/build/ray_build.py passes one that runs them as a Ray Data job).
    """
    source = _started(iter_items(config.source))  # a missing folder or data file stops here, before anything exists
    work = config.out / WORK_DIR
    _check_state(work, config, None)  # before --from is copied in: a refused build must leave no trace
    base = load_base(config.base, work / "base", config.out) if config.base else None
    spec = _encoder_spec(config, base)
    if config.ocr:
        load_reader()  # a missing OCR package stops the build here, before the build folder is made
    encoder = ClipEncoder.load(spec, resolve_device(config.device))  # before the build folder is made
    _check_state(work, config, spec)
    if base is not None and base.dim != encoder.dim:
        raise BuildError(f"model {spec} makes {encoder.dim}-d vectors but --from bundle holds {base.dim}-d ones")
    store = ShardStore(work / "shards", encoder.dim)
    skip = store.done_ids(include_failed=not config.retry_failed) | (base.ids if base else set())
    items = itertools.islice(_outside_bundle(source, config), config.limit)
    pipeline = _Pipeline(encoder, ImageFetcher(config.fetch), store, config)
    counts = (embed or embed_items)(pipeline, _refusing(items, pipeline, skip), skip)
    logger.info("embedded %d items this run, %d failed, %d rows refused by the bundle's rules", counts.ok,
                counts.failed, pipeline.refused)
    info = BundleInfo(spec, config.hnsw, config.source.published_name, config.source.pinned_revision)
    return finalize_bundle(config.out, store.collect(), info, base, encoder)


def _started(items: Iterator[Item]) -> Iterator[Item]:
    """`items` with its first one already read: a source that cannot be read fails now, not under a progress bar."""
    first = next(items, None)
    return items if first is None else itertools.chain([first], items)


def _refusing(items: Iterable[Item], pipeline: _Pipeline, skip: set[str]) -> Iterator[Item]:
    """The items that can be bundle rows; one whose row breaks a bundle rule is recorded as failed, unfetched.

    Here, before either runner (threads or Ray) sees it: both commit `pipeline.rows` as shards."""
    for item in items:
        if item.problem is None:
            yield item
        elif item.id not in skip:
            logger.debug("refused %s: %s", item.id, item.problem)
            pipeline.rows.append(failure_row(_storable(item), item.problem))
            pipeline.refused += 1


def _storable(item: Item) -> Item:
    """A refused item as a shard can hold it: its metadata blank but its image, its text encodable (a file name
    that is not UTF-8 has surrogates), so that no value of a broken row breaks the shard's columns."""
    def text(value: Any) -> str | None:
        return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else None

    return replace(item, id=text(item.id) or "", metadata={**dict.fromkeys(item.metadata),
                                                           "image": text(item.metadata.get("image"))})


def _outside_bundle(items: Iterable[Item], config: BuildConfig) -> Iterable[Item]:
    """Items, less the bundle's own thumbnails when --out lies inside --images-dir (a rerun would find them)."""
    if config.source.images_dir is None:
        return items
    own = images_folder(config.out).resolve()  # here, not lazily: a refused folder stops the build at once
    return (item for item in items if not Path(item.location).is_relative_to(own))


def _encoder_spec(config: BuildConfig, base: BaseBundle | None) -> EncoderSpec:
    if base is None:
        return config.encoder or EncoderSpec()
    if config.encoder is not None and not same_model(config.encoder.resolved(Path.cwd()), base.spec):
        raise BuildError(f"--from bundle was built with {base.spec}, not {config.encoder}; leave out --model "
                         "to add items with the bundle's own model, or build a new index without --from")
    return base.spec


def _check_state(work: Path, config: BuildConfig, spec: EncoderSpec | None) -> None:
    """Record what this build folder is for; refuse to resume it with another model or source.

    With `spec` None only the source and --from are checked, and nothing is written.
    """
    state = {"source": config.source.name, "revision": config.source.pinned_revision, "base": config.base,
             "ocr": config.ocr or None}  # a build half with words, half without, would filter unevenly
    if spec is not None:
        state["encoder"] = str(spec.resolved(Path.cwd()))
    path = work / STATE_FILE
    # A folder with no committed shard has nothing to protect: a start that failed (a model that would not
    # load, a mistyped source) must not block the corrected command.
    if path.is_file() and any((work / "shards").glob("shard-*.parquet")):
        recorded = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in state if recorded.get(key) != state[key]]
        if changed:
            raise BuildError(f"{config.out} holds an unfinished or earlier build with other {', '.join(changed)} "
                             f"({', '.join(f'{k}={recorded.get(k)!r}' for k in changed)}); use another --out, "
                             f"or delete {work} to start over")
        if spec is not None:
            logger.info("resuming the build in %s", config.out)
        return
    if spec is None:
        return
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(state, indent=2), encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Preparer:
    """One item's fetch, safe decode, per-image preprocessing and thumbnail: what a worker (thread or Ray task) does.

    `local_files`: locations are the user's own --images-dir files; otherwise they must be http(s) URLs.
    """

    fetcher: ImageFetcher
    in_worker: Callable[[Image.Image], Any]
    input_side: int
    out: Path
    local_files: bool
    ocr: bool = False

    def __call__(self, item: Item) -> Any:
        """(prepared pixels, facts), or a string: the failure reason.

        The facts are columns learnt from the picture (its dominant colour; for a local file also size, EXIF date,
        camera and GPS). The thumbnail comes from the picture decoded for the model, and is written before the
        item's row can be committed, so a committed row always has its file.
        """
        side = max(self.input_side, 0 if item.thumbnail is None else THUMBNAIL_SIDE, OCR_SIDE if self.ocr else 0)
        try:
            data = self._bytes_of(item)
            image = load_image(data, min_side=side)
            prepared = self.in_worker(image)
        except (FetchError, BadImageError) as exc:
            return str(exc).removeprefix("upload: ")
        if item.thumbnail is not None:
            save_thumbnail(image, self.out, item.thumbnail)
        return prepared, picture_columns(image, data if self.local_files else None, self.ocr)

    def _bytes_of(self, item: Item) -> bytes:
        # Only the user's own --images-dir names local files; a data set row's location must be an http(s) URL
        # (a row naming /proc/self/environ or /dev/zero is refused, not read).
        if self.local_files:
            return self.fetcher.read_file(Path(item.location))
        return self.fetcher.fetch_url(item.location)


@dataclass(slots=True)
class _Pipeline:
    encoder: ClipEncoder
    fetcher: ImageFetcher
    store: ShardStore
    config: BuildConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    batch: list[tuple[Item, Any]] = field(default_factory=list)
    refused: int = 0  # rows recorded as failed before fetching: they break a bundle rule
    transform: SplitTransform = field(init=False)
    preparer: Preparer = field(init=False)
    encode_pixels: Callable[[Any], np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.transform = split_transform(self.encoder.preprocess)
        int8 = self.config.precision == "int8"
        self.encode_pixels = GatedImageTower(self.encoder) if int8 else self.encoder.encode_pixels
        self.preparer = Preparer(self.fetcher, self.transform.in_worker, self.encoder.input_side, self.config.out,
                                 self.config.source.images_dir is not None, self.config.ocr)

    def prepare(self, item: Item) -> Any:
        """Worker thread: see `Preparer`."""
        return self.preparer(item)

    def accept(self, item: Item, result: Any, counts: _Counts) -> None:
        """Main thread: queue a prepared item for encoding or record its failure."""
        if isinstance(result, str):
            counts.failed += 1
            logger.debug("failed %s: %s", item.id, result)
            self.rows.append(failure_row(item, result))
        else:
            counts.ok += 1
            prepared, facts = result
            self.batch.append((_with_facts(item, facts), prepared))
        if len(self.batch) >= self.config.batch_size:
            self.encode_batch()

    def encode_batch(self) -> None:
        """Encode the queued items; commit a shard once enough rows are waiting."""
        if self.batch:
            pixels = self.transform.in_batch([prepared for _, prepared in self.batch])
            self.vectors.append(self.encode_pixels(pixels))
            self.rows.extend(_row(item, STATUS_OK) for item, _ in self.batch)
            self.batch.clear()
        if len(self.rows) >= self.config.shard_size:
            self.flush()

    def flush(self) -> None:
        """Commit everything encoded or failed so far as one shard."""
        if self.rows:
            if self.config.source.images_dir is not None:
                sync_folder(images_folder(self.config.out))  # thumbnails reach the disk before their rows
            dim = self.encoder.dim
            if self.config.ocr:  # a shard's columns come from its first row, which may be a failure without words
                self.rows = [{**row, WORDS_IN_PICTURE: row.get(WORDS_IN_PICTURE)} for row in self.rows]
            self.store.write(self.rows, np.concatenate(self.vectors) if self.vectors else np.empty((0, dim), "f4"))
            self.rows, self.vectors = [], []


def embed_items(pipeline: _Pipeline, items: Iterable[Item], skip: set[str]) -> _Counts:
    """Prepare items ahead of the model in a bounded pool, encode them in batches, commit shards."""
    config, counts = pipeline.config, _Counts()
    window = max(2 * config.batch_size, 4 * config.workers)  # enough read-ahead to keep the model busy
    pending: deque[tuple[Item, Future[Any]]] = deque()
    size = count_items(config.source)
    size = config.limit if size is None else min(size, config.limit or size)
    total = None if size is None else max(size - len(skip), 0)  # skipped ids are mostly inside `size`
    with ThreadPoolExecutor(config.workers, thread_name_prefix="fetch") as pool, pipeline.fetcher, \
            tqdm(total=total, unit="img", disable=not config.progress, dynamic_ncols=True) as bar:
        try:
            for item in _fresh(items, skip):
                pending.append((item, pool.submit(pipeline.prepare, item)))
                while len(pending) >= window:
                    _take(pipeline, pending, counts, bar)
        finally:  # a stream that breaks mid-way (network) still gets what was fetched committed
            while pending:
                _take(pipeline, pending, counts, bar)
            pipeline.encode_batch()
            pipeline.flush()
    return counts


def _take(pipeline: _Pipeline, pending: deque, counts: _Counts, bar: tqdm) -> None:
    item, future = pending.popleft()
    pipeline.accept(item, future.result(), counts)
    bar.update(1)
    bar.set_postfix(ok=counts.ok, failed=counts.failed, refresh=False)


def _fresh(items: Iterable[Item], skip: set[str]) -> Iterator[Item]:
    """Items not done yet; a repeated id in the source is taken once."""
    seen = set(skip)
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            yield item


def failure_row(item: Item, reason: str) -> dict[str, Any]:
    """The shard row of an item that could not be fetched or decoded."""
    row = {**_row(item, STATUS_FAILED), "reason": reason}
    if item.thumbnail is not None:
        row["image"] = None  # its thumbnail was never written: point at nothing
    return row


def picture_columns(image: Image.Image, data: bytes | None, ocr: bool = False) -> dict[str, Any]:
    """Columns learnt from a decoded picture: its dominant colour, with `ocr` its words, and from a local file's
    bytes its facts."""
    name, hex_code = dominant_colour(image)
    words = {WORDS_IN_PICTURE: words_in_picture(image)} if ocr else {}
    return {**(file_facts(data) if data is not None else {}), "colour": name, "colour_hex": hex_code, **words}


def _with_facts(item: Item, facts: dict[str, Any]) -> Item:
    """The item with facts from its picture added; a value the source gave (Unsplash's size) is kept."""
    known = {key: value for key, value in item.metadata.items() if value is not None}
    return replace(item, metadata={**item.metadata, **facts, **known})


def _row(item: Item, status: str) -> dict[str, Any]:
    # Every row has every key: pyarrow infers a shard's columns from its first row (a failed one has no facts).
    return {"id": item.id, "status": status, "reason": None, **dict.fromkeys(PICTURE_COLUMNS), **item.metadata}
