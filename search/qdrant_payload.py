"""Qdrant payloads: a bundle's metadata rows as point payloads, and typed filters as Qdrant payload conditions.

The payload field names live here and nowhere else: the loader writes a point's payload from the bundle's
`metadata.parquet` row (every flat column, as stored), and `payload_filter` maps a `PayloadFilter` onto the same
names. The filter fields are those of the search-features issue (orientation, colour, date range, country/city,
camera, photographer, featured, minimum downloads); the column names they read are set in FILTER_FIELDS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from qdrant_client import models

FILTER_FIELDS = {
    "orientation": "orientation",
    "color": "color",
    "date": "date",
    "country": "country",
    "city": "city",
    "camera": "camera",
    "photographer": "photographer",
    "featured": "featured",
    "downloads": "downloads",
}
"""PayloadFilter field -> metadata column (= payload key) it is matched against."""

INDEX_SCHEMAS = {
    "orientation": models.PayloadSchemaType.KEYWORD,
    "color": models.PayloadSchemaType.KEYWORD,
    "date": models.PayloadSchemaType.DATETIME,
    "country": models.PayloadSchemaType.KEYWORD,
    "city": models.PayloadSchemaType.KEYWORD,
    "camera": models.PayloadSchemaType.KEYWORD,
    "photographer": models.PayloadSchemaType.KEYWORD,
    "featured": models.PayloadSchemaType.BOOL,
    "downloads": models.PayloadSchemaType.INTEGER,
}
"""Payload keys a server indexes (a filtered HNSW search needs an index on each key it filters by)."""

BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class PayloadFilter:
    """Conditions a hit's metadata must meet (all of them); None leaves a field unconstrained."""

    orientation: str | None = None  # landscape, portrait or squarish, as the bundle stores it
    color: str | None = None  # a colour name
    date_from: dt.datetime | None = None  # inclusive
    date_to: dt.datetime | None = None  # inclusive
    country: str | None = None
    city: str | None = None
    camera: str | None = None
    photographer: str | None = None
    featured: bool | None = None
    min_downloads: int | None = None

    @property
    def is_empty(self) -> bool:
        """Whether no field constrains anything."""
        return all(getattr(self, name) is None for name in self.__slots__)


def payload_filter(where: PayloadFilter | None) -> models.Filter | None:
    """The Qdrant filter for `where` (None when nothing is constrained)."""
    if where is None or where.is_empty:
        return None
    conditions: list[models.Condition] = []
    for name in ("orientation", "color", "country", "city", "camera", "photographer", "featured"):
        value = getattr(where, name)
        if value is not None:
            conditions.append(models.FieldCondition(key=FILTER_FIELDS[name], match=models.MatchValue(value=value)))
    if where.date_from is not None or where.date_to is not None:
        conditions.append(models.FieldCondition(key=FILTER_FIELDS["date"],
                                                range=models.DatetimeRange(gte=where.date_from, lte=where.date_to)))
    if where.min_downloads is not None:
        conditions.append(models.FieldCondition(key=FILTER_FIELDS["downloads"],
                                                range=models.Range(gte=where.min_downloads)))
    return models.Filter(must=conditions)


def payload_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """One payload per metadata row, in row order: its non-null cells, dates as ISO 8601 text (Qdrant's format)."""
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        for row in batch.to_pylist():
            yield {key: _json_value(value) for key, value in row.items() if value is not None}


def indexed_fields(table: pa.Table) -> dict[str, models.PayloadSchemaType]:
    """The filterable payload keys this metadata has, with the index type each gets."""
    return {key: schema for key, schema in INDEX_SCHEMAS.items() if key in table.column_names}


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC).isoformat()
    return value
