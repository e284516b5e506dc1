"""Deep links: the query string that restores a search (`?q=TEXT`, `?id=ITEM`, plus options such as
`&colour=red&sort=date`), parsed as untrusted input.

One dataclass both ways, so a new parameter (filters, sort) is one field, one line in `parse_link` and one in
`LinkState.query_string`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from search.query.option_spec import canonical
from search.query.options import MAX_FILTER_TEXT
from search.web.options_panel import OPTION_KEYS

MAX_ID_CHARS = 512
MAX_LINK_CHARS = 8192  # what a browser's address bar holds; a longer value is not a link anyone shared


@dataclass(frozen=True, slots=True)
class LinkState:
    """What a link restores: a text search, or "more like" an item (the item wins when both are given)."""

    text: str = ""
    item_id: str = ""
    options: dict[str, str] = field(default_factory=dict)
    """Search options that differ from the page's defaults (options_panel.py), raw: the page checks them."""

    @property
    def empty(self) -> bool:
        """Whether the link asks for nothing (the page then shows its default search)."""
        return not (self.text or self.item_id)

    def query_string(self) -> str:
        """`?q=…` or `?id=…`, then the options (empty for nothing shareable, e.g. an uploaded picture)."""
        pairs = [("id", self.item_id)] if self.item_id else [("q", self.text)] if self.text else []
        pairs += [(key, self.options[key]) for key in OPTION_KEYS if key in self.options] if pairs else []
        return f"?{urlencode(pairs)}" if pairs else ""


def _param(params: Mapping[str, str], name: str, limit: int) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        return ""
    value = " ".join(value.split())  # a link is one line; control characters and newlines become spaces
    return value[:limit] if value.isprintable() else ""


def parse_link(params: Mapping[str, str]) -> LinkState:
    """The search a page URL's query parameters ask for; unknown parameters (e.g. `__theme`) are ignored."""
    params = canonical(params)  # a link shared before an option was renamed still works
    options = {key: value for key in OPTION_KEYS if (value := _param(params, key, MAX_FILTER_TEXT))}
    # The query is not cut here: the engine refuses one that is too long, with the same message as every route.
    return LinkState(text=_param(params, "q", MAX_LINK_CHARS), item_id=_param(params, "id", MAX_ID_CHARS),
                     options=options)
