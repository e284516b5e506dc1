"""The page's search options (filters, sort, cut-off, near-duplicates, keyword matches) as short string params.

One shape serves the options panel, deep links and the handlers: a dict of the options that differ from the page's
defaults, under the options' one names (search/query/option_spec.py), e.g. {"colour": "red",
"collapse_radius": "off"}. `search_options` turns it into SearchOptions through
SearchOptions.from_params, the one place values are checked. Pure: no gradio, so it is testable on its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from search.errors import BadQueryError
from search.query.engine import SearchEngine
from search.query.option_spec import OPTIONS, canonical
from search.query.options import SUGGESTED_RADIUS, SearchOptions

logger = logging.getLogger(__name__)

FILTER_COLUMNS: dict[str, tuple[str, ...]] = {spec.name: spec.columns for spec in OPTIONS if spec.columns}
"""Each filter and the bundle columns it needs: the panel offers only those the bundle has data for."""
OPTION_KEYS = tuple(spec.name for spec in OPTIONS if spec.name != "offset")  # pages are the page's own business
"""Every option the panel and links carry, in the panel's order (also the order of deep-link parameters)."""
DEFAULTS = {"sort": "relevance", "cutoff": "flat", "collapse_radius": "on", "keywords": "on", "understand": "on"}
"""The page's defaults: near-duplicates folded, keyword matches on where the bundle has an index."""
BLANK = {"", "any"}
SORT_COLUMNS = {"date": ("date",), "popularity": ("downloads", "views")}


def available_options(engine: SearchEngine) -> tuple[str, ...]:
    """The options this bundle can serve, in panel order."""
    attributes = engine.bundle.catalog.attributes
    filters = [key for key, columns in FILTER_COLUMNS.items() if all(attributes.has(name) for name in columns)]
    results = (["sort"] if len(available_sorts(engine)) > 1 else []) + ["cutoff", "collapse_radius"]
    results += ["keywords"] if engine.bundle.keywords is not None else []
    results += ["understand", "not_understood"] if not engine.vocabulary.empty else []
    return (*filters, *results)


def available_sorts(engine: SearchEngine) -> tuple[str, ...]:
    """Relevance, plus the orders the bundle has a column for."""
    attributes = engine.bundle.catalog.attributes
    return ("relevance", *(sort for sort, columns in SORT_COLUMNS.items()
                           if any(attributes.has(name) for name in columns)))


def clean_options(values: Mapping[str, Any], available: tuple[str, ...]) -> dict[str, str]:
    """Control or link values as option params: only available keys (earlier names renamed), blanks and defaults
    left out."""
    values, cleaned = canonical(values), {}
    for key in available:
        text = _as_text(values.get(key))
        if text.lower() not in BLANK and text != DEFAULTS.get(key):
            cleaned[key] = text
    return cleaned


def _as_text(value: Any) -> str:
    if isinstance(value, bool):  # a checkbox
        return "on" if value else "off"
    if isinstance(value, list | tuple):  # a group of checkboxes
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return "" if value == 0 else str(int(value))  # min_downloads 0 is no condition, not "has a count"
    return "" if value is None else " ".join(str(value).split())


def search_options(options: Mapping[str, str], offset: int = 0) -> SearchOptions:
    """The SearchOptions the params describe (BadQueryError, one line, for a bad value)."""
    params: dict[str, Any] = dict(options)
    folding = options.get("collapse_radius", "on")  # the page's checkbox: on folds at the suggested radius
    params["collapse_radius"] = SUGGESTED_RADIUS if folding == "on" else folding
    params["offset"] = offset
    return SearchOptions.from_params(params)


def link_options(params: Mapping[str, str], available: tuple[str, ...]) -> dict[str, str]:
    """Options from a page URL (untrusted): kept only when all of them are valid, else none, so the page loads."""
    options = clean_options(params, available)
    try:
        search_options(options)
    except BadQueryError as exc:
        logger.info("a link carried a bad search option (%s); loading without options", exc)
        return {}
    return options


def control_value(key: str, options: Mapping[str, str]) -> Any:
    """What the panel's control for `key` shows for these options."""
    value = options.get(key, DEFAULTS.get(key, ""))
    if key in {"collapse_radius", "keywords", "understand"}:
        return value != "off"
    if key == "not_understood":
        return [kind for kind in value.split(",") if kind]
    if key in {"orientation", "colour", "featured", "has_text"}:
        return value or "any"
    if key == "min_downloads":
        return float(value) if value else None
    return value
