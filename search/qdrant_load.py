"""Load a bundle into a Qdrant collection: `python -m search.qdrant_load BUNDLE --qdrant URL --collection NAME`.

Point id = the bundle's row number, vector = its embedding, payload = its id, image, page_url, description and
photographer, and the filter fields (see qdrant_payload.py).
The collection records the sha256 of the bundle's embeddings in its metadata, written at creation: the app
refuses a collection loaded from another bundle, and one whose load was interrupted has too few points.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

from qdrant_client import QdrantClient, models

from search.bundle import BundleContents
from search.errors import SearchError
from search.hub import fetch_bundle
from search.manifest import EMBEDDINGS_FILE, METADATA_FILE
from search.metadata import METADATA_COLUMNS, read_metadata
from search.qdrant_index import (
    FINGERPRINT_KEY,
    FORMAT_KEY,
    MEMORY,
    QdrantIndexError,
    call_qdrant,
    connect,
    is_embedded,
)
from search.qdrant_payload import PAYLOAD_FORMAT, filter_columns, indexed_fields, payload_rows

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How the collection is made."""

    int8: bool = False  # int8 scalar quantisation in RAM, full vectors on disk for rescoring (4x less RAM)
    recreate: bool = False  # replace an existing collection of that name
    batch_size: int = 256  # points per upload request


def load_collection(client: QdrantClient, collection: str, contents: BundleContents,
                    options: LoadOptions | None = None) -> int:
    """Create `collection` from a verified bundle and upload every item; returns the number of points."""
    options = options or LoadOptions()
    manifest = contents.manifest
    exists = call_qdrant(collection, lambda: client.collection_exists(collection))
    if exists and not options.recreate:
        raise QdrantIndexError(f"Qdrant collection {collection} exists already; pass --recreate to replace it")
    if exists:
        call_qdrant(collection, lambda: client.delete_collection(collection))
    quantization = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=0.99, always_ram=True)) if options.int8 else None
    call_qdrant(collection, lambda: client.create_collection(
        collection,
        vectors_config=models.VectorParams(size=manifest.dim, distance=models.Distance.COSINE,
                                           on_disk=True if options.int8 else None),
        hnsw_config=models.HnswConfigDiff(m=manifest.info.hnsw.m, ef_construct=manifest.info.hnsw.ef_construction),
        quantization_config=quantization,
        metadata={FINGERPRINT_KEY: manifest.files[EMBEDDINGS_FILE], "count": manifest.count,
                  "encoder": str(manifest.info.encoder), FORMAT_KEY: PAYLOAD_FORMAT}))
    metadata = read_metadata(contents.files[METADATA_FILE], manifest.count, columns=METADATA_COLUMNS)
    for key, column in filter_columns(contents.catalog.attributes).items():
        metadata = metadata.append_column(key, column)
    for key, schema in ({} if is_embedded(client) else indexed_fields(metadata)).items():  # a server's only
        call_qdrant(collection, lambda key=key, schema=schema: client.create_payload_index(collection, key, schema))
    call_qdrant(collection, lambda: client.upload_collection(
        collection, vectors=contents.embeddings, payload=payload_rows(metadata), ids=range(manifest.count),
        batch_size=options.batch_size, wait=True))
    logger.info("loaded %d points into Qdrant collection %s", manifest.count, collection)
    return manifest.count


def build_parser() -> argparse.ArgumentParser:
    """The loader's arguments."""
    parser = argparse.ArgumentParser(prog="python -m search.qdrant_load", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder or Hub repo owner/name[@rev]")
    parser.add_argument("--qdrant", required=True, metavar="URL",
                        help="server URL (http://host:6333; key in $QDRANT_API_KEY)")
    parser.add_argument("--collection", required=True, metavar="NAME", help="collection to create")
    parser.add_argument("--int8", action="store_true", help="int8 scalar quantisation with rescoring")
    parser.add_argument("--recreate", action="store_true", help="replace the collection if it exists")
    parser.add_argument("--batch-size", type=int, default=256, help="points per upload request (default 256)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Load the bundle; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        contents = BundleContents.load(fetch_bundle(args.bundle))
        client = call_qdrant(args.collection, lambda: connect(args.qdrant, os.environ.get("QDRANT_API_KEY") or None))
        try:
            if is_embedded(client):
                raise QdrantIndexError(f"--qdrant {MEMORY} keeps nothing once this command ends; give a Qdrant server "
                                       f"URL (the app and `python -m search` load a bundle into {MEMORY} themselves)")
            count = load_collection(client, args.collection, contents,
                                    LoadOptions(args.int8, args.recreate, max(1, args.batch_size)))
        finally:
            client.close()
    except SearchError as exc:  # a bad bundle, an unreachable Hub or server, an existing collection
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {count} items into collection {args.collection}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
