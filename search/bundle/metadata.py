"""A bundle's `metadata.parquet` as untrusted input: item rows whose images and links are checked once, on load.

The rule, enforced by `ItemCatalog` and nowhere else: an `image` is an http(s) URL or the name of a file the
manifest lists (and `verify_files` has placed inside the bundle, symlinks followed, and checksummed); a
`page_url` is an http(s) URL or null. A bundle breaking either is refused whole rather than served with the bad
rows dropped: such a row is crafted or comes from a broken builder (build_index.py only writes http(s) pages and
bundle-relative pictures), and refusing makes the operator see it instead of serving a silently altered
collection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from search.bundle.attributes import ATTRIBUTE_KINDS, MAX_WORDS_CHARS, WORDS_IN_PICTURE, Attributes, MetadataError
from search.bundle.manifest import MANIFEST_FILE, METADATA_FILE
from search.bundle.string_index import StringIndex
from search.errors import REBUILD_HINT, BundleError, UnknownItemError
from search.types import Hit

METADATA_COLUMNS = ("id", "image", "page_url", "description", "photographer")
LOADED_COLUMNS = METADATA_COLUMNS + tuple(ATTRIBUTE_KINDS)
"""What a bundle load reads: the required columns and the optional ones present (other columns stay on disk)."""
MAX_TEXT = 2000
"""Characters in an id, description or photographer name: real captions take a few hundred; a page shows a few."""
MAX_URL = 2048
"""Characters in an image URL or file name and in a page URL: the de-facto URL limit (sitemaps, old browsers, CDNs)."""
MAX_URL_CELL = 4 * MAX_URL
"""Characters in an image or page_url cell before it is decoded; from MAX_URL up to here the URL rule refuses it
with its own message (an image file name is also bounded: the manifest lists only files that exist)."""
CELL_LIMITS = {"id": MAX_TEXT, "image": MAX_URL_CELL, "page_url": MAX_URL_CELL, "description": MAX_TEXT,
               "photographer": MAX_TEXT, WORDS_IN_PICTURE: MAX_WORDS_CHARS}
# http(s), a host part, then no whitespace or control characters; lowercase scheme as Gradio's own URL test wants.
WEB_URL = r"^https?://[^\x00-\x20\x7f/?#\\]+(?:[/?#][^\x00-\x20\x7f]*)?$"
IMAGE_RULE = f"image must be an http(s) URL or a bundle file listed in {MANIFEST_FILE}"
PAGE_RULE = "page_url must be an http(s) URL or empty"
BYTES_PER_ROW = 4 << 10
"""Declared (uncompressed) and decoded metadata per item allowed, plus METADATA_SLACK: the cell limits allow
~10 KB of ASCII in one row, real rows take a few hundred bytes, so rows averaging more are not item metadata."""
METADATA_SLACK = 16 << 20


def read_metadata(path: Path, count: int, columns: tuple[str, ...] | None = LOADED_COLUMNS) -> pa.Table:
    """The item columns of `metadata.parquet` (every column with `columns=None`: what a rebuild copies), refused
    before decoding when they would take more than a budget.

    The sizes a file declares are its author's figures, and dictionary encoding lets a few KB of file repeat one
    huge value in every row. So text columns are read dictionary-encoded (each distinct value once), their
    decoded size is computed from the value lengths the rows take, and only a table within the cell limits and
    `BYTES_PER_ROW * count + METADATA_SLACK` bytes is decoded.
    """
    budget = BYTES_PER_ROW * count + METADATA_SLACK
    try:
        with pq.ParquetFile(path) as parquet:
            meta = parquet.metadata
            if meta.num_rows != count:
                raise BundleError(f"the bundle is inconsistent: manifest count {count}, metadata {meta.num_rows} "
                                  f"rows; {REBUILD_HINT}")
            declared = sum(meta.row_group(group).total_byte_size for group in range(meta.num_row_groups))
            if declared > budget:
                raise BundleError(f"{METADATA_FILE} declares {declared >> 20} MiB of data for {count} items, far "
                                  f"more than item metadata takes; {REBUILD_HINT}")
            schema = parquet.schema_arrow
            present = [name for name in columns or schema.names if name in schema.names]
            _refuse_nested(schema, present)
            text = [name for name in present if _is_text(schema.field(name).type)]
        with pq.ParquetFile(path, metadata=meta, read_dictionary=text) as parquet:
            table = parquet.read(columns=present)
        check_text_sizes(table, budget)
        decoded = pa.table({name: _decoded(table.column(name)) for name in table.column_names})
        try:
            decoded.validate(full=True)  # parquet does not check that text is UTF-8; Python would fail on each read
        except pa.ArrowInvalid:
            raise BundleError(f"{METADATA_FILE} holds text that is not valid UTF-8; {REBUILD_HINT}") from None
        return decoded
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BundleError(f"{METADATA_FILE} cannot be read as parquet ({type(exc).__name__}); {REBUILD_HINT}") \
            from None


def load_catalog(path: Path, count: int, files: Mapping[str, Path], *, local_dates: bool = False) -> ItemCatalog:
    """The `ItemCatalog` of a bundle's `metadata.parquet` (see `read_metadata` and `ItemCatalog`)."""
    with arrow_memory_returned():
        return ItemCatalog(read_metadata(path, count), files, local_dates=local_dates)


