"""Qdrant as the engine's vector index: a collection loaded from a bundle, queried like `VectorIndex`.

The collection lives in a service the operator points at, so it is untrusted like a bundle and checked in one
place, here: on open, its vector size and distance, its point count, the fingerprint of the bundle it was loaded
from, its payload format and a sample of its stored vectors and ids must match the bundle; in every answer the ids
must be rows of the bundle (point id = row number), at most k and distinct, and the scores finite cosines. Scores
then go through `index.to_scores`, so a hit's score is the same 6-decimal number whichever index served it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from search.bundle.attributes import Attributes
from search.bundle.hnsw_index import Allowed, Labels, Scores, to_scores
from search.bundle.keywords import read_keywords
from search.bundle.manifest import EMBEDDINGS_FILE, METADATA_FILE
from search.bundle.metadata import METADATA_COLUMNS, read_metadata
from search.bundle.store import Bundle, BundleContents
from search.config import EngineConfig
from search.errors import SearchError, one_line
from search.query.qdrant_payload import PAYLOAD_FORMAT, filter_columns, indexed_fields, payload_filter, payload_rows
from search.types import FeatureVector

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
"""--qdrant for qdrant-client's embedded mode, in memory: the app loads the bundle into it on start."""
LOCAL_PREFIX = "local:"
"""--qdrant for embedded mode's folder storage, which is refused (see `connect`)."""
FINGERPRINT_KEY = "bundle_embeddings_sha256"
"""Collection metadata key holding the sha256 of the bundle's embeddings.npy the collection was loaded from."""
FORMAT_KEY = "payload_format"
"""Collection metadata key holding the qdrant_payload.PAYLOAD_FORMAT its points were written in."""
POINT_SAMPLE = 64
"""Points whose stored vector and payload id are compared with the bundle's on open."""
VECTOR_TOLERANCE = 1e-4
"""Max abs difference of a stored vector from the bundle's row (Qdrant re-normalises float32 unit vectors)."""
SCORE_SLACK = 1e-4
"""How far past [-1, 1] a cosine of unit float32 vectors may land by rounding (1.0000001 happens)."""
RELOAD_HINT = "load it with `python -m search.build.qdrant_load BUNDLE --qdrant URL --collection NAME --recreate`"
REQUEST_TIMEOUT_S = 10


class QdrantIndexError(SearchError):
    """A Qdrant server or collection that cannot serve this bundle (unreachable, other data, or a bad answer)."""


@dataclass(frozen=True, slots=True)
class QdrantSearch:
    """Query-time settings: HNSW beam width and, for an int8 collection, re-scoring with the full vectors."""

    hnsw_ef: int = 128  # HnswParams' default ef_search; `QdrantIndex.open` takes the bundle's
    rescore: bool = True  # int8 scores alone cost recall (bench/qdrant.py); rescoring restores it
    oversampling: float = 2.0  # int8 candidates fetched per wanted hit before rescoring

    def params(self) -> models.SearchParams:
        """As Qdrant's search parameters (the quantisation part is ignored by a float32 collection)."""
        return models.SearchParams(hnsw_ef=self.hnsw_ef, quantization=models.QuantizationSearchParams(
            rescore=self.rescore, oversampling=self.oversampling))


def is_embedded(client: QdrantClient) -> bool:
    """Whether `client` runs qdrant-client's embedded mode (exact search; HNSW and quantisation settings unused)."""
    return client.init_options.get("location") == MEMORY


def connect(url: str, api_key: str | None = None) -> QdrantClient:
    """A client for a server (`http(s)://host:port`) or qdrant-client's embedded mode in memory (`:memory:`).

    Embedded mode is a brute-force scan in Python, for tests and small collections; a server runs HNSW. Its folder
    form (`local:DIR`) is refused, unopened: qdrant-client keeps each point there as a pickle and unpickles them all
    as soon as a client opens the folder, so a crafted folder runs code (and opening one writes into it). An
    allow-listing unpickler would mean replacing `pickle` inside qdrant-client's private persistence module, which a
    client update could bypass without notice; `:memory:` is filled from the bundle's own checked vectors instead,
    the same data embedded mode would have read back. Embedded mode loads everything on every start either way:
    5000 512-d points took 0.85 s filled from vectors, 0.36 s read back from a folder (one run, 2-core EPYC).
    """
    if url == MEMORY:
        return QdrantClient(location=MEMORY)
    if url.startswith(LOCAL_PREFIX):
        raise QdrantIndexError(f"--qdrant {url[:200]!r} is refused: qdrant-client's local storage keeps points as "
                               f"pickles, which can run code when read; use --qdrant {MEMORY} (embedded mode, "
                               "loaded from the bundle) or a Qdrant server URL")
    if not url.startswith(("http://", "https://")):
        raise QdrantIndexError(f"--qdrant {url[:200]!r} is not a server URL (http(s)://host:6333) or {MEMORY}")
    # No version probe at construction: the collection checks in `QdrantIndex.open` are the first request.
    return QdrantClient(url=url, api_key=api_key, timeout=REQUEST_TIMEOUT_S, check_compatibility=False)


