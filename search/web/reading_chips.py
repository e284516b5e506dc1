"""What a text query was read as (search/query/understand.py), above its results: one removable chip per reading.

"📍 Lisbon ✕" is a button; pressing it (mouse, Enter or Space) runs the search again without that kind of reading,
by adding the kind to the `not_understood` option, which the options panel shows and the link carries like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr

from search.errors import BadQueryError
from search.query.options import READING_KINDS
from search.query.understand import Reading
from search.web.page_text import html_text

ICONS = {"place": "📍", "date": "📅", "orientation": "🖼️"}


def chips_html(readings: Sequence[Reading]) -> str:
    """The chips of the readings a search applied ("" for none); every text escaped."""
    if not readings:
        return ""
    chips = "".join(
        f'<button type="button" class="reading-chip" data-kind="{html_text(reading.kind)}" '
        f'aria-label="{html_text(f"Remove {reading.kind} filter {reading.label}, read from “{reading.words}”")}">'
        f'<span aria-hidden="true">{ICONS.get(reading.kind, "")}</span> {html_text(reading.label)} '
        f'<span aria-hidden="true">✕</span></button>' for reading in readings)
    html = (f'<div class="readings" role="group" aria-label="Filters read from the query">'
            f'<span class="readings-label">Read from the query:</span>{chips}</div>')
    return html.replace("{", "&#123;").replace("}", "&#125;")  # as results_html: braces only come from data


def kinds_of(value: Any) -> list[str]:
    """The `not_understood` kinds of a control or link value (a list from the panel, a text from a link)."""
    parts = value.split(",") if isinstance(value, str) else list(value or [])
    return [kind for kind in READING_KINDS if kind in {str(part).strip() for part in parts}]


def without_kind(options: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """The panel's option values with the chip's kind (the event's data) added to `not_understood`."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in READING_KINDS:
        raise BadQueryError("that filter is no longer shown; search again")
    return {**options, "not_understood": kinds_of([*kinds_of(options.get("not_understood")), kind])}


def unread_handler(ui: Any) -> Any:
    """The `unread` event of the results (a chip pressed) for a handlers.SearchUI: the open tab's search again without
    that kind of reading, and the panel's `not_understood` control showing it."""

    def unread(top_k: float, text_threshold: float, image_threshold: float, session: Any,  # noqa: PLR0917
               evt: gr.EventData, options: dict[str, Any]) -> tuple:
        """A reading's chip removed: the search again, and the panel's control, without that kind."""
        options = without_kind(options, getattr(evt, "_data", None))
        shown = ui.ui_rerun(top_k, text_threshold, image_threshold, session, options)
        return (*shown, options["not_understood"])

    return unread


# A refused re-run (a busy server) leaves the chips as they were: give them back.
UNREAD_FAILED_JS = ("() => { document.querySelectorAll('#results button.reading-chip')"
                    ".forEach((chip) => { chip.disabled = false; }); }")

READINGS_CSS = """
#results .readings { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin: 0 0 10px; }
#results .readings-label { font-size: 0.9em; }
#results .reading-chip { display: inline-flex; gap: 4px; align-items: center; padding: 3px 10px; border-radius: 999px;
    cursor: pointer; font-size: 0.9em; border: 1px solid var(--border-color-primary);
    background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); }
#results .reading-chip:hover { border-color: #4f46e5; }
#results .reading-chip:focus-visible { outline: 3px solid var(--color-accent); outline-offset: 2px; }
"""

READINGS_JS = r"""
// A reading's chip: search again without it; focus then goes to the next chip, or the query box when none is left.
let chipFocus = false;
element.addEventListener("click", (event) => {
  const chip = event.target.closest("button.reading-chip");
  if (!chip) return;
  chip.disabled = true; chipFocus = true;
  trigger("unread", { kind: chip.dataset.kind });
});
watch("value", () => {
  if (!chipFocus) return;
  chipFocus = false;
  (element.querySelector("button.reading-chip") || document.querySelector("#query textarea, #query input"))?.focus();
});
"""
