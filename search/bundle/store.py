"""Index bundle: one directory with a manifest, the hnswlib graph, raw embeddings and item metadata.

A bundle is untrusted input (a Hub repo is written by whoever owns it), checked here in one pass on load:
every file name and every local `image` must resolve, symlinks followed, inside the bundle folder (for a
huggingface_hub snapshot, also inside that repo's `blobs/`); every `image` is that or an http(s) URL and every
`page_url` an http(s) URL or null; the embeddings are finite unit vectors of the manifest's shape, read only
after their header matched it. A failure is one `BundleError` line that names bundle-relative files only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from search.bundle.durable import atomic_write
from search.bundle.embeddings import read_embeddings, release_pages
from search.bundle.folder import BundleFolder
from search.bundle.hnsw_index import SearchIndex, VectorIndex
from search.bundle.keywords import KeywordIndex, read_keywords
from search.bundle.manifest import (
    EMBEDDINGS_FILE,
    FAILURES_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    KEYWORD_FILES,
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    METADATA_FILE,
    MODEL_FOLDER,
    BundleInfo,
    Manifest,
    UiHints,
    parse_manifest,
    shown_name,
)
from search.bundle.metadata import ItemCatalog, load_catalog
from search.bundle.verified import UnreadableFileError, VerificationRecord, sha256_of
from search.config import REPO_ROOT, EncoderSpec, default_cache_dir
from search.errors import REBUILD_HINT, BundleError, UnknownItemError
from search.types import FeatureVector

__all__ = ["EMBEDDINGS_FILE", "FAILURES_FILE", "FORMAT_VERSION", "INDEX_FILE", "MANIFEST_FILE", "METADATA_FILE",
           "REBUILD_HINT", "Bundle", "BundleFolder", "BundleInfo", "ItemCatalog", "Manifest",
           "read_manifest", "sha256_of", "verify_files", "write_bundle"]

logger = logging.getLogger(__name__)

DATA_FILES = frozenset({INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE, FAILURES_FILE, *KEYWORD_FILES})
"""The files a bundle's data lives in; any other listed file is a picture the UI may serve."""
PICTURE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".gif": "image/gif"}
"""The only files a bundle may hold besides its data, by name ending, and the type each is served as: formats every
browser shows as a picture and none runs script in (SVG, HTML and XML can; the builder writes .jpg thumbnails)."""


MODEL_SUFFIXES = frozenset({".json", ".safetensors"})  # open_clip_config.json and its weights: never pickles


SHIPPED_MODELS = REPO_ROOT / "assets"
"""This repository's own models (the demo's): trusted as code is, whichever bundle names them."""


def is_model_file(name: str) -> bool:
    """Whether a listed file is part of the bundle's own model: checksummed like the data, never served."""
    folder, _, base = name.rpartition("/")
    return folder == MODEL_FOLDER and os.path.splitext(base)[1].lower() in MODEL_SUFFIXES


def picture_type(name: str) -> str | None:
    """The MIME type a bundle file named `name` is served as, or None: not a picture, never served."""
    return PICTURE_TYPES.get(os.path.splitext(name)[1].lower())


@dataclass(frozen=True, slots=True)
class Bundle:
    """A loaded, verified index bundle."""

    root: Path
    manifest: Manifest
    embeddings: FeatureVector
    index: SearchIndex  # hnswlib here; a Qdrant collection from search.query.qdrant_index.load_qdrant_bundle
    catalog: ItemCatalog
    folder: BundleFolder
    keywords: KeywordIndex | None = None  # the BM25 index over the items' text; None in bundles without one

    @property
    def encoder_spec(self) -> EncoderSpec:
        """The encoder this bundle was built with (a relative `local-dir:` resolved against the bundle); BundleError
        when that relative folder is not there (a bundle moved away from a model it does not carry)."""
        recorded = self.manifest.info.encoder
        spec = recorded.resolved(self.root)
        relative = recorded.local_dir is not None and not recorded.local_dir.is_absolute()
        if relative and spec.local_dir is not None and not spec.local_dir.is_dir():
            raise BundleError(f"index {self.label} names its model by a local-dir: folder that is not there from "
                              "where the index now is; put that model folder there, or rebuild the index with "
                              "build_index.py, which copies a local-dir: model into the index so it moves along")
        return spec

    @property
    def served_folders(self) -> tuple[Path, ...]:
        """The folders the UI may serve files from: those holding the bundle's listed pictures (not the whole
        bundle: nothing else in it is for visitors), and for a Hub snapshot its repo's `blobs/` (the pictures
        are symlinks into it)."""
        pictures = {name for name in self.manifest.files.keys() - DATA_FILES if not is_model_file(name)}
        folders = {os.path.realpath((self.root / name).parent) for name in pictures}
        return tuple(Path(folder) for folder in sorted(folders) + list(self.folder.inside[1:]))

    @property
    def label(self) -> str:
        """The bundle's name for messages shown to people: its folder, or owner/name@revision (no cache path)."""
        return self.folder.label

    @classmethod
    def load(cls, root: Path, cache_dir: Path | None = None) -> Bundle:
        """Load and verify a bundle directory; raises BundleError saying what is wrong and what to do.

        `cache_dir` holds the verification record that spares re-hashing unchanged files (default:
        SEARCH_CACHE_DIR, as for the ONNX export)."""
        contents = BundleContents.load(root, graph=True, cache_dir=cache_dir)
        manifest, embeddings = contents.manifest, contents.embeddings
        # index.py checks the graph's structure, count, dim and a sample of its vectors before hnswlib walks it.
        index = VectorIndex.load(contents.files[INDEX_FILE], manifest.dim, manifest.info.hnsw, count=manifest.count,
                                 vectors=embeddings)
        if len(index) != manifest.count:
            raise BundleError(f"the bundle is inconsistent: manifest count {manifest.count}, index {len(index)}; "
                              f"{REBUILD_HINT}")
        release_pages(embeddings)
        logger.info("loaded bundle %s: %d items, encoder %s", contents.folder.root, manifest.count,
                    manifest.info.encoder)
        keywords = read_keywords(contents.files, manifest.count)  # optional: older bundles have none
        return cls(contents.folder.root, manifest, embeddings, index, contents.catalog, contents.folder, keywords)