@contextmanager
def arrow_memory_returned() -> Iterator[None]:
    """Hand the pages Arrow's allocator freed in the block back to the system, whether the block succeeds or not.

    The allocator keeps freed pages for re-use, but a bundle load's transient buffers (the decoded table and its
    dictionary pages: ~300 MB at 1M items, bench/memory.py) are never needed again, and a refused bundle's may
    be far larger."""
    try:
        yield
    finally:
        pa.default_memory_pool().release_unused()


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _refuse_nested(schema: pa.Schema, names: list[str]) -> None:
    """Only flat columns are item metadata; a nested one could hide any amount of text from the size checks."""
    nested = next((name for name in names if pa.types.is_nested(schema.field(name).type)), None)
    if nested is not None:
        raise BundleError(f"{METADATA_FILE} column {nested[:60]!r} is nested; item metadata has flat columns "
                          f"only; {REBUILD_HINT}")


def check_text_sizes(table: pa.Table, budget: int | None = None) -> None:
    """BundleError for a cell over its CELL_LIMITS or text decoding to more than `budget` bytes (before decoding)."""
    total = 0
    for name in table.column_names:
        for chunk in table.column(name).chunks:
            values, rows = (chunk.dictionary, chunk.indices) if pa.types.is_dictionary(chunk.type) else (chunk, None)
            if not _is_text(values.type):
                continue  # other types are refused by ItemCatalog; they take a fixed size per row
            chars = pc.utf8_length(values) if rows is None else pc.take(pc.utf8_length(values), rows)
            _check_cells(name, chars, CELL_LIMITS.get(name, MAX_TEXT))
            lengths = pc.binary_length(values) if rows is None else pc.take(pc.binary_length(values), rows)
            total += pc.sum(lengths).as_py() or 0
    if budget is not None and total > budget:
        raise BundleError(f"{METADATA_FILE} holds {total >> 20} MiB of text for {len(table)} items, more than "
                          f"{budget >> 20} MiB; {REBUILD_HINT}")


def _check_cells(name: str, chars: pa.Array, limit: int) -> None:
    longest = pc.max(chars).as_py()
    if longest is not None and longest > limit:
        row = pc.index(chars, longest).as_py()
        raise MetadataError(f"{METADATA_FILE} column {name} row {row} holds {longest} characters, more than the "
                            f"{limit} allowed; {REBUILD_HINT}",
                            f"{name} holds {longest} characters, more than the {limit} allowed", row)


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column as plain values (sizes checked)."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


class ItemCatalog:
    """Per-item metadata by row number, with lookups by id; local images as paths of checked bundle files.

    Columnar: each column stays one Arrow array (or a numpy array in `attributes`) and a hit reads its row;
    no Python object per item, so 1M items take tens of MB, not gigabytes.
    """

    def __init__(self, table: pa.Table, files: Mapping[str, Path], *, local_dates: bool = False) -> None:
        """`local_dates`: the dates are a camera's wall-clock time (EXIF has no zone), so a hit's has no "Z"."""
        self._ids, self.attributes = check_rows(table, files)
        self.local_dates = local_dates
        self._files = {name: str(path) for name, path in files.items()}
        self._columns = {name: table.column(name).combine_chunks() for name in ("image", "page_url",
                                                                                "description", "photographer")}
        self._rows = StringIndex(self._ids)
        repeated = self._rows.repeated()
        if repeated is not None:
            raise BundleError(f"{METADATA_FILE} has duplicate ids (row {repeated}); {REBUILD_HINT}")

    def __len__(self) -> int:
        return len(self._ids)

    def row_of(self, item_id: str) -> int:
        """Row number of an id; raises UnknownItemError for ids not in the collection."""
        row = self._rows.find(item_id)
        if row is not None:
            return row
        raise UnknownItemError(f"no item with id {item_id!r} in this index; use an id from a search result")

    def item_id(self, row: int) -> str:
        """The id of a row."""
        return self._ids[row].as_py()

    def hit(self, row: int, score: float, duplicates: int = 0) -> Hit:
        """The hit for a row with the given similarity (already rounded by `index.to_scores`)."""
        image = self._columns["image"][row].as_py()
        details = hit_details(self.attributes.row(row))
        if self.local_dates and details["date"] is not None:
            details["date"] = details["date"].removesuffix("Z")
        # A listed name becomes the path of the checked file under the bundle folder as given (for a Hub
        # snapshot, the link in snapshots/, which keeps the file's extension for the browser).
        return Hit(self.item_id(row), float(score), self._files.get(image, image),
                   self._columns["page_url"][row].as_py(), self._columns["description"][row].as_py() or "",
                   self._columns["photographer"][row].as_py(), duplicates=duplicates, **details)


