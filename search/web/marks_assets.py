"""The page's CSS and JavaScript for marks on results ("good", "not this"; search/web/marks.py): a block of their
own, run with the results' script (page_assets.RESULTS_JS), whose dialog and tiles they use."""

from search.query.feedback import MAX_MARKS

MARKS_CSS = """
#results .marks { display: flex; gap: 6px; margin: 4px 0 0; }
#results .marks button, #results .marks-bar button { padding: 3px 8px; border-radius: 6px; cursor: pointer;
    font-size: 0.85em; border: 1px solid var(--border-color-primary);
    background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); }
#results .marks button { flex: 1 1 0; min-width: 0; white-space: nowrap; }
/* Pressed: a tick as well as the colour (white on green-700 and red-700: over 4.5:1). */
#results button.mark[aria-pressed="true"]::before { content: "✓ "; }
#results .mark-like[aria-pressed="true"], #results [data-action="mark-like"][aria-pressed="true"] {
    background: #15803d; color: #ffffff; border-color: transparent; }
#results .mark-unlike[aria-pressed="true"], #results [data-action="mark-unlike"][aria-pressed="true"] {
    background: #b91c1c; color: #ffffff; border-color: transparent; }
#results .marks-bar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin: 0 0 10px; }
#results .marks-bar button:disabled { opacity: 0.6; cursor: default; }
#results .marks button:focus-visible, #results .marks-bar button:focus-visible {
    outline: 3px solid var(--color-accent); outline-offset: 2px; }
#results .detail-keys { margin: 8px 0 0; font-size: 0.85em; }
@media (hover: none) and (pointer: coarse) { #results .detail-keys { display: none; } }  /* no keyboard to speak of */
"""

MARKS_JS = r"""
{  // Marks: kept in the browser until "Search again with marks" sends them (as like and unlike); each search shown
   // brings its own (the marks bar's data), so a link, a reload and Back show the marks of their search.
  const marked = { like: new Set(), unlike: new Set() }, kinds = ["like", "unlike"];
  let searched = "";
  const bar = () => element.querySelector(".marks-bar");
  const marksKey = () => JSON.stringify(kinds.map((kind) => [...marked[kind]].sort()));
  const shownId = () => element.querySelector(`button.tile-open[data-index="${current}"]`)?.closest("li")
    ?.querySelector("button.mark[data-id]")?.dataset.id;
  function showMarks() {
    element.querySelectorAll("button.mark[data-id]").forEach((button) => {
      button.setAttribute("aria-pressed", String(marked[button.dataset.mark].has(button.dataset.id)));
    });
    const box = bar(), good = marked.like.size, bad = marked.unlike.size;
    if (box) {
      box.querySelector(".marks-count").textContent =
        good || bad ? `Marked: ${good} good, ${bad} not this` : "No results marked";
      box.querySelector('[data-action="marks-search"]').disabled = marksKey() === searched;
      box.querySelector('[data-action="marks-clear"]').disabled = !(good || bad);
    }
    const detail = dialog(), id = shownId();
    if (!detail) return;
    for (const kind of kinds) {
      const button = detail.querySelector(`[data-action="mark-${kind}"]`);
      button.hidden = id === undefined;
      button.setAttribute("aria-pressed", String(id !== undefined && marked[kind].has(id)));
    }
    detail.querySelector(".marks-keys").hidden = id === undefined;
  }
  function toggle(kind, id) {
    if (id === undefined) return;
    if (marked[kind].has(id)) marked[kind].delete(id);
    else if (marked[kind].size < MAX_MARKS) { marked[kind].add(id); marked[kinds[1 - kinds.indexOf(kind)]].delete(id); }
    showMarks();
  }
  function loadMarks() {
    const box = bar();
    for (const kind of kinds) marked[kind] = new Set((box?.dataset[kind] || "").split(",").filter(Boolean));
    searched = marksKey();
    showMarks();
  }
  const searchAgain = () => trigger("marks", { like: [...marked.like], unlike: [...marked.unlike] });
  // After the results' own listeners (registered first): a tile or Previous/Next has set the dialog's picture.
  element.addEventListener("click", (event) => {
    const button = event.target.closest("button.mark[data-id]");
    const action = event.target.closest("[data-action]")?.dataset.action;
    if (button) toggle(button.dataset.mark, button.dataset.id);
    else if (action === "mark-like" || action === "mark-unlike") toggle(action.slice(5), shownId());
    else if (action === "marks-search") searchAgain();
    else if (action === "marks-clear") {  // the search shown had marks: search again without them
      marked.like.clear(); marked.unlike.clear();
      if (marksKey() !== searched) searchAgain();
    }
    showMarks();
  });
  element.addEventListener("keydown", (event) => {
    const kind = { "+": "like", "-": "unlike", "−": "unlike" }[event.key];
    if (dialog()?.open && kind && !(event.ctrlKey || event.metaKey || event.altKey)) {
      toggle(kind, shownId()); event.preventDefault();
    }
    showMarks();
  });
  watch("value", loadMarks);
  loadMarks();
}
""".replace("MAX_MARKS", str(MAX_MARKS))