@dataclass(frozen=True, slots=True)
class BundleContents:
    """A verified bundle without its hnswlib graph: what `--rebuild-index` needs, even when the graph is broken."""

    folder: BundleFolder
    manifest: Manifest
    files: dict[str, Path]
    embeddings: FeatureVector
    catalog: ItemCatalog

    @classmethod
    def load(cls, root: Path, *, graph: bool = False, cache_dir: Path | None = None) -> BundleContents:
        """Verify every listed file (`index.hnsw` only when `graph`) and read the embeddings and metadata."""
        folder = BundleFolder.at(root)
        manifest = read_manifest(folder.root)
        files = verify_files(folder.root, manifest, skip=frozenset() if graph else frozenset({INDEX_FILE}),
                             cache_dir=cache_dir)
        embeddings = read_embeddings(files[EMBEDDINGS_FILE], manifest)
        catalog = load_catalog(files[METADATA_FILE], manifest.count, files, local_dates=manifest.info.local_dates)
        if len(catalog) != manifest.count:
            raise BundleError(f"the bundle is inconsistent: manifest count {manifest.count}, metadata "
                              f"{len(catalog)} rows; {REBUILD_HINT}")
        _check_sample(manifest.ui, catalog)
        _check_model_folder(folder, manifest)
        return cls(folder, manifest, files, embeddings, catalog)


def _check_model_folder(folder: BundleFolder, manifest: Manifest) -> None:
    """A model inside the bundle is its `model/` folder, every file listed (so checksummed); a Hub snapshot names
    no folder outside itself but this repository's own models: someone else's data must not pick a model folder
    on this machine."""
    local_dir = manifest.info.encoder.resolved(folder.root).local_dir
    if local_dir is None:
        return
    real = os.path.realpath(local_dir)
    if folder.contains_real(real):
        if real != os.path.join(folder.inside[0], MODEL_FOLDER):
            raise BundleError(f"index {folder.label} names a model folder inside itself other than "
                              f"{MODEL_FOLDER}/; {REBUILD_HINT}")
        present = Path(real).iterdir() if os.path.isdir(real) else ()  # a missing folder: encoder_spec says so
        unlisted = sorted(path.name for path in present if f"{MODEL_FOLDER}/{path.name}" not in manifest.files)
        if unlisted:
            raise BundleError(f"index {folder.label} holds model files its manifest does not list "
                              f"({shown_name(unlisted[0])}); {REBUILD_HINT}")
    elif folder.inside[1:] and not BundleFolder.at(SHIPPED_MODELS).contains_real(real):  # a Hub snapshot
        raise BundleError(f"Hub index {folder.label} names a model folder outside itself; a Hub index carries its "
                          f"model in {MODEL_FOLDER}/ or names a Hub model (hf-hub:ID); {REBUILD_HINT}")


def _check_sample(ui: UiHints | None, catalog: ItemCatalog) -> None:
    """Refuse a `ui.sample` naming an id the bundle lacks: the page would open on a picture that is not there."""
    for item_id in ui.sample if ui is not None else ():
        try:
            catalog.row_of(item_id)
        except UnknownItemError:
            raise BundleError(f"{MANIFEST_FILE} ui.sample names an item that is not in the bundle; "
                              f"{REBUILD_HINT}") from None


def read_manifest(root: Path) -> Manifest:
    """Parse `root/manifest.json`, refusing one that lies outside the bundle or is too large to be a manifest."""
    folder = BundleFolder.at(root)
    if not folder.root.is_dir():
        raise BundleError(f"index bundle folder {folder.label} does not exist; build one with build_index.py "
                          "or pass --index with an existing bundle")
    path = folder.root / MANIFEST_FILE
    if not path.is_file() and not path.is_symlink():
        raise BundleError(f"{folder.label} has no {MANIFEST_FILE}, so it is not an index bundle; {REBUILD_HINT}")
    path = folder.file(MANIFEST_FILE)
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"cannot read {MANIFEST_FILE} ({exc.strerror}); {REBUILD_HINT}") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST_FILE} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, too large to be a "
                          f"manifest; {REBUILD_HINT}")
    return parse_manifest(text)


