"""Optional per-item metadata columns (size, date, place, camera, popularity, colour) as typed numpy columns.

A bundle's `metadata.parquet` may carry any of ATTRIBUTE_KINDS besides the required columns; older bundles carry
none and load as before. The values are untrusted: each known column must have its type, integers are
non-negative, dates are strict `YYYY-MM-DDTHH:MM:SS`, latitude/longitude in range, hex colours `#rrggbb` and
colour names from the palette; anything else refuses the bundle (as the required columns do). Loaded, the
columns are kept as arrays (float64 with NaN for a missing number, int32 dictionary codes for repeated text),
never as Python objects per item: that is what filters scan and what holds 1M items in a few tens of MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from search.bundle.colour import PALETTE
from search.bundle.manifest import METADATA_FILE
from search.errors import REBUILD_HINT, BundleError

INT, FLOAT, BOOL, TEXT, DATE, HEX, COLOUR = "int", "float", "bool", "text", "date", "hex", "colour"
ATTRIBUTE_KINDS: dict[str, str] = {
    "width": INT, "height": INT, "date": DATE, "featured": BOOL, "photographer_username": TEXT,
    "location_name": TEXT, "city": TEXT, "country": TEXT, "latitude": FLOAT, "longitude": FLOAT,
    "camera_make": TEXT, "camera_model": TEXT, "views": INT, "downloads": INT, "ai_description": TEXT,
    "keywords": TEXT, "blur_hash": TEXT, "colour": COLOUR, "colour_hex": HEX,
    "words_in_picture": TEXT,
}
"""Optional metadata columns a bundle may hold, by the kind of value checked on load."""
CATEGORIES = ("photographer_username", "city", "country", "camera", "colour")
"""Text filtered on: held as dictionary codes (`camera` is make and model joined)."""
NUMBERS = ("width", "height", "date", "featured", "latitude", "longitude", "views", "downloads")
"""Held as float64 (NaN: missing); dates as seconds since 1970 UTC, featured as 0/1."""
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
HEX_PATTERN = r"^#[0-9a-f]{6}$"
RANGES = {"latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0)}
WORDS_IN_PICTURE = "words_in_picture"
"""Text OCR found in the picture (build_index.py --ocr), one fragment per line: "" none found, null not read."""
MAX_WORDS_CHARS = 500
"""Characters of words_in_picture per item: a sign or a poster says far less; a page of text is not searched."""
MAX_COUNT = 2.0 ** 53  # views, downloads, sizes: float64 holds every integer below this exactly


class MetadataError(BundleError):
    """A metadata value that breaks an item rule. `rule` says which without naming the file or the row (what a
    build records for a source row that breaks it); `row` is the first such row, None for a whole column."""

    def __init__(self, message: str, rule: str, row: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.row = row


def _refuse(name: str, row: int, what: str) -> MetadataError:
    return MetadataError(f"{METADATA_FILE} column {name} row {row}: {what}; {REBUILD_HINT}", f"{name}: {what}", row)


def _first_bad(ok: pa.ChunkedArray | pa.Array) -> int | None:
    """The first row where `ok` is false (null counts as fine: a missing value)."""
    found = pc.index(pc.fill_null(ok, True), False).as_py()
    return None if found < 0 else found


def _check_type(name: str, column: pa.ChunkedArray, kind: str) -> None:
    dtype = column.type
    fits = {INT: pa.types.is_integer(dtype), FLOAT: pa.types.is_floating(dtype) or pa.types.is_integer(dtype),
            BOOL: pa.types.is_boolean(dtype)}.get(kind, pa.types.is_string(dtype) or pa.types.is_large_string(dtype))
    if not (fits or pa.types.is_null(dtype)):
        rule = f"{name} holds {dtype}, not {kind} values"
        raise MetadataError(f"{METADATA_FILE} column {rule}; {REBUILD_HINT}", rule)


def _as_numbers(name: str, column: pa.ChunkedArray, kind: str) -> npt.NDArray[np.float64]:
    """A checked column as float64 with NaN where missing; BundleError on the first value out of its rule."""
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if kind == DATE:
        bad = _first_bad(pc.match_substring_regex(column, DATE_PATTERN))
        if bad is not None:
            raise _refuse(name, bad, f"dates are written {DATE_FORMAT.replace('%', '')} (UTC)")
        try:
            column = pc.strptime(column, DATE_FORMAT, unit="s", error_is_null=False)
        except pa.ArrowInvalid:
            rule = f"{name} holds a date that does not exist"
            raise MetadataError(f"{METADATA_FILE} column {rule}; {REBUILD_HINT}", rule) from None
        column = column.cast(pa.int64())
    values = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    low, high = RANGES.get(name, (0.0, MAX_COUNT)) if kind != DATE else (-MAX_COUNT, MAX_COUNT)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~np.isnan(values) & ~((values >= low) & (values <= high)))
    if kind != DATE and len(bad):
        raise _refuse(name, int(bad[0]), f"{float(values[bad[0]])!r} is outside {low:g}..{high:g}")
    return values


def _check_text(name: str, column: pa.ChunkedArray, kind: str) -> None:
    if kind == HEX and not pa.types.is_null(column.type):
        bad = _first_bad(pc.match_substring_regex(column, HEX_PATTERN))
        if bad is not None:
            raise _refuse(name, bad, "colours are written #rrggbb in lowercase hex")
    if kind == COLOUR and not pa.types.is_null(column.type):
        known = pc.is_in(column, value_set=pa.array(list(PALETTE), column.type))
        bad = _first_bad(pc.or_(known, pc.is_null(column)))
        if bad is not None:
            raise _refuse(name, bad, f"colour names are one of {', '.join(PALETTE)}")


@dataclass(frozen=True, slots=True)
class Category:
    """A text column as int32 codes into its distinct values (code -1: missing)."""

    codes: npt.NDArray[np.int32]
    values: tuple[str, ...]

    @classmethod
    def of(cls, column: pa.ChunkedArray | pa.Array) -> Category:
        """Dictionary-encode a text column."""
        if pa.types.is_null(column.type):
            return cls(np.full(len(column), -1, np.int32), ())
        encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        codes = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), np.int32)
        return cls(codes, tuple(encoded.dictionary.to_pylist()))

    def value(self, row: int) -> str | None:
        """The text of one row."""
        code = int(self.codes[row])
        return None if code < 0 else self.values[code]

    def matching(self, wanted: str, substring: bool = False) -> npt.NDArray[np.bool_]:
        """Rows whose value equals `wanted` (or contains it), ignoring case and the spaces around a stored value."""
        wanted = wanted.casefold()
        hits = [code for code, text in enumerate(self.values)
                if (wanted in text.casefold() if substring else text.strip().casefold() == wanted)]
        return np.isin(self.codes, np.asarray(hits, np.int32))


def _camera(table: pa.Table) -> pa.Array:
    """Make and model joined ("Canon EOS 5D"); null when both are missing."""
    parts = [pc.utf8_trim_whitespace(table.column(name).cast(pa.string())) for name in ("camera_make",
                                                                                        "camera_model")
             if name in table.column_names and not pa.types.is_null(table.column(name).type)]
    if not parts:
        return pa.nulls(table.num_rows, pa.string())
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(
        pc.fill_null(parts[0], ""), pc.fill_null(parts[1], ""), " ")
    joined = pc.utf8_trim_whitespace(joined)
    return pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)


class Attributes:
    """The optional columns of one bundle, checked and held as arrays; `present` names those it has."""

    def __init__(self, table: pa.Table) -> None:
        self.count = table.num_rows
        self.present = frozenset(name for name in ATTRIBUTE_KINDS if name in table.column_names)
        for name in self.present:
            _check_type(name, table.column(name), ATTRIBUTE_KINDS[name])
        self.numbers = {name: _as_numbers(name, table.column(name), ATTRIBUTE_KINDS[name])
                        for name in NUMBERS if name in self.present}
        for name in self.present - set(NUMBERS):
            _check_text(name, table.column(name), ATTRIBUTE_KINDS[name])
        columns = {name: table.column(name) for name in ("photographer_username", "city", "country", "colour")
                   if name in self.present}
        if {"camera_make", "camera_model"} & self.present:
            columns["camera"] = _camera(table)
        self.categories = {name: Category.of(column) for name, column in columns.items()}
        # Shown with a hit, never filtered on: kept as Arrow arrays (one buffer each), read per hit.
        self.texts = {name: table.column(name).combine_chunks() for name in ("location_name", "blur_hash",
                                                                             "colour_hex", WORDS_IN_PICTURE)
                      if name in self.present}

    def has(self, name: str) -> bool:
        """Whether the bundle holds the column (or, for camera, one of make and model)."""
        return name in self.numbers or name in self.categories or name in self.texts

    def with_words(self) -> npt.NDArray[np.bool_]:
        """Rows whose picture has words found in it (a words_in_picture that is not empty)."""
        column = self.texts.get(WORDS_IN_PICTURE)
        if column is None or pa.types.is_null(column.type):
            return np.zeros(self.count, bool)
        found = pc.fill_null(pc.greater(pc.utf8_length(column), 0), False)
        return np.asarray(found.to_numpy(zero_copy_only=False), bool)

    def row(self, row: int) -> dict[str, Any]:
        """The attributes of one item as plain values, for its hit (missing ones are None)."""
        values: dict[str, Any] = {name: _plain(name, column[row]) for name, column in self.numbers.items()}
        values.update({name: category.value(row) for name, category in self.categories.items()})
        values.update({name: column[row].as_py() for name, column in self.texts.items()})
        return values


def _plain(name: str, value: float) -> Any:
    if np.isnan(value):
        return None
    if name == "date":
        return np.datetime_as_string(np.datetime64(int(value), "s")) + "Z"
    if name == "featured":
        return bool(value)
    return float(value) if name in RANGES else int(value)
