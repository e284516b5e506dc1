"""Search options: metadata filters, sort order, near-duplicate collapse, pages and the cut-off, validated once.

`SearchOptions.from_params` takes raw request values (strings or numbers from a form, a Gradio API call, a REST
body or CLI flags) and is the one place they are checked; each refusal is a BadQueryError saying what to send.
A filter on a column the bundle lacks (an older bundle, or a folder build without EXIF dates) is refused with a
message naming it, rather than silently matching nothing: an empty page would look like "no such pictures".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from search.bundle.attributes import WORDS_IN_PICTURE, Attributes
from search.bundle.colour import PALETTE
from search.errors import BadQueryError
from search.query.feedback import checked_marks, checked_pair

ORIENTATIONS = ("landscape", "portrait", "square")
SORTS = ("relevance", "date", "popularity")
CUTOFFS = ("flat", "relative", "gap")
SQUARE_TOLERANCE = 0.05  # width/height within 5% of 1 counts as square (4000x3900 looks square)
MAX_OFFSET = 10_000
MAX_FILTER_TEXT = 200
SUGGESTED_RADIUS = 0.05
"""Collapse radius the UI and docs suggest (bench/dedup_cutoff.py on the demo)."""
MAX_RADIUS = 0.5  # cosine distance; beyond this "duplicates" are merely related pictures
READING_KINDS = ("place", "date", "orientation")
"""What a text query's words may be read as (search/query/understand.py); `not_understood` names kinds to skip."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Metadata conditions an item must meet (all of them); None: no condition."""

    orientation: str | None = None
    colour: str | None = None
    date_from: float | None = None
    """Seconds since 1970 UTC; inclusive."""
    date_to: float | None = None
    """Seconds since 1970 UTC; inclusive (a bare date means the end of that day)."""
    country: str | None = None
    city: str | None = None
    camera: str | None = None
    """Part of "make model", any case."""
    photographer: str | None = None
    """Unsplash username, any case."""
    featured: bool | None = None
    min_downloads: int | None = None
    has_text: bool | None = None
    """True: only pictures with words found in them (OCR); False: only those without."""
    or_unknown: tuple[str, ...] = ()
    """Conditions (by name: country, city, date_from, date_to, orientation) an item lacking their column passes
    too: a query's readings (search/query/understand.py), which must not drop the many photos without a place or
    a date. The options' own filters never set it: a chosen filter keeps only items known to meet it."""

    @property
    def active(self) -> bool:
        """Whether any condition is set."""
        return any(getattr(self, item.name) is not None for item in fields(self) if item.name != "or_unknown")

    def mask(self, attributes: Attributes) -> npt.NDArray[np.bool_] | None:
        """Rows meeting every condition (None when there is none); BadQueryError for a column the bundle lacks."""
        if not self.active:
            return None
        keep = np.ones(attributes.count, bool)
        lenient = {UNKNOWN_COLUMNS[name] for name in self.or_unknown}
        for column, test in self._tests():
            if not attributes.has(column):
                how = "build_index.py --ocr" if column == WORDS_IN_PICTURE else "build_index.py"
                raise BadQueryError(f"this index has no {column} data to filter on; remove that filter or rebuild "
                                    f"the index with {how} to add it")
            keep &= test(attributes) | _missing(attributes, column) if column in lenient else test(attributes)
        return keep

    def _tests(self) -> list[tuple[str, Any]]:
        numbers = _number_tests(self)
        texts = [(name, getattr(self, key)) for name, key in (("country", "country"), ("city", "city"),
                                                              ("camera", "camera"), ("colour", "colour"),
                                                              ("photographer_username", "photographer"))]
        words = [(WORDS_IN_PICTURE, lambda a: a.with_words() == self.has_text)] if self.has_text is not None else []
        return numbers + [(name, _category_test(name, value)) for name, value in texts if value is not None] + words

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Filters:
        """Filters from raw request values; empty strings and None mean "no condition"."""
        values = {key: _blank_to_none(params.get(key)) for key in (item.name for item in fields(cls))}
        return cls(orientation=_choice(values["orientation"], ORIENTATIONS, "orientation"),
                   colour=_choice(values["colour"], tuple(PALETTE), "colour"),
                   date_from=_date(values["date_from"], "date_from", end_of_day=False),
                   date_to=_date(values["date_to"], "date_to", end_of_day=True),
                   country=_text(values["country"], "country"), city=_text(values["city"], "city"),
                   camera=_text(values["camera"], "camera"), photographer=_text(values["photographer"], "photographer"),
                   featured=_flag(values["featured"]), min_downloads=_count(values["min_downloads"]),
                   has_text=_flag(values["has_text"], "has_text"))


