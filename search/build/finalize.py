"""Finish a build: merge shards (and a --from bundle) into a verified bundle; rebuild an ANN index alone."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from search.build.bundled_model import bundled_encoder
from search.build.measured_hints import hints_for_metadata
from search.build.shards import FAILURE_COLUMNS, Collected
from search.build.thumbnails import copy_pictures, prune_thumbnails
from search.bundle.durable import atomic_write
from search.bundle.hub import fetch_bundle
from search.bundle.metadata import read_metadata
from search.bundle.store import (
    EMBEDDINGS_FILE,
    FAILURES_FILE,
    METADATA_FILE,
    Bundle,
    BundleContents,
    BundleInfo,
    Manifest,
    write_bundle,
)
from search.config import EncoderSpec, HnswParams
from search.errors import SearchError
from search.model.encoder import ClipEncoder
from search.types import FeatureVector

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "base.json"  # written last: the commit point of a --from snapshot
FAILURES_SCHEMA = pa.schema([(name, pa.string()) for name in FAILURE_COLUMNS])


class FinalizeError(SearchError):
    """A build that cannot be turned into a bundle (nothing embedded, or the result fails to load)."""


@dataclass(frozen=True, slots=True)
class BaseBundle:
    """A --from bundle: its items are kept as they are and skipped by the new build."""

    spec: EncoderSpec
    embeddings: FeatureVector
    metadata: pa.Table
    failures: pa.Table

    @property
    def dim(self) -> int:
        """Length of its vectors."""
        return int(self.embeddings.shape[1])

    @property
    def ids(self) -> set[str]:
        """Ids already in the bundle."""
        return set(self.metadata.column("id").to_pylist())


def load_base(source: str, snapshot: Path, out: Path) -> BaseBundle:
    """The --from bundle, copied under the build folder on first use so that a resume never needs it again.

    Its local pictures (thumbnails under `images/`) are copied into `out` at the same relative paths.
    """
    if not (snapshot / SNAPSHOT_FILE).is_file():
        _write_snapshot(Bundle.load(fetch_bundle(source)), snapshot, out)
    spec = json.loads((snapshot / SNAPSHOT_FILE).read_text(encoding="utf-8"))
    return BaseBundle(EncoderSpec(spec["model"], spec["pretrained"]),
                      np.load(snapshot / EMBEDDINGS_FILE, allow_pickle=False),
                      pq.read_table(snapshot / METADATA_FILE), pq.read_table(snapshot / FAILURES_FILE))


def _write_snapshot(bundle: Bundle, snapshot: Path, out: Path) -> None:
    snapshot.mkdir(parents=True, exist_ok=True)
    atomic_write(snapshot / EMBEDDINGS_FILE, lambda tmp: np.save(tmp, bundle.embeddings, allow_pickle=False))
    metadata = read_metadata(bundle.root / METADATA_FILE, bundle.manifest.count, columns=None)  # sized, as on load
    copy_pictures(metadata.column("image").to_pylist(), bundle.root, out)  # before the commit point below
    atomic_write(snapshot / METADATA_FILE, lambda tmp: pq.write_table(metadata, tmp))
    failures = read_failures(bundle.root)
    atomic_write(snapshot / FAILURES_FILE, lambda tmp: pq.write_table(failures, tmp))
    spec = bundle.encoder_spec
    text = json.dumps({"model": spec.model, "pretrained": spec.pretrained})
    atomic_write(snapshot / SNAPSHOT_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    logger.info("starting from bundle %s: %d items", bundle.root, bundle.manifest.count)


def read_failures(root: Path) -> pa.Table:
    """A bundle's failures file, or an empty table when it has none."""
    path = root / FAILURES_FILE
    return pq.read_table(path).select(list(FAILURE_COLUMNS)) if path.is_file() else FAILURES_SCHEMA.empty_table()


