"""Load a bundle into a Qdrant collection: `python -m search.build.qdrant_load BUNDLE --qdrant URL --collection NAME`.

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

from search.bundle.hub import fetch_bundle
from search.bundle.store import BundleContents
from search.errors import SearchError
from search.query.qdrant_index import (
    MEMORY,
    LoadOptions,
    QdrantIndexError,
    call_qdrant,
    connect,
    is_embedded,
    load_collection,
)

logger = logging.getLogger(__name__)

def build_parser() -> argparse.ArgumentParser:
    """The loader's arguments."""
    parser = argparse.ArgumentParser(prog="python -m search.build.qdrant_load", description=__doc__.splitlines()[0])
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