UNKNOWN_COLUMNS = {"country": "country", "city": "city", "date_from": "date", "date_to": "date",
                   "orientation": "width"}
"""The column whose absence lets an item pass a condition named in `Filters.or_unknown`."""


def _missing(attributes: Attributes, column: str) -> npt.NDArray[np.bool_]:
    if column in attributes.numbers:
        return np.isnan(attributes.numbers[column])
    return attributes.categories[column].codes < 0


def _number_tests(filters: Filters) -> list[tuple[str, Any]]:
    tests: list[tuple[str, Any]] = []
    if filters.orientation is not None:
        tests += [("width", lambda a: _orientation(a, filters.orientation)), ("height", lambda a: True)]
    if filters.date_from is not None:
        tests.append(("date", lambda a: a.numbers["date"] >= filters.date_from))
    if filters.date_to is not None:
        tests.append(("date", lambda a: a.numbers["date"] <= filters.date_to))
    if filters.featured is not None:
        tests.append(("featured", lambda a: a.numbers["featured"] == float(filters.featured)))
    if filters.min_downloads is not None:
        tests.append(("downloads", lambda a: a.numbers["downloads"] >= filters.min_downloads))
    return tests


def _orientation(attributes: Attributes, orientation: str) -> npt.NDArray[np.bool_]:
    with np.errstate(invalid="ignore", divide="ignore"):  # a missing or zero size compares False: not kept
        ratio = attributes.numbers["width"] / attributes.numbers["height"]
        square = np.abs(ratio - 1.0) <= SQUARE_TOLERANCE
        if orientation == "square":
            return square
        return (ratio > 1.0) & ~square if orientation == "landscape" else (ratio < 1.0) & ~square


def _category_test(name: str, value: str) -> Any:
    return lambda attributes: attributes.categories[name].matching(value, substring=name == "camera")


def _blank_to_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "gray":
        text = "grey"
    if text not in allowed:
        raise BadQueryError(f"{name} must be one of {', '.join(allowed)}, got {str(value)[:40]!r}")
    return text


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FILTER_TEXT:
        raise BadQueryError(f"{name} must be a text of at most {MAX_FILTER_TEXT} characters")
    return value.strip()


def _date(value: Any, name: str, end_of_day: bool) -> float | None:
    """YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC) as seconds since 1970; a bare date_to covers that whole day."""
    if value is None:
        return None
    text = str(value).strip()
    for pattern in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        seconds = moment.timestamp()
        return seconds + 86_399 if end_of_day and pattern == "%Y-%m-%d" else seconds
    raise BadQueryError(f"{name} must be a date written YYYY-MM-DD, got {text[:40]!r}")


def _flag(value: Any, name: str = "featured") -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "1", "on"}:
        return True
    if text in {"false", "no", "0", "off"}:
        return False
    raise BadQueryError(f"{name} must be true or false, got {text[:40]!r}")