def verify_files(root: Path, manifest: Manifest, skip: frozenset[str] = frozenset(),
                 cache_dir: Path | None = None) -> dict[str, Path]:
    """Check every file the manifest lists (but `skip`): inside the bundle, present, with the recorded sha256.

    A file is re-hashed only when it is not the very version already hashed, per the verification record in
    `cache_dir` (default: SEARCH_CACHE_DIR); see search/bundle/verified.py for why that is as strict as hashing.
    """
    required = {INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE} - skip
    unlisted = required - manifest.files.keys()
    if unlisted:
        raise BundleError(f"{MANIFEST_FILE} lists no checksum for {', '.join(sorted(unlisted))}; {REBUILD_HINT}")
    folder = BundleFolder.at(root)
    paths = folder.files(sorted(manifest.files.keys() - skip))  # every name placed before any file is read
    not_pictures = sorted(name for name in manifest.files.keys() - DATA_FILES
                          if picture_type(name) is None and not is_model_file(name))
    if not_pictures:
        raise BundleError(f"bundle file {shown_name(not_pictures[0])} is neither a data file nor a JPEG, PNG, WebP "
                          f"or GIF picture (by its name), so it is never served; {REBUILD_HINT}")
    record = VerificationRecord.open(cache_dir or default_cache_dir(), folder.inside[0])
    try:
        digests = record.digests(paths)
    except UnreadableFileError as exc:
        raise BundleError(f"cannot read bundle file {shown_name(exc.name)} ({exc.reason}); {REBUILD_HINT}") \
            from None
    for name in paths:
        if digests[name] != manifest.files[name]:
            raise BundleError(f"bundle file {shown_name(name)} is corrupt (sha256 differs from {MANIFEST_FILE}); "
                              f"{REBUILD_HINT}")
    if record.hashed:
        _save_record(record, set(manifest.files))
    return paths


def _save_record(record: VerificationRecord, names: set[str]) -> None:
    """Write the verification record; a cache folder that cannot be written only costs hashing next time."""
    try:
        record.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(record.path, lambda tmp: tmp.write_text(record.text(names), encoding="utf-8"))
    except (OSError, BundleError) as exc:
        logger.warning("cannot write the verification record %s (%s); files will be hashed again next start",
                       record.path, exc)


HintsOf = Callable[[VectorIndex], UiHints | None]
"""What the app should suggest for a bundle, measured on its graph once that is built (search/build)."""


def write_bundle(root: Path, embeddings: FeatureVector, metadata: pa.Table, info: BundleInfo,
                 hints: HintsOf | None = None) -> Manifest:
    """Write a complete bundle into `root`: data files first, the manifest last, once, as the commit point.

    Files already in `root` (such as thumbnails under `images/`) become part of the bundle and are
    checksummed too. A `local-dir:` encoder path is recorded relative to the bundle. `hints` gives the manifest's
    `ui` block from the new graph (none: the manifest has no `ui` block).
    """
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or len(embeddings) != metadata.num_rows:
        raise ValueError(f"need float32 (n, dim) embeddings for {metadata.num_rows} rows, got "
                         f"{embeddings.dtype} {embeddings.shape}")
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_FILE).unlink(missing_ok=True)  # a half-written bundle must not look complete
    atomic_write(root / EMBEDDINGS_FILE, lambda tmp: np.save(tmp, embeddings, allow_pickle=False))
    atomic_write(root / METADATA_FILE, lambda tmp: pq.write_table(metadata, tmp))
    _write_keywords(root, KeywordIndex.build(metadata))
    index = VectorIndex.build(embeddings, info.hnsw)
    atomic_write(root / INDEX_FILE, index.save)
    portable = BundleInfo(info.encoder.relative_to(root), info.hnsw, info.source, info.source_revision,
                          info.failures)
    files = {path.relative_to(root).as_posix(): sha256_of(path) for path in _bundle_files(root)}
    manifest = Manifest(portable, int(embeddings.shape[1]), len(embeddings),
                        datetime.now(UTC).isoformat(timespec="seconds"), files,
                        ui=hints(index) if hints is not None else None)
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    atomic_write(root / MANIFEST_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return manifest


def _write_keywords(root: Path, keywords: KeywordIndex | None) -> None:
    """The keyword index's files, or none (a stale set from an earlier build removed) when there is no text."""
    if keywords is None:
        for name in KEYWORD_FILES:
            (root / name).unlink(missing_ok=True)
        return
    for name, write in keywords.writers().items():
        atomic_write(root / name, write)


def _bundle_files(root: Path) -> list[Path]:
    # Hidden names are temporary files and tool caches (e.g. huggingface_hub's .cache), not data.
    return [path for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != MANIFEST_FILE
            and not any(part.startswith(".") for part in path.relative_to(root).parts)]
