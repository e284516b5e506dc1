"""Qdrant payloads: the filter fields a point carries, and `Filters` as a Qdrant payload filter, in one place.

A Qdrant filter must keep exactly the rows `Filters.mask` keeps, so the payload is written from the same arrays the
mask reads (search/bundle/attributes.py), not from the raw metadata cells:
- text filters (colour, country, city, photographer, camera) match any case, camera as a part of "make model";
  Qdrant matches keywords exactly, so the query is resolved against the bundle's own dictionary of distinct
  values (the same `Category.matching` the mask uses) into the exact stored values, and sent as `MatchAny` on a
  keyword index: exact, indexed, and no case-folded copies stored;
- orientation is stored as the label `Filters.mask` gives each row (its width/height tolerance), camera as make
  and model joined as attributes.py joins them, the date as seconds since 1970 (the number the mask compares).
Points loaded before these fields existed are refused on open (PAYLOAD_FORMAT in the collection's metadata).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from qdrant_client import models

from search.bundle.attributes import WORDS_IN_PICTURE, Attributes, Category
from search.query.options import ORIENTATIONS, Filters

PAYLOAD_FORMAT = 2
"""Version of the payload layout below, kept in the collection's metadata (1: raw columns, before `Filters`)."""
TEXT_KEYS = {"colour": "colour", "country": "country", "city": "city", "camera": "camera",
             "photographer": "photographer_username"}
"""Filters text field -> Attributes category = payload key (keyword index)."""
SUBSTRING = frozenset({"camera"})
"""Text fields matched as a part of the value, as `Filters.mask` matches them."""
DATE_KEY = "date_seconds"
INDEX_SCHEMAS = {
    **dict.fromkeys(TEXT_KEYS.values(), models.PayloadSchemaType.KEYWORD),
    "orientation": models.PayloadSchemaType.KEYWORD,
    DATE_KEY: models.PayloadSchemaType.FLOAT,
    "featured": models.PayloadSchemaType.BOOL,
    "downloads": models.PayloadSchemaType.INTEGER,
    "has_text": models.PayloadSchemaType.BOOL,
}
"""Filter payload keys and their index type (a server's filtered HNSW plans with an index on each key)."""
BATCH_ROWS = 1024


def payload_filter(filters: Filters, attributes: Attributes) -> models.Filter | None:
    """The Qdrant filter keeping the rows `filters.mask(attributes)` keeps (None when nothing is constrained)."""
    conditions: list[models.Condition] = []
    for field, key in TEXT_KEYS.items():
        wanted = getattr(filters, field)
        if wanted is not None:
            values = _matching_values(attributes.categories[key], wanted, field in SUBSTRING)
            conditions.append(models.FieldCondition(key=key, match=models.MatchAny(any=values)))
    if filters.orientation is not None:
        conditions.append(models.FieldCondition(key="orientation", match=models.MatchValue(value=filters.orientation)))
    if filters.featured is not None:
        conditions.append(models.FieldCondition(key="featured", match=models.MatchValue(value=filters.featured)))
    if filters.date_from is not None or filters.date_to is not None:
        conditions.append(models.FieldCondition(key=DATE_KEY, range=models.Range(gte=filters.date_from,
                                                                                  lte=filters.date_to)))
    if filters.min_downloads is not None:
        conditions.append(models.FieldCondition(key="downloads", range=models.Range(gte=filters.min_downloads)))
    if filters.has_text is not None:
        conditions.append(models.FieldCondition(key="has_text", match=models.MatchValue(value=filters.has_text)))
    return models.Filter(must=[_or_unknown(condition, filters) for condition in conditions]) if conditions else None


def _or_unknown(condition: models.FieldCondition, filters: Filters) -> models.Condition:
    """A condition that also keeps points without its field, where `filters.or_unknown` asks (as `Filters.mask`)."""
    lenient = {TEXT_KEYS.get(name, DATE_KEY if name.startswith("date") else name) for name in filters.or_unknown}
    if condition.key not in lenient:
        return condition
    return models.Filter(should=[condition, models.IsEmptyCondition(is_empty=models.PayloadField(key=condition.key))])


def _matching_values(category: Category, wanted: str, substring: bool) -> list[str]:
    """The distinct stored values `Category.matching` accepts for `wanted` (the same rule, on the dictionary)."""
    dictionary = Category(np.arange(len(category.values), dtype=np.int32), category.values)
    return [category.values[code] for code in np.flatnonzero(dictionary.matching(wanted, substring))]


def filter_columns(attributes: Attributes) -> dict[str, pa.Array]:
    """The filter payload fields of every row, as Arrow columns (null: the row has no value)."""
    columns = {key: _text_column(category) for key, category in attributes.categories.items()}
    numbers = attributes.numbers
    if "date" in numbers:
        columns[DATE_KEY] = pa.array(numbers["date"], mask=np.isnan(numbers["date"]))
    if "featured" in numbers:
        columns["featured"] = pa.array(numbers["featured"] == 1.0, mask=np.isnan(numbers["featured"]))
    if "downloads" in numbers:
        downloads = numbers["downloads"]
        columns["downloads"] = pa.array(np.nan_to_num(downloads).astype(np.int64), mask=np.isnan(downloads))
    if attributes.has(WORDS_IN_PICTURE):
        columns["has_text"] = pa.array(attributes.with_words())
    if "width" in numbers and "height" in numbers:
        labels = np.full(attributes.count, None, dtype=object)
        for orientation in ORIENTATIONS:  # the mask's own rule, tolerance included
            labels[Filters(orientation=orientation).mask(attributes)] = orientation
        columns["orientation"] = pa.array(labels, pa.string())
    return columns


def _text_column(category: Category) -> pa.Array:
    values = np.asarray([*category.values, ""], dtype=object)  # code -1 (missing) picks "" and is masked
    return pa.array(values[category.codes], pa.string(), mask=category.codes < 0)


def payload_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """One payload per row, in row order: its non-null cells."""
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        for row in batch.to_pylist():
            yield {key: value for key, value in row.items() if value is not None}


def indexed_fields(table: pa.Table) -> dict[str, models.PayloadSchemaType]:
    """The filter payload keys this table has, with the index type each gets."""
    return {key: schema for key, schema in INDEX_SCHEMAS.items() if key in table.column_names}