def check_rows(table: pa.Table, files: Collection[str]) -> tuple[pa.Array, Attributes]:
    """The ids (as text) and attributes of item rows that keep every item rule: columns, cell sizes, ids, image
    and page links, optional attributes; MetadataError for the first row that breaks one (`files`: the bundle
    files an image may name). A bundle load checks its rows with it, and a build its source rows."""
    _check_columns(table)
    check_text_sizes(table)
    ids = _ids(table.column("id"))
    _check_images(table.column("image"), files)
    _check_page_urls(table.column("page_url"))
    return ids, Attributes(table)


def row_problems(rows: Sequence[Mapping[str, Any]], files: Collection[str] = ()) -> list[str | None]:
    """Per row (an item's id and metadata), the rule of `check_rows` it breaks, or None: checked together, then
    again without each row found, so a clean batch costs one check."""
    problems: list[str | None] = [None] * len(rows)
    left = list(range(len(rows)))
    while left and (found := _first_problem([rows[number] for number in left], files)) is not None:
        row, rule = found
        if row is None and len(left) > 1:  # no row named (a rule of a whole column): the rows one by one
            for number in left:
                problems[number] = (_first_problem([rows[number]], files) or (None, None))[1]
            break
        problems[left.pop(row or 0)] = rule
    return problems


def _first_problem(rows: list[Mapping[str, Any]], files: Collection[str]) -> tuple[int | None, str] | None:
    try:
        check_rows(pa.Table.from_pylist(rows), files)
    except MetadataError as exc:
        return exc.row, exc.rule
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate, or one column's values of mixed types
        return None, "it holds a value that is not text or a number of its column's kind"
    return None


def _check_columns(table: pa.Table) -> None:
    missing = [name for name in METADATA_COLUMNS if name not in table.column_names]
    if missing:
        rule = f"lacks column(s) {', '.join(missing)}"
        raise MetadataError(f"{METADATA_FILE} {rule}; {REBUILD_HINT}", rule)
    for name in METADATA_COLUMNS:
        kind = table.schema.field(name).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if not (text or (name == "id" and pa.types.is_integer(kind))):
            rule = f"column {name} holds {kind}, not text"
            raise MetadataError(f"{METADATA_FILE} {rule}; {REBUILD_HINT}", rule)


def _first_false(mask: pa.ChunkedArray) -> int | None:
    failed = pc.index(pc.fill_null(mask, False), False).as_py()
    return None if failed < 0 else failed


def _ids(column: pa.ChunkedArray) -> pa.Array:
    row = _first_false(pc.is_valid(column))
    if row is not None:
        raise MetadataError(f"{METADATA_FILE} row {row} has no id; {REBUILD_HINT}", "it has no id", row)
    return column.cast(pa.string()).combine_chunks()  # integer ids become their decimal text, as before


def _is_web_url(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: an http(s) URL of sane length without whitespace or control characters (null stays null)."""
    text = column.cast(pa.large_string())
    return pc.and_(pc.match_substring_regex(text, WEB_URL), pc.less_equal(pc.utf8_length(text), MAX_URL))


def is_web_url(text: str) -> bool:
    """Whether one text keeps the bundle's rule for an image URL or page link (`_is_web_url`)."""
    return bool(_is_web_url(pa.chunked_array([[text]], pa.large_string()))[0].as_py())


def canonical_url(value: Any) -> str | None:
    """Text with an http(s) scheme in lowercase, as the URL rule wants (a scheme is case-insensitive: RFC 3986
    3.1, so `HTTP://x` is `http://x`); other text as it is; None for anything else."""
    if not isinstance(value, str):
        return None
    scheme, colon, rest = value.partition(":")
    return scheme.lower() + colon + rest if colon and scheme.lower() in ("http", "https") else value


def _check_images(column: pa.ChunkedArray, files: Collection[str]) -> None:
    listed = pc.is_in(column.cast(pa.large_string()), value_set=pa.array(list(files), pa.large_string()))
    row = _first_false(pc.or_kleene(_is_web_url(column), listed))
    if row is not None:
        raise MetadataError(f"{METADATA_FILE} row {row}: {IMAGE_RULE}; {REBUILD_HINT}", IMAGE_RULE, row)


def _check_page_urls(column: pa.ChunkedArray) -> None:
    row = _first_false(pc.or_kleene(pc.is_null(column), _is_web_url(column)))
    if row is not None:
        raise MetadataError(f"{METADATA_FILE} row {row}: {PAGE_RULE}; {REBUILD_HINT}", PAGE_RULE, row)


def hit_details(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Hit fields made from an item's attributes (`Attributes.row`)."""
    return {"width": values.get("width"), "height": values.get("height"), "date": values.get("date"),
            "featured": values.get("featured"), "photographer_username": values.get("photographer_username"),
            "location": values.get("location_name"), "city": values.get("city"), "country": values.get("country"),
            "latitude": values.get("latitude"), "longitude": values.get("longitude"),
            "camera": values.get("camera"), "views": values.get("views"), "downloads": values.get("downloads"),
            "colour": values.get("colour"), "colour_hex": values.get("colour_hex"),
            "blur_hash": values.get("blur_hash"), "words_in_picture": values.get(WORDS_IN_PICTURE)}
