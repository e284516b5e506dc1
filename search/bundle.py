"""Index bundle: one directory with a manifest, the hnswlib graph, raw embeddings and item metadata."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from search.config import EncoderSpec, HnswParams
from search.errors import BundleError, UnknownItemError
from search.index import VectorIndex
from search.types import FeatureVector, Hit

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.hnsw"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
METADATA_COLUMNS = ("id", "image", "page_url", "description", "photographer")
REBUILD_HINT = "rebuild it with build_index.py or download it again"


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What a bundle records about how it was made (everything but the data itself)."""

    encoder: EncoderSpec
    hnsw: HnswParams = field(default_factory=HnswParams)
    source: str = "unknown"
    source_revision: str | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed `manifest.json` of a bundle."""

    info: BundleInfo
    dim: int
    count: int
    created: str
    files: dict[str, str] = field(default_factory=dict)
    space: str = "cosine"
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        info = self.info
        return {
            "format_version": self.format_version,
            "encoder": {"model": info.encoder.model, "pretrained": info.encoder.pretrained},
            "dim": self.dim,
            "count": self.count,
            "space": self.space,
            "hnsw": asdict(info.hnsw),
            "source": {"name": info.source, "revision": info.source_revision},
            "created": self.created,
            "failures": info.failures,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Parse and validate; raises BundleError naming the bad field."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"bundle format_version {version!r} is not supported (expected {FORMAT_VERSION}); "
                              "rebuild the bundle with this version of build_index.py")
        try:
            info = BundleInfo(
                encoder=EncoderSpec(str(data["encoder"]["model"]), data["encoder"].get("pretrained")),
                hnsw=HnswParams(int(data["hnsw"]["m"]), int(data["hnsw"]["ef_construction"]),
                                int(data["hnsw"]["ef_search"])),
                source=str(data["source"]["name"]),
                source_revision=data["source"].get("revision"),
                failures=int(data.get("failures", 0)),
            )
            manifest = cls(info, int(data["dim"]), int(data["count"]), str(data["created"]),
                           dict(data["files"]), str(data["space"]), version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{MANIFEST_FILE} is malformed ({type(exc).__name__}: {exc}); {REBUILD_HINT}") from exc
        if manifest.space != "cosine":
            raise BundleError(f"bundle space {manifest.space!r} is not supported (only 'cosine'); {REBUILD_HINT}")
        return manifest


class ItemCatalog:
    """Per-item metadata by row number, with lookups by id; image paths resolved against the bundle."""

    def __init__(self, table: pa.Table, root: Path) -> None:
        missing = [name for name in METADATA_COLUMNS if name not in table.column_names]
        if missing:
            raise BundleError(f"{METADATA_FILE} lacks column(s) {', '.join(missing)}; {REBUILD_HINT}")
        columns = {name: table.column(name).to_pylist() for name in METADATA_COLUMNS}
        self._ids: list[str] = [str(item_id) for item_id in columns["id"]]
        self._images = [_resolve_image(str(image), root) for image in columns["image"]]
        self._page_urls: list[str | None] = columns["page_url"]
        self._descriptions = [text or "" for text in columns["description"]]
        self._photographers: list[str | None] = columns["photographer"]
        self._rows = {item_id: row for row, item_id in enumerate(self._ids)}
        if len(self._rows) != len(self._ids):
            raise BundleError(f"{METADATA_FILE} has duplicate ids; {REBUILD_HINT}")

    def __len__(self) -> int:
        return len(self._ids)

    def row_of(self, item_id: str) -> int:
        """Row number of an id; raises UnknownItemError for ids not in the collection."""
        try:
            return self._rows[item_id]
        except KeyError:
            raise UnknownItemError(f"no item with id {item_id!r} in this index; use an id from a search result") \
                from None

    def hit(self, row: int, score: float) -> Hit:
        """The hit for a row with the given similarity (already rounded by `index.to_scores`)."""
        return Hit(self._ids[row], float(score), self._images[row], self._page_urls[row],
                   self._descriptions[row], self._photographers[row])


def _resolve_image(image: str, root: Path) -> str:
    # Local bundles store image paths relative to the bundle so the folder can be moved or shipped.
    if "://" in image or Path(image).is_absolute():
        return image
    return str(root / image)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A loaded, verified index bundle."""

    root: Path
    manifest: Manifest
    embeddings: FeatureVector
    index: VectorIndex
    catalog: ItemCatalog

    @property
    def encoder_spec(self) -> EncoderSpec:
        """The encoder this bundle was built with (a relative `local-dir:` resolved against the bundle)."""
        return self.manifest.info.encoder.resolved(self.root)

    @classmethod
    def load(cls, root: Path) -> Bundle:
        """Load and verify a bundle directory; raises BundleError saying what is wrong and what to do."""
        root = Path(root).absolute()  # hits carry image paths that work from any working directory
        manifest = read_manifest(root)
        verify_files(root, manifest)
        embeddings = _load_embeddings(root / EMBEDDINGS_FILE, manifest)
        index = VectorIndex.load(root / INDEX_FILE, manifest.dim, manifest.info.hnsw)
        catalog = ItemCatalog(pq.read_table(root / METADATA_FILE), root)
        if not len(index) == len(catalog) == manifest.count:
            raise BundleError(f"bundle at {root} is inconsistent: manifest count {manifest.count}, index "
                              f"{len(index)}, metadata {len(catalog)} rows; {REBUILD_HINT}")
        logger.info("loaded bundle %s: %d items, encoder %s", root, manifest.count, manifest.info.encoder)
        return cls(root, manifest, embeddings, index, catalog)


