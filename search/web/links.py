"""Deep links: the query string that restores what is on screen (`?q=TEXT`, `?id=ITEM`, the page's settings such as
`&top_k=24&threshold=0.3&exclude=red&tab=image`, plus options such as `&colour=red&sort=date`), parsed as untrusted
input: raw strings here, each checked by its one check where the page uses it (page_settings.py).

One dataclass both ways, so a new parameter is one name in SETTING_KEYS or the options, read and written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from search.query.option_spec import canonical
from search.query.options import MAX_FILTER_TEXT
from search.web.marks import MARK_KEYS
from search.web.options_panel import OPTION_KEYS

MAX_ID_CHARS = 512
MAX_LINK_CHARS = 8192  # what a browser's address bar holds; a longer value is not a link anyone shared
SETTING_KEYS = ("top_k", "threshold", "exclude", "weight", "tab")
"""The page's own settings a link carries, under the API's names where it has them (top_k, threshold)."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """What a link restores: a text search, or "more like" an item (the item wins when both are given)."""

    text: str = ""
    item_id: str = ""
    options: dict[str, str] = field(default_factory=dict)
    """Search options that differ from the page's defaults (options_panel.py), raw: the page checks them."""
    settings: dict[str, str] = field(default_factory=dict)
    """The page's settings (SETTING_KEYS) that differ from its defaults, raw: the page checks them."""

    @property
    def empty(self) -> bool:
        """Whether the link asks for nothing (the page then shows its default search)."""
        return not (self.text or self.item_id)

    def query_string(self) -> str:
        """`?q=…` or `?id=…`, then the settings and options; an uploaded picture is not shareable, so its search
        links only to its tab and settings (`?tab=image&weight=0.7`)."""
        pairs = [("id", self.item_id)] if self.item_id else [("q", self.text)] if self.text else []
        settings = [(key, self.settings[key]) for key in SETTING_KEYS if key in self.settings]
        if not pairs:  # the open tab and its settings, e.g. the mix weight of an uploaded picture's search
            return f"?{urlencode(settings)}" if "tab" in self.settings else ""
        pairs += settings + [(key, self.options[key]) for key in OPTION_KEYS if key in self.options]
        return f"?{urlencode(pairs)}"


def _param(params: Mapping[str, str], name: str, limit: int) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        return ""
    value = " ".join(value.split())  # a link is one line; control characters and newlines become spaces
    return value[:limit] if value.isprintable() else ""


def parse_link(params: Mapping[str, str]) -> LinkState:
    """The search a page URL's query parameters ask for; unknown parameters (e.g. `__theme`) are ignored."""
    params = canonical(params)  # a link shared before an option was renamed still works
    # A mark list holds up to MAX_MARKS ids: cut at a filter's length, it would name an id that is not there.
    options = {key: value for key in OPTION_KEYS
               if (value := _param(params, key, MAX_LINK_CHARS if key in MARK_KEYS else MAX_FILTER_TEXT))}
    settings = {key: value for key in SETTING_KEYS if (value := _param(params, key, MAX_LINK_CHARS))}
    # The query is not cut here: the engine refuses one that is too long, with the same message as every route.
    return LinkState(text=_param(params, "q", MAX_LINK_CHARS), item_id=_param(params, "id", MAX_ID_CHARS),
                     options=options, settings=settings)


def parse_query_string(search: str) -> LinkState:
    """The search a page URL's query string (`?q=…&top_k=…`, as the browser's address bar has it) asks for."""
    if not isinstance(search, str) or len(search) > 4 * MAX_LINK_CHARS:  # 4: room for %-escapes
        return LinkState()
    return parse_link(dict(parse_qsl(search.removeprefix("?"), max_num_fields=64)))