def _count(value: Any) -> int | None:
    if value is None:
        return None
    number = _number(value, "min_downloads")
    if number != int(number) or number < 0:
        raise BadQueryError(f"min_downloads must be a whole number of 0 or more, got {value!r}")
    return int(number)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise BadQueryError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadQueryError(f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise BadQueryError(f"{name} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """How hits are chosen and shown beyond top_k and threshold; the defaults give the plain ranking."""

    filters: Filters = field(default_factory=Filters)
    sort: str = "relevance"
    collapse_radius: float | None = None
    """Cosine distance: a hit this close to a better-ranked one is folded into it (None: no collapse)."""
    offset: int = 0
    cutoff: str = "flat"
    """flat: the threshold alone; relative: also drop hits far below the best one; gap: cut at the largest drop."""
    keywords: bool = True
    """Fuse keyword (BM25) matches into a text query's ranking, where the bundle has a keyword index."""
    like: tuple[str, ...] = ()
    """Ids of items marked good: the query moves toward them (search/query/feedback.py)."""
    unlike: tuple[str, ...] = ()
    """Ids of items marked not this: the query moves away from them."""
    understand: bool = True
    """Read places, years, months and orientation named in a text query as filters (search/query/understand.py)."""
    not_understood: tuple[str, ...] = ()
    """Kinds of reading (READING_KINDS) to leave out: what removing a chip on the page sends."""

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadQueryError(f"sort must be one of {', '.join(SORTS)}, got {str(self.sort)[:40]!r}")
        if self.cutoff not in CUTOFFS:
            raise BadQueryError(f"cutoff must be one of {', '.join(CUTOFFS)}, got {str(self.cutoff)[:40]!r}")
        radius = self.collapse_radius
        if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int | float)
                                   or not 0.0 <= radius <= MAX_RADIUS):
            raise BadQueryError(f"collapse_radius must be a cosine distance from 0 to {MAX_RADIUS}, got {radius!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or not 0 <= self.offset <= MAX_OFFSET:
            raise BadQueryError(f"offset must be a whole number from 0 to {MAX_OFFSET}, got {self.offset!r}")
        if not isinstance(self.keywords, bool):
            raise BadQueryError(f"keywords must be true or false, got {self.keywords!r}")
        if checked_marks(self.like, "like") != self.like or checked_marks(self.unlike, "unlike") != self.unlike:
            raise BadQueryError("like and unlike must be tuples of item ids; build them with from_params")
        checked_pair(self.like, self.unlike)
        if not isinstance(self.understand, bool):
            raise BadQueryError(f"understand must be true or false, got {self.understand!r}")
        unknown = [str(kind)[:40] for kind in self.not_understood if kind not in READING_KINDS]
        if unknown:
            raise BadQueryError(f"not_understood takes {', '.join(READING_KINDS)}, comma-separated; got {unknown[0]!r}")

    @property
    def marked(self) -> bool:
        """Whether results were marked: the query vector is moved by them (SearchEngine.query_vector)."""
        return bool(self.like or self.unlike)

    @property
    def plain(self) -> bool:
        """True for the defaults (keyword fusion, marks and reading the query aside: marks move the query vector, the
        readings are filters added before this is asked): the engine answers exactly as before options existed."""
        return replace(self, keywords=True, like=(), unlike=(), understand=True, not_understood=()) == SearchOptions()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SearchOptions:
        """Options from raw request values (filter keys as in Filters; collapse_radius empty or "off": none)."""
        radius = _blank_to_none(params.get("collapse_radius"))
        if isinstance(radius, str) and radius.strip().lower() in {"off", "none", "false"}:
            radius = None
        offset = _blank_to_none(params.get("offset"))
        offset_number = 0 if offset is None else _number(offset, "offset")
        if offset_number != int(offset_number):
            raise BadQueryError(f"offset must be a whole number from 0 to {MAX_OFFSET}, got {offset!r}")
        return cls(filters=Filters.from_params(params),
                   sort=_choice(_blank_to_none(params.get("sort")) or "relevance", SORTS, "sort"),
                   collapse_radius=None if radius is None else _number(radius, "collapse_radius"),
                   offset=int(offset_number),
                   cutoff=_choice(_blank_to_none(params.get("cutoff")) or "flat", CUTOFFS, "cutoff"),
                   keywords=_flag(_blank_to_none(params.get("keywords")), "keywords") is not False,
                   like=checked_marks(params.get("like"), "like"),
                   unlike=checked_marks(params.get("unlike"), "unlike"),
                   understand=_flag(_blank_to_none(params.get("understand")), "understand") is not False,
                   not_understood=_kinds(_blank_to_none(params.get("not_understood"))))


def _kinds(value: Any) -> tuple[str, ...]:
    """`not_understood` as sorted kinds: a comma-separated text or a list (the page's checkboxes)."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else [value]
    if len(parts) > len(READING_KINDS) * 2:
        raise BadQueryError(f"not_understood takes {', '.join(READING_KINDS)}, comma-separated")
    kinds = {str(part).strip().lower() for part in parts} - {""}
    return tuple(kind for kind in READING_KINDS if kind in kinds) + tuple(sorted(kinds - set(READING_KINDS)))