def finalize_bundle(out: Path, collected: Collected, info: BundleInfo, base: BaseBundle | None,
                    encoder: ClipEncoder) -> Manifest:
    """Write the bundle of all committed items (after the base's), its failures file and the example queries and
    thresholds `encoder` measures on it (the manifest written once, with them), then verify it loads, once."""
    embeddings, metadata, failures = collected.embeddings, collected.metadata, collected.failures
    if base is not None:
        embeddings = np.concatenate([base.embeddings, embeddings])
        metadata = pa.concat_tables([base.metadata, metadata], promote_options="default")
        failures = pa.concat_tables([base.failures, failures])
    if metadata.num_rows == 0:
        raise FinalizeError(nothing_embedded(failures))
    failures = _open_failures(failures, set(metadata.column("id").to_pylist()))
    out.mkdir(parents=True, exist_ok=True)
    pruned = prune_thumbnails(out, metadata.column("image").to_pylist())
    if pruned:
        logger.info("removed %d thumbnails of items that are not in the bundle", pruned)
    atomic_write(out / FAILURES_FILE, lambda tmp: pq.write_table(failures, tmp))
    embeddings = embeddings.astype(np.float32, copy=False)
    info = replace(info, encoder=bundled_encoder(info.encoder, out), failures=failures.num_rows)
    manifest = write_bundle(out, embeddings, metadata, info, hints_for_metadata(metadata, embeddings, encoder))
    _verify(out, manifest)
    logger.info("wrote bundle %s: %d items, %d failures", out, manifest.count, failures.num_rows)
    return manifest


def nothing_embedded(failures: pa.Table) -> str:
    """Why a build has no item: the one reason when every item failed for it, else the commonest."""
    reasons = Counter(failures.column("reason").to_pylist()) if failures.num_rows else Counter()
    if not reasons:
        return "no item could be embedded: the source gave none; check --images-dir or the data set"
    (reason, count), = reasons.most_common(1)
    if count == failures.num_rows:
        return f"no item could be embedded: all {count} failed with the same reason: {reason}"
    return (f"no item could be embedded ({failures.num_rows} failed; {count} of them: {reason}); see every reason "
            "with --verbose")


def _open_failures(failures: pa.Table, ok_ids: set[str]) -> pa.Table:
    """Failures of ids that never succeeded, one row per id (the latest reason)."""
    failures = failures.cast(FAILURES_SCHEMA)
    failures = failures.filter(pc.invert(pc.is_in(failures["id"], pa.array(list(ok_ids), pa.string()))))
    latest = {row["id"]: row for row in failures.to_pylist()}
    return pa.Table.from_pylist(list(latest.values()), schema=FAILURES_SCHEMA)


def _verify(out: Path, manifest: Manifest) -> None:
    bundle = Bundle.load(out)
    if len(bundle.catalog) != manifest.count:
        raise FinalizeError(f"bundle {out} loads with {len(bundle.catalog)} items, not {manifest.count}")


def rebuild_index(source: str, out: Path, hnsw: HnswParams) -> Manifest:
    """Rebuild the hnswlib graph of a bundle with new parameters from its stored embeddings (no re-embedding)."""
    bundle = BundleContents.load(fetch_bundle(source))  # not the graph: a broken index.hnsw is what this repairs
    root = bundle.folder.root
    in_place = out.resolve() == root.resolve()
    metadata = read_metadata(bundle.files[METADATA_FILE], bundle.manifest.count, columns=None)  # sized, as on load
    failures = read_failures(root)
    if not in_place:
        out.mkdir(parents=True, exist_ok=True)
        copy_pictures(metadata.column("image").to_pylist(), root, out)
        atomic_write(out / FAILURES_FILE, lambda tmp: pq.write_table(failures, tmp))
    old = bundle.manifest.info
    info = BundleInfo(bundled_encoder(old.encoder.resolved(root), out), hnsw, old.source, old.source_revision,
                      old.failures)
    ui = bundle.manifest.ui  # the same items: the same examples and thresholds
    manifest = write_bundle(out, bundle.embeddings, metadata, info, lambda index: ui)
    _verify(out, manifest)
    logger.info("rebuilt the index of %s with %s into %s", source, hnsw, out)
    return manifest
