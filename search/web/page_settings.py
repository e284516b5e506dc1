"""The page's own settings (results, thresholds, Exclude, the mix weight, the open tab): their defaults, the one check
of each when a link carries it (a link's values are text), and which of them a link carries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.errors import BadQueryError
from search.query.engine import checked_threshold, checked_top_k
from search.web.links import LinkState
from search.web.request_values import checked_exclude, checked_weight

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 12
DEFAULT_WEIGHT = 0.5
TABS = ("text", "image")


@dataclass(frozen=True, slots=True)
class Settings:
    """The page's own controls a link sets: results, thresholds, Exclude, the mix weight and the open tab."""

    top_k: int
    text_threshold: float
    image_threshold: float
    exclude: str = ""
    weight: float = DEFAULT_WEIGHT
    tab: str = "text"


def _tab(value: str) -> str:
    if value not in TABS:
        raise BadQueryError(f"tab must be one of {', '.join(TABS)}")
    return value


SETTING_CHECKS: dict[str, Callable[[str], Any]] = {
    "top_k": lambda text: checked_top_k(float(text)), "threshold": lambda text: checked_threshold(float(text)),
    "exclude": checked_exclude, "weight": lambda text: checked_weight(float(text)), "tab": _tab}
"""Each linked setting's one check (a link's values are text)."""


def settings_from_link(link: LinkState, text_threshold: float, image_threshold: float) -> Settings:
    """The page's settings a link sets, each checked by its one check; a bad one keeps its default (given for the
    thresholds, which each collection measures)."""
    values: dict[str, Any] = {}
    for key, text in link.settings.items():
        try:
            values[key] = SETTING_CHECKS[key](text)
        except (BadQueryError, ValueError, OverflowError) as exc:
            logger.info("a link carried a bad %s (%s); using the default", key, exc)
    if "threshold" in values:  # the threshold of the search linked: a picture's for "more like", else a text's
        text_threshold, image_threshold = ((text_threshold, values["threshold"]) if link.item_id
                                           else (values["threshold"], image_threshold))
    return Settings(values.get("top_k", DEFAULT_TOP_K), text_threshold, image_threshold,
                    values.get("exclude", ""), values.get("weight", DEFAULT_WEIGHT), values.get("tab", "text"))


def settings_for_link(tab: str, mode: str, parts: tuple, page: tuple[int, float], default_threshold: float
                      ) -> dict[str, str]:
    """The settings on screen that differ from the page's defaults, as a link carries them: `parts` are the
    search's (text, image, weight, exclude), `page` its (top_k, threshold)."""
    _, _, weight, exclude = parts
    values = {"top_k": str(page[0]) if page[0] != DEFAULT_TOP_K else "",
              "threshold": f"{page[1]:g}" if abs(page[1] - default_threshold) > 1e-9 else "",
              "exclude": exclude.strip(),
              "weight": f"{weight:g}" if mode == "image" and weight != DEFAULT_WEIGHT else "",
              "tab": tab if tab != "text" else ""}
    return {key: value for key, value in values.items() if value}