def read_manifest(root: Path) -> Manifest:
    """Parse `root/manifest.json`."""
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise BundleError(f"index bundle folder {root} does not exist; build one with build_index.py "
                          "or pass --index with an existing bundle")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} has no {MANIFEST_FILE}, so it is not an index bundle; {REBUILD_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); {REBUILD_HINT}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object; {REBUILD_HINT}")
    return Manifest.from_json(data)


def verify_files(root: Path, manifest: Manifest) -> None:
    """Check that every file the manifest lists exists and has the recorded sha256."""
    required = {INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE}
    unlisted = required - manifest.files.keys()
    if unlisted:
        raise BundleError(f"{MANIFEST_FILE} lists no checksum for {', '.join(sorted(unlisted))}; {REBUILD_HINT}")
    for name, expected in sorted(manifest.files.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle file {path} is missing; {REBUILD_HINT}")
        if sha256_of(path) != expected:
            raise BundleError(f"bundle file {path} is corrupt (sha256 differs from {MANIFEST_FILE}); {REBUILD_HINT}")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_embeddings(path: Path, manifest: Manifest) -> FeatureVector:
    try:
        embeddings = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{path} is not a plain .npy array ({exc}); {REBUILD_HINT}") from exc
    if embeddings.dtype != np.float32 or embeddings.shape != (manifest.count, manifest.dim):
        raise BundleError(f"{path} holds {embeddings.dtype} {embeddings.shape}, expected float32 "
                          f"({manifest.count}, {manifest.dim}); {REBUILD_HINT}")
    return embeddings


def write_bundle(root: Path, embeddings: FeatureVector, metadata: pa.Table, info: BundleInfo) -> Manifest:
    """Write a complete bundle into `root`: data files first, the manifest last as the commit point.

    Files already in `root` (such as thumbnails under `images/`) become part of the bundle and are
    checksummed too. A `local-dir:` encoder path is recorded relative to the bundle.
    """
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or len(embeddings) != metadata.num_rows:
        raise ValueError(f"need float32 (n, dim) embeddings for {metadata.num_rows} rows, got "
                         f"{embeddings.dtype} {embeddings.shape}")
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_FILE).unlink(missing_ok=True)  # a half-written bundle must not look complete
    atomic_write(root / EMBEDDINGS_FILE, lambda tmp: np.save(tmp, embeddings, allow_pickle=False))
    atomic_write(root / METADATA_FILE, lambda tmp: pq.write_table(metadata, tmp))
    index = VectorIndex.build(embeddings, info.hnsw)
    atomic_write(root / INDEX_FILE, index.save)
    portable = BundleInfo(info.encoder.relative_to(root), info.hnsw, info.source, info.source_revision,
                          info.failures)
    files = {path.relative_to(root).as_posix(): sha256_of(path) for path in _bundle_files(root)}
    manifest = Manifest(portable, int(embeddings.shape[1]), len(embeddings),
                        datetime.now(UTC).isoformat(timespec="seconds"), files)
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    atomic_write(root / MANIFEST_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return manifest


def _bundle_files(root: Path) -> list[Path]:
    # Hidden names are temporary files and tool caches (e.g. huggingface_hub's .cache), not data.
    return [path for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != MANIFEST_FILE
            and not any(part.startswith(".") for part in path.relative_to(root).parts)]


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write via a hidden temp file beside `path`, fsync it, rename over `path`, fsync the folder.

    Readers see the old file or the new one, never half of one; hidden names stay out of the manifest.
    """
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keep the suffix: np.save appends .npy
    write(tmp)
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # make the rename itself durable, not only the data
    finally:
        os.close(folder)