class QdrantIndex:
    """A Qdrant collection whose point ids are a bundle's row numbers; a `SearchIndex` that filters on its own."""

    native_filters = True  # filterable HNSW over payload indexes: the point of serving from Qdrant

    def __init__(self, client: QdrantClient, collection: str, count: int, dim: int,
                 search: QdrantSearch | None = None, *, attributes: Attributes | None = None) -> None:
        self._client = client
        self._collection = collection
        self._count = count
        self._dim = dim
        search = search or QdrantSearch()
        self._ef_search = search.hnsw_ef
        self._attributes = attributes  # the bundle's filter columns: text filters resolve against them
        # Embedded mode scans exactly and warns on every query given search parameters; it gets none.
        self._params = None if is_embedded(client) else search.params()

    @classmethod
    def open(cls, client: QdrantClient, collection: str, contents: BundleContents,
             search: QdrantSearch | None = None) -> QdrantIndex:
        """The collection after checking it holds this bundle's vectors, else QdrantIndexError saying what to do."""
        manifest = contents.manifest
        info = call_qdrant(collection, lambda: _collection_info(client, collection))
        _check_config(collection, info, manifest.dim, manifest.files[EMBEDDINGS_FILE])
        points = call_qdrant(collection, lambda: client.count(collection, exact=True).count)
        if points != manifest.count:
            raise QdrantIndexError(f"Qdrant collection {collection} holds {points} points, the bundle {manifest.count}"
                                   f" (an interrupted load?); {RELOAD_HINT}")
        # The bundle's ef_search, so the collection is searched at the recall point the bundle was tuned for.
        search = search or QdrantSearch(hnsw_ef=manifest.info.hnsw.ef_search)
        index = cls(client, collection, manifest.count, manifest.dim, search,
                    attributes=contents.catalog.attributes)
        index.check_sample(contents)
        logger.info("serving %d vectors from Qdrant collection %s", manifest.count, collection)
        return index

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def ef_search(self) -> int:
        """HNSW beam width a server searches with."""
        return self._ef_search

    @property
    def collection(self) -> str:
        """The collection's name."""
        return self._collection

    def __len__(self) -> int:
        return self._count

    def query(self, vector: FeatureVector, k: int, allowed: Allowed | None = None) -> tuple[Labels, Scores]:
        """The k nearest rows (of `allowed`, by Qdrant's payload filter) with their cosines, best first."""
        k = min(k, self._count if allowed is None else len(allowed.rows))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        where = None
        if allowed is not None:
            if self._attributes is None:
                raise QdrantIndexError("this QdrantIndex was made without the bundle's attributes; open it with "
                                       "QdrantIndex.open to filter")
            where = payload_filter(allowed.filters, self._attributes)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        response = call_qdrant(self._collection, lambda: self._client.query_points(
            self._collection, query=query, limit=k, query_filter=where,
            search_params=self._params, with_payload=False, with_vectors=False))
        return checked_answer(response.points, k, self._count, self._collection)

    def check_sample(self, contents: BundleContents) -> None:
        """Compare about POINT_SAMPLE evenly spaced points' vectors and payload ids with the bundle's rows."""
        rows = np.unique(np.linspace(0, self._count - 1, min(POINT_SAMPLE, self._count)).astype(np.int64)).tolist()
        records = call_qdrant(self._collection, lambda: self._client.retrieve(
            self._collection, ids=rows, with_payload=["id"], with_vectors=True))
        found = {record.id: record for record in records if isinstance(record.id, int)}
        for row in rows:
            record = found.get(row)
            stored = np.asarray(record.vector if record is not None else [], dtype=np.float64)
            expected_id = contents.catalog.hit(row, 0.0).id
            if record is None or stored.shape != (self._dim,) \
                    or not np.max(np.abs(stored - contents.embeddings[row])) <= VECTOR_TOLERANCE \
                    or str((record.payload or {}).get("id")) != expected_id:
                raise QdrantIndexError(f"Qdrant collection {self._collection} point {row} differs from the bundle's "
                                       f"row {row}; {RELOAD_HINT}")


