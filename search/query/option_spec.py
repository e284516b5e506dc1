"""Every search option declared once: its one name, help, choices, the API's default and the bundle columns it needs.

The REST query parameters, the Gradio API and MCP parameters, the CLI flags (`--date-from` for `date_from`), the
deep-link parameters and the page's options panel are made from OPTIONS, so an option has the same name on every
surface; SearchOptions.from_params checks the values, the one place. Names used before stay accepted as aliases
(links already shared), and a name that is neither is refused with the valid ones (`unknown_parameters`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from search.bundle.attributes import WORDS_IN_PICTURE
from search.bundle.colour import PALETTE
from search.errors import BadQueryError
from search.query.feedback import MAX_MARKS
from search.query.options import (
    CUTOFFS,
    MAX_OFFSET,
    MAX_RADIUS,
    ORIENTATIONS,
    READING_KINDS,
    SORTS,
    SUGGESTED_RADIUS,
)

ANY = "; empty: any"
DATE_ZONE = " (UTC; a folder's photos: the camera's local time)"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One search option as every surface shows it."""

    name: str
    label: str
    """The page's label for its control."""
    help: str
    choices: tuple[str, ...] = ()
    """The values it takes, when a fixed set (the CLI checks them, the panel offers them)."""
    columns: tuple[str, ...] = ()
    """Bundle columns a filter needs: the panel offers it only where the bundle has them all."""
    default: str | int | bool = ""
    """The API's default: with every option at its default, the plain ranking."""
    aliases: tuple[str, ...] = ()
    """Names accepted too (earlier names in shared links and scripts)."""
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The CLI flag: the name with dashes."""
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("orientation", "Orientation", "landscape, portrait or square" + ANY, ORIENTATIONS,
               ("width", "height")),
    OptionSpec("colour", "Colour", f"dominant colour: {', '.join(PALETTE)}" + ANY, tuple(PALETTE), ("colour",),
               aliases=("color",)),
    OptionSpec("date_from", "Taken from (YYYY-MM-DD)",
               "taken or submitted on or after this day, YYYY-MM-DD" + DATE_ZONE + ANY, columns=("date",),
               metavar="YYYY-MM-DD"),
    OptionSpec("date_to", "Taken until (YYYY-MM-DD)",
               "taken or submitted on or before this day, YYYY-MM-DD" + DATE_ZONE + ANY, columns=("date",),
               metavar="YYYY-MM-DD"),
    OptionSpec("country", "Country", "country name, any case" + ANY, columns=("country",)),
    OptionSpec("city", "City", "city name, any case" + ANY, columns=("city",)),
    OptionSpec("camera", "Camera (part of make or model)",
               "part of the camera make and model, any case (e.g. canon)" + ANY, columns=("camera",)),
    OptionSpec("photographer", "Photographer (username)", "Unsplash username of the photographer" + ANY,
               columns=("photographer_username",)),
    OptionSpec("featured", "Featured", "true: only featured photos; false: only the others" + ANY,
               ("true", "false"), ("featured",)),
    OptionSpec("min_downloads", "At least N downloads", "at least this many downloads" + ANY,
               columns=("downloads",), metavar="N"),
    OptionSpec("sort", "Sort by", "order of the hits above the threshold: relevance, date (newest first) or "
               "popularity", SORTS, default="relevance"),
    OptionSpec("collapse_radius", "Fold near-duplicates",
               f"fold hits within this cosine distance (0 to {MAX_RADIUS}) of a better-ranked hit into it, counted "
               f"in its duplicates (suggested {SUGGESTED_RADIUS}); off or empty: no folding",
               aliases=("collapse",), metavar="RADIUS"),
    OptionSpec("offset", "Skip", f"skip this many hits, 0 to {MAX_OFFSET}: the next page starts at offset + top_k",
               default=0, metavar="N"),
    OptionSpec("cutoff", "Cut-off", "flat: the threshold only; relative: also drop hits far below the best; gap: "
               "cut at the largest score drop", CUTOFFS, default="flat"),
    OptionSpec("keywords", "Keyword matches", "also rank by keyword (BM25) matches of the text where the index has "
               "a keyword index", default=True),
    # Relevance feedback (search/query/feedback.py): marks move the query vector; an empty text with likes searches
    # for items like them.
    OptionSpec("like", "Marked good", f"item ids marked good, separated by commas (at most {MAX_MARKS}): the "
               "search moves toward them; empty: none", metavar="ID,ID"),
    OptionSpec("unlike", "Marked not this", f"item ids marked not this, separated by commas (at most {MAX_MARKS}): "
               "the search moves away from them; empty: none", metavar="ID,ID"),
    OptionSpec("has_text", "Words in the picture", "true: only pictures with words found in them (build_index.py "
               "--ocr); false: only those without" + ANY, ("true", "false"), (WORDS_IN_PICTURE,)),
    # Queries that understand places and dates (search/query/understand.py).
    OptionSpec("understand", "Read places and dates in the query",
               "read a place of this collection, a year, a month with its year or an orientation named in a text "
               "query as a filter (\"beach in Portugal 2019\", \"portrait photos of mountains\"); false: the words "
               "are only searched", default=True),
    OptionSpec("not_understood", "Leave out readings", f"readings to leave out, comma-separated: "
               f"{', '.join(READING_KINDS)} (what removing a chip on the page sends)" + ANY, READING_KINDS,
               metavar="KINDS"),
)
BY_NAME = {spec.name: spec for spec in OPTIONS}
ALIASES = {alias: spec.name for spec in OPTIONS for alias in spec.aliases}

T = TypeVar("T")


def canonical(params: Mapping[str, T]) -> dict[str, T]:
    """`params` with every option under its one name (an alias renamed; the name wins over its alias)."""
    renamed = {ALIASES.get(key, key): value for key, value in params.items() if key in ALIASES}
    return {**renamed, **{key: value for key, value in params.items() if key not in ALIASES}}


def refuse_unknown(given: Iterable[str], known: Iterable[str]) -> None:
    """BadQueryError naming the first parameter that is neither in `known` nor an option (or alias), with the
    closest valid name, e.g. "unknown parameter top_k; did you mean k?"."""
    valid = [*known, *BY_NAME]
    for name in given:
        if name not in valid and name not in ALIASES:
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BadQueryError(f"unknown parameter {name[:40]!r}; {hint}the parameters are {', '.join(valid)}")
