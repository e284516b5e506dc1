"""The page's marks ("good", "not this") on results: carried as the like and unlike options (search/query/
feedback.py), so a link, a reload and the API all see the same thing; pure, no gradio.

The browser keeps the marks of the results shown until "Search again with marks" sends them; the server renders the
marks of the search shown (a link's, after a reload) and the buttons to change them. The values are checked where
every option is, by SearchOptions.from_params (options_panel.search_options).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search.errors import BadQueryError
from search.query.feedback import MAX_MARKS, checked_marks
from search.types import Hit
from search.web.page_text import html_text

MARK_KEYS = ("like", "unlike")
MARK_LABELS = {"like": "Good", "unlike": "Not this"}


def marks_of(options: Mapping[str, str]) -> dict[str, str]:
    """The like and unlike options among `options` (a search's option params)."""
    return {key: options[key] for key in MARK_KEYS if options.get(key)}


def with_marks(options: Mapping[str, str], marks: Mapping[str, str]) -> dict[str, str]:
    """`options` with their marks replaced by `marks`."""
    return {**{key: value for key, value in options.items() if key not in MARK_KEYS}, **marks_of(marks)}


def marks_note(options: Mapping[str, str]) -> str:
    """What the status line adds for a search's marks, e.g. " and 2 marked good, 1 not this"."""
    counts = {key: len([item for item in options.get(key, "").split(",") if item]) for key in MARK_KEYS}
    parts = [f"{counts['like']} marked good"] if counts["like"] else []
    parts += [f"{counts['unlike']} marked not this"] if counts["unlike"] else []
    return f" and {', '.join(parts)}" if parts else ""


def event_marks(data: Any) -> dict[str, str]:
    """The marks a page event sends ({"like": [ids], "unlike": [ids]}, untrusted) as option params."""
    data = data if isinstance(data, dict) else {}
    marks = {}
    for key in MARK_KEYS:
        ids = data.get(key) or []
        if not isinstance(ids, list) or len(ids) > MAX_MARKS or not all(isinstance(item, str) for item in ids):
            raise BadQueryError(f"mark at most {MAX_MARKS} results each as good and as not this")
        marks[key] = ",".join(ids)
    return marks_of(marks)


def markable(hit: Hit) -> bool:
    """Whether a hit can be marked: its id must come back whole through the marks' one check (a comma, spaces around
    it, 200+ characters: a folder's file name may have them) and a link (which folds runs of spaces)."""
    try:
        return checked_marks(hit.id, "like") == (hit.id,) and "  " not in hit.id
    except BadQueryError:
        return False


def mark_buttons(hit: Hit, marks: Mapping[str, str], alt: str) -> str:
    """A tile's two toggle buttons, pressed as the search shown was marked; `alt`: the tile's escaped name."""
    if not markable(hit):
        return ""
    buttons = []
    for key in MARK_KEYS:
        pressed = "true" if hit.id in marks.get(key, "").split(",") else "false"
        buttons.append(f'<button type="button" class="mark mark-{key}" data-mark="{key}" data-id="{html_text(hit.id)}" '
                       f'aria-pressed="{pressed}" aria-label="{MARK_LABELS[key]}: {alt}">{MARK_LABELS[key]}</button>')
    return f'<div class="marks">{"".join(buttons)}</div>'


def marks_bar(marks: Mapping[str, str]) -> str:
    """Above the grid: how many results are marked, "Search again with marks" and "Clear marks" (the browser keeps
    the count and the buttons' state as marks change)."""
    data = "".join(f' data-{key}="{html_text(marks.get(key, ""))}"' for key in MARK_KEYS)
    return (f'<div class="marks-bar"{data}><span class="marks-count" role="status">No results marked</span>'
            '<button type="button" data-action="marks-search" disabled>Search again with marks</button>'
            '<button type="button" data-action="marks-clear" disabled>Clear marks</button></div>')