def checked_answer(points: Sequence[Any], k: int, count: int, collection: str) -> tuple[Labels, Scores]:
    """Labels and rounded scores of a Qdrant answer, best first, after checking it could come from this bundle."""
    if len(points) > k:
        raise QdrantIndexError(f"Qdrant collection {collection} answered {len(points)} points for k={k}")
    labels, raw = [], []
    for point in points:
        row, score = point.id, point.score
        if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < count:
            raise QdrantIndexError(f"Qdrant collection {collection} answered point id {str(row)[:40]!r}, not a row "
                                   f"of this bundle (0..{count - 1}); {RELOAD_HINT}")
        if isinstance(score, bool) or not isinstance(score, int | float) or not abs(score) <= 1.0 + SCORE_SLACK:
            raise QdrantIndexError(f"Qdrant collection {collection} answered score {str(score)[:40]} for point "
                                   f"{row}, not a cosine similarity; is it a Cosine collection?")
        labels.append(row)
        raw.append(float(score))
    if len(set(labels)) != len(labels):
        raise QdrantIndexError(f"Qdrant collection {collection} answered the same point twice")
    # to_scores takes distances; 1 - (1 - s) is s to within 1e-16, far below the 6th decimal it rounds to.
    scores = to_scores(1.0 - np.asarray(raw, dtype=np.float64))
    order = np.argsort(-scores, kind="stable")
    return np.asarray(labels, dtype=np.int64)[order], scores[order]


def load_qdrant_bundle(root: Path, config: EngineConfig) -> Bundle:
    """The bundle at `root` with its index served by the configured Qdrant collection (its graph is not read)."""
    if not config.qdrant_url or not config.qdrant_collection:
        raise QdrantIndexError("serving from Qdrant needs both a URL (--qdrant) and a collection (--collection)")
    contents = BundleContents.load(root)
    url, api_key = config.qdrant_url, config.qdrant_api_key
    client = call_qdrant(config.qdrant_collection, lambda: connect(url, api_key))
    try:
        if is_embedded(client):  # empty: filled from the bundle's checked vectors, then opened like any collection
            load_collection(client, config.qdrant_collection, contents)
        index = QdrantIndex.open(client, config.qdrant_collection, contents)
    except QdrantIndexError:
        client.close()
        raise
    keywords = read_keywords(contents.files, contents.manifest.count)  # fusion works as over hnswlib
    return Bundle(contents.folder.root, contents.manifest, contents.embeddings, index, contents.catalog,
                  contents.folder, keywords)


def _collection_info(client: QdrantClient, collection: str) -> models.CollectionInfo:
    if not client.collection_exists(collection):
        raise QdrantIndexError(f"there is no Qdrant collection {collection}; {RELOAD_HINT}")
    return client.get_collection(collection)


def _check_config(collection: str, info: models.CollectionInfo, dim: int, fingerprint: str) -> None:
    vectors = info.config.params.vectors
    if not isinstance(vectors, models.VectorParams) or vectors.size != dim \
            or vectors.distance != models.Distance.COSINE:
        raise QdrantIndexError(f"Qdrant collection {collection} does not hold one {dim}-d Cosine vector per point; "
                               f"{RELOAD_HINT}")
    metadata = info.config.metadata or {}
    if metadata.get(FINGERPRINT_KEY) != fingerprint:
        raise QdrantIndexError(f"Qdrant collection {collection} was loaded from another bundle (or another "
                               f"version of it); {RELOAD_HINT}")
    if metadata.get(FORMAT_KEY) != PAYLOAD_FORMAT:  # older points lack the filter fields: filters would miss
        raise QdrantIndexError(f"Qdrant collection {collection} was loaded by an older version, without the "
                               f"filter fields; {RELOAD_HINT}")


def call_qdrant(collection: str, request: Any) -> Any:
    """Run one client request, turning the client's transport and API errors into one QdrantIndexError line."""
    try:
        return request()
    except QdrantIndexError:
        raise
    except (ApiException, OSError, RuntimeError, ValueError) as exc:
        raise QdrantIndexError(f"Qdrant request for collection {collection} failed ({one_line(exc, 200)}); check "
                               "the --qdrant URL and that the server is up") from None


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
