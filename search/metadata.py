"""A bundle's `metadata.parquet` as untrusted input: item rows whose images and links are checked once, on load.

The rule, enforced by `ItemCatalog` and nowhere else: an `image` is an http(s) URL or the name of a file the
manifest lists (and `verify_files` has placed inside the bundle, symlinks followed, and checksummed); a
`page_url` is an http(s) URL or null. A bundle breaking either is refused whole rather than served with the bad
rows dropped: such a row is crafted or comes from a broken builder (build_index.py only writes http(s) pages and
bundle-relative pictures), and refusing makes the operator see it instead of serving a silently altered
collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from search.errors import BundleError, UnknownItemError
from search.manifest import MANIFEST_FILE, METADATA_FILE, REBUILD_HINT
from search.types import Hit

METADATA_COLUMNS = ("id", "image", "page_url", "description", "photographer")
MAX_URL = 4096
# http(s), a host part, then no whitespace or control characters; lowercase scheme as Gradio's own URL test wants.
WEB_URL = r"^https?://[^\x00-\x20\x7f/?#\\]+(?:[/?#][^\x00-\x20\x7f]*)?$"
BYTES_PER_ROW = 16 << 10  # declared (uncompressed) metadata per item; real rows take a few hundred bytes


def read_metadata(path: Path, count: int) -> pa.Table:
    """The item columns of `metadata.parquet`, refused before decoding when it declares a wrong row count or size."""
    try:
        with pq.ParquetFile(path) as parquet:
            meta = parquet.metadata
            if meta.num_rows != count:
                raise BundleError(f"the bundle is inconsistent: manifest count {count}, metadata {meta.num_rows} "
                                  f"rows; {REBUILD_HINT}")
            declared = sum(meta.row_group(group).total_byte_size for group in range(meta.num_row_groups))
            if declared > BYTES_PER_ROW * count + (16 << 20):
                raise BundleError(f"{METADATA_FILE} declares {declared >> 20} MiB of data for {count} items, far "
                                  f"more than item metadata takes; {REBUILD_HINT}")
            present = [name for name in METADATA_COLUMNS if name in parquet.schema_arrow.names]
            return parquet.read(columns=present)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BundleError(f"{METADATA_FILE} cannot be read as parquet ({type(exc).__name__}); {REBUILD_HINT}") \
            from None


class ItemCatalog:
    """Per-item metadata by row number, with lookups by id; local images as paths of checked bundle files."""

    def __init__(self, table: pa.Table, files: Mapping[str, Path]) -> None:
        _check_columns(table)
        self._ids: list[str] = _ids(table.column("id"))
        self._images: list[str] = _images(table.column("image"), files)
        self._page_urls: list[str | None] = _page_urls(table.column("page_url"))
        self._descriptions: list[str] = [text or "" for text in table.column("description").to_pylist()]
        self._photographers: list[str | None] = table.column("photographer").to_pylist()
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


def _check_columns(table: pa.Table) -> None:
    missing = [name for name in METADATA_COLUMNS if name not in table.column_names]
    if missing:
        raise BundleError(f"{METADATA_FILE} lacks column(s) {', '.join(missing)}; {REBUILD_HINT}")
    for name in METADATA_COLUMNS:
        kind = table.schema.field(name).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if not (text or (name == "id" and pa.types.is_integer(kind))):
            raise BundleError(f"{METADATA_FILE} column {name} holds {kind}, not text; {REBUILD_HINT}")


def _first_false(mask: pa.ChunkedArray) -> int | None:
    failed = pc.index(pc.fill_null(mask, False), False).as_py()
    return None if failed < 0 else failed


def _ids(column: pa.ChunkedArray) -> list[str]:
    row = _first_false(pc.is_valid(column))
    if row is not None:
        raise BundleError(f"{METADATA_FILE} row {row} has no id; {REBUILD_HINT}")
    return [str(item_id) for item_id in column.to_pylist()]


def _is_web_url(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: an http(s) URL of sane length without whitespace or control characters (null stays null)."""
    text = column.cast(pa.large_string())
    return pc.and_(pc.match_substring_regex(text, WEB_URL), pc.less_equal(pc.utf8_length(text), MAX_URL))


def _images(column: pa.ChunkedArray, files: Mapping[str, Path]) -> list[str]:
    listed = pc.is_in(column.cast(pa.large_string()), value_set=pa.array(list(files), pa.large_string()))
    row = _first_false(pc.or_kleene(_is_web_url(column), listed))
    if row is not None:
        raise BundleError(f"{METADATA_FILE} row {row}: image must be an http(s) URL or a bundle file listed in "
                          f"{MANIFEST_FILE}; {REBUILD_HINT}")
    # A listed name becomes the path of the checked file under the bundle folder as given (for a Hub snapshot,
    # the link in snapshots/, which keeps the file's extension for the browser; it resolves into blobs/).
    return [str(files[image]) if image in files else image for image in column.to_pylist()]


def _page_urls(column: pa.ChunkedArray) -> list[str | None]:
    row = _first_false(pc.or_kleene(pc.is_null(column), _is_web_url(column)))
    if row is not None:
        raise BundleError(f"{METADATA_FILE} row {row}: page_url must be an http(s) URL or empty; {REBUILD_HINT}")
    return column.to_pylist()
