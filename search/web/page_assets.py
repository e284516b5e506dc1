"""The page's own CSS and JavaScript: the results grid, its detail dialog, blur_hash placeholders, deep links.

blur_hash is decoded in the browser (the standard algorithm, a 32x32 canvas per tile): the server sends the
~30-character hash instead of a rendered placeholder, and does no image work per search.
"""

from search.web.reading_chips import READINGS_CSS, READINGS_JS

CSS = """
#notice pre, #notice code { white-space: pre-wrap; overflow-wrap: anywhere; }
#notice > button, #notice .label-wrap { text-align: left; justify-content: space-between; }
#title h1 { font-size: 1.5em; margin: 0; }
#query-row, #mix-row, #status-row { flex-wrap: nowrap; align-items: end; }
#query-row > *:first-child, #mix-row > *:first-child, #status-row > *:first-child { min-width: 0; flex: 1 1 auto; }
#query-row button, #mix-row button, #status-row button { flex: 0 0 auto; width: auto; min-width: 5em; }
#examples { flex-wrap: nowrap; overflow-x: auto; gap: 6px; }
#examples button { flex: 0 0 auto; width: auto; white-space: nowrap; }
#status p { margin: 0; }
/* Contrast of at least 4.5:1 (axe) where the default theme falls short: labels, primary and hovered buttons, the
   selected tab in dark mode, the footer's API link. */
[data-testid="block-info"] { color: #3730a3; }
.dark [data-testid="block-info"] { color: #e0e7ff; }
button.primary, button.primary:hover, #copy-link:hover, #copy-link:active { background: #4f46e5; color: #ffffff; }
body:not(.dark) #tabs button[role="tab"][aria-selected="true"] { color: #3730a3; }
.dark #tabs button[role="tab"][aria-selected="true"] { color: #a5b4fc; }
body:not(.dark) .show-api, body:not(.dark) footer a, body:not(.dark) footer button,
body:not(.dark) .slider_input_container .min_value, body:not(.dark) .slider_input_container .max_value {
    color: #4b5563 !important; }
.dark .show-api, .dark footer a, .dark footer button, .dark .slider_input_container .min_value,
.dark .slider_input_container .max_value { color: #d1d5db !important; }
.dark [data-testid="checkbox-group"] label:hover, .dark [data-testid="checkbox-group"] label.selected,
.dark button.secondary:hover { background: #4338ca; color: #ffffff; }
/* A hidden progress tracker keeps the word "Error" of a re-run the page cancelled (same values as the last): out of
   the layout and the accessibility tree too, so a screen reader reading the status line does not hear it. */
#status [data-testid="status-tracker"].hide, #results [data-testid="status-tracker"].hide { display: none; }
/* A copied link shows on the button itself ("Copied ✓", as wide as "Copy link"): a note beside it covered the
   examples above it on a phone. "Link copied" is also said, for screen readers, by a status text out of sight and
   out of the row's flow, so it neither moves the status line nor covers anything. */
#status-row { position: relative; overflow: visible; }
#copy-note-box { position: absolute; right: 0; bottom: 100%; width: auto; min-width: 0; min-height: 0; padding: 0;
                 pointer-events: none; }
#copy-note { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
             white-space: nowrap; }
#results .grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 12px;
                 grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); }
@media (max-width: 600px) { #results .grid { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px; } }
#results li.tile { margin: 0; padding: 0; min-width: 0; }
#results .tile-open { display: block; width: 100%; aspect-ratio: 1; padding: 0; border: 0; border-radius: 8px;
                      overflow: hidden; cursor: zoom-in; background: var(--background-fill-secondary); }
#results .tile-open img { display: block; width: 100%; height: 100%; object-fit: cover; margin: 0;
                          background-size: cover; border-radius: 0; }
#results .tile-open:focus-visible { outline: 3px solid var(--color-accent); outline-offset: 2px; }
#results .tile-text { margin: 4px 0 0; font-size: 0.9em; line-height: 1.3; color: var(--body-text-color);
                      display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
#results .tile-meta { margin: 2px 0 0; font-size: 0.8em; color: var(--body-text-color); opacity: 0.85; }
#results .query-card { display: flex; gap: 12px; align-items: center; margin: 0 0 10px; }
#results .query-card img { width: 64px; height: 64px; object-fit: cover; border-radius: 6px; margin: 0; }
#results .query-card p { margin: 0; }
#results dialog.detail { width: min(980px, 94vw); max-height: 92vh; border: 0; border-radius: 12px; padding: 16px;
                         background: var(--background-fill-primary); color: var(--body-text-color); }
#results dialog.detail::backdrop { background: rgba(0, 0, 0, 0.65); }
#results .detail-body { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; }
@media (max-width: 700px) { #results .detail-body { grid-template-columns: minmax(0, 1fr); } }
#results .detail-img { width: 100%; max-height: 62vh; object-fit: contain; margin: 0; }
#results .detail-title { font-size: 1.15em; margin: 0 0 8px; }
#results .detail-info dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 8px 0; }
#results .detail-info dd { margin: 0; overflow-wrap: anywhere; }
#results .detail-actions { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
#results .detail-actions button { padding: 6px 12px; border-radius: 6px; cursor: pointer;
    border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill);
    color: var(--button-secondary-text-color); }
/* Fixed colours where the theme's fall under 4.5:1 (axe): indigo-600 under white text, links per mode. */
#results .detail-actions button.primary { background: #4f46e5; color: #ffffff; border-color: transparent; }
#results a, #notice a { color: #3730a3; }
.dark #results a, .dark #notice a { color: #c7d2fe; }
#results .load-more { display: block; margin: 16px auto 4px; padding: 8px 28px; border-radius: 8px; cursor: pointer;
    border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill);
    color: var(--button-secondary-text-color); font-size: 1em; }
#results .load-more:focus-visible,
#results .detail-actions button:focus-visible { outline: 3px solid var(--color-accent); outline-offset: 2px; }
"""

BLURHASH_JS = r"""
const B83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
const d83 = (s) => {
  let v = 0;
  for (const c of s) { const i = B83.indexOf(c); if (i < 0) return NaN; v = v * 83 + i; }
  return v;
};
const toLinear = (v) => { const x = v / 255; return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
const toSrgb = (v) => { const x = Math.max(0, Math.min(1, v));
  return Math.round(x <= 0.0031308 ? x * 12.92 * 255 + 0.5 : (1.055 * Math.pow(x, 1 / 2.4) - 0.055) * 255 + 0.5); };
const signPow = (v, e) => Math.sign(v) * Math.pow(Math.abs(v), e);
function blurhashURL(hash, w = 32, h = 32) {
  const size = d83(hash[0]), ny = Math.floor(size / 9) + 1, nx = (size % 9) + 1;
  if (!(hash.length === 4 + 2 * nx * ny)) return null;
  const maxValue = (d83(hash[1]) + 1) / 166, colors = [];
  for (let i = 0; i < nx * ny; i++) {
    if (i === 0) {
      const v = d83(hash.substring(2, 6));
      colors.push([toLinear(v >> 16), toLinear((v >> 8) & 255), toLinear(v & 255)]);
    } else {
      const v = d83(hash.substring(4 + i * 2, 6 + i * 2));
      const quantised = [Math.floor(v / 361), Math.floor(v / 19) % 19, v % 19];
      colors.push(quantised.map((q) => signPow((q - 9) / 9, 2) * maxValue));
    }
  }
  if (colors.flat().some(Number.isNaN)) return null;
  const canvas = document.createElement("canvas"); canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), pixels = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let r = 0, g = 0, b = 0;
    for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) {
      const basis = Math.cos((Math.PI * x * i) / w) * Math.cos((Math.PI * y * j) / h), c = colors[i + j * nx];
      r += c[0] * basis; g += c[1] * basis; b += c[2] * basis;
    }
    const p = 4 * (x + y * w);
    pixels.data.set([toSrgb(r), toSrgb(g), toSrgb(b), 255], p);
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL();
}
"""

RESULTS_JS = BLURHASH_JS + r"""
let current = -1, focusFrom = -1, shownOnce = false, restoring = false;
const dialog = () => element.querySelector("dialog.detail");
const tiles = () => Array.from(element.querySelectorAll("button.tile-open"));
// The detail is read from the tile shown now, every time: gradio updates the results in place.
function openDetail(index) {
  const tile = element.querySelector(`button.tile-open[data-index="${index}"]`), box = dialog();
  if (!tile || !box) return;
  current = index;
  const detail = document.createElement("template");
  detail.innerHTML = tile.dataset.detail || "";  // the server's HTML, every text in it escaped (render.py)
  box.querySelector(".detail-body").replaceChildren(detail.content);
  box.querySelector('[data-action="prev"]').disabled = index <= 0;
  box.querySelector('[data-action="next"]').disabled = index >= tiles().length - 1;
  if (!box.open) box.showModal();
  // Replacing the body drops focus from a link inside it; keep it in the dialog so the arrow keys keep working.
  if (!box.contains(document.activeElement) || document.activeElement === document.body)
    box.querySelector('[data-action="similar"]').focus();
}
function rendered() {
  const results = element.querySelector(".results");
  if (!results) return;
  const url = new URL(window.location.href), theme = url.searchParams.get("__theme");
  url.search = results.dataset.link || "";
  if (theme) url.searchParams.set("__theme", theme);
  // A new search is a step in the browser's history; the first results, "Load more" and Back/Forward are not. After
  // Back/Forward the address is the browser's: results of an address left already (Back twice) leave it alone.
  if (restoring) {  // gradio may drop a restore sent while one runs: ask again for where the browser is now
    restoring = url.href !== window.location.href;
    if (restoring && retries-- > 0) restore();
  } else if (url.href !== window.location.href) {
    if (shownOnce) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
  }
  shownOnce = true;
  element.querySelectorAll("img[data-blurhash]").forEach((img) => {
    const data = blurhashURL(img.dataset.blurhash);
    if (data) img.style.backgroundImage = `url(${data})`;
  });
  if (focusFrom >= 0) { tiles()[focusFrom]?.focus(); focusFrom = -1; }
}
element.addEventListener("click", (event) => {
  const tile = event.target.closest("button.tile-open");
  if (tile) { openDetail(Number(tile.dataset.index)); return; }
  const action = event.target.closest("[data-action]")?.dataset.action;
  if (action === "prev") openDetail(current - 1);
  else if (action === "next") openDetail(current + 1);
  else if (action === "close") dialog().close();
  else if (action === "similar" || action === "mix") { dialog().close(); trigger(action, { index: current }); }
  else if (action === "more") {  // the next page; focus moves to its first picture once it is shown
    focusFrom = tiles().length; event.target.disabled = true; event.target.textContent = "Loading…";
    trigger("more", { shown: focusFrom });
  }
});
element.addEventListener("keydown", (event) => {
  const box = dialog();
  if (box && box.open) {
    if (event.key === "ArrowRight") { openDetail(current + 1); event.preventDefault(); }
    else if (event.key === "ArrowLeft") { openDetail(current - 1); event.preventDefault(); }
    return;  // Esc: the dialog closes itself and gives focus back to the tile
  }
  const all = tiles(), at = all.indexOf(event.target);
  if (at < 0) return;
  const columns = all.filter((tile) => tile.offsetTop === all[0].offsetTop).length || 1;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  if (step === undefined) return;
  all[Math.max(0, Math.min(all.length - 1, at + step))].focus();
  event.preventDefault();
});
// "close" comes a moment after the dialog closed; a key pressed in between may already have moved the focus on.
element.addEventListener("close", () => {
  if (!document.activeElement?.classList.contains("tile-open")) tiles()[current]?.focus();
}, true);
// Back/Forward: the server runs the search of the address the browser went to, and sets the controls to it.
let retries = 0, restoreTimer = null;
const restore = () => trigger("restore", { search: window.location.search });
window.addEventListener("popstate", () => {  // Back pressed twice quickly: the second address only
  dialog()?.close(); restoring = true; retries = 2;
  clearTimeout(restoreTimer); restoreTimer = setTimeout(restore, 100);
});
watch("value", rendered);
rendered();
"""

COPY_LINK_JS = r"""
async () => {
  const url = window.location.href, button = document.querySelector("#copy-link");
  try { await navigator.clipboard.writeText(url); }
  catch (error) {  // no clipboard API (plain http on another host): copy through a selected text field
    const field = document.createElement("textarea"); field.value = url; document.body.appendChild(field);
    field.select(); document.execCommand("copy"); field.remove();
  }
  const note = document.querySelector("#copy-note");
  // The button's own label says it for a few seconds (its text node only: Gradio keeps its other children).
  const label = button && [...button.childNodes].find((node) => node.nodeType === 3 && node.data.trim());
  if (label) {
    if (!button.dataset.label) button.dataset.label = label.data;
    label.data = "Copied ✓";
  }
  if (note) note.textContent = "Link copied";  // read out by screen readers (role=status), never shown
  // Back to "Copy link" after a few seconds, or at once when the page shows another search (another link).
  const since = Date.now();
  clearInterval(window.copyNoteTimer);
  window.copyNoteTimer = setInterval(() => {
    if (Date.now() - since < 4000 && window.location.href === url) return;
    clearInterval(window.copyNoteTimer);
    if (note) note.textContent = "";
    if (label) label.data = button.dataset.label;
  }, 200);
  if (button) button.dataset.copied = url;
}
"""

# A failed "Load more" (busy server, lost connection) leaves the results as they were: give the button back.
MORE_FAILED_JS = ("() => { const button = document.querySelector('#results button.load-more');"
                  " if (button) { button.disabled = false; button.textContent = 'Load more'; } }")
FOCUS_MIX_TEXT_JS = "() => { document.querySelector('#mix-text textarea, #mix-text input')?.focus(); }"

# The options panel is one Gradio row holding forms (runs of controls) and notes (score hint, filters not
# offered). Each gets the row's full width, and controls wrap at a width where every label word and dropdown
# choice fits: squeezed side by side, a note became one word-breaking column and the Cut-off choice was cut.
OPTIONS_CSS = """
#options .row { flex-wrap: wrap; }
#options .row > * { flex: 1 1 100%; min-width: 0; }
#options .row > .form > * { flex: 1 1 16em; min-width: min(16em, 100%); }
#options-missing, #score-hint { overflow-wrap: normal; word-break: normal; }
"""
CSS += OPTIONS_CSS

# The chips of a query's readings (search/web/reading_chips.py), in blocks of their own.
CSS += READINGS_CSS
RESULTS_JS += READINGS_JS


def rerun_once_js(state_at: int) -> str:
    """Run before a re-run: cancels it (a throw stops gradio's call) when its values are those of the last one, as
    with Enter and then leaving a typed filter, so a refused value is said once. `state_at`: the session's input,
    left out of the comparison."""
    return ("(...values) => { const key = JSON.stringify(values.filter((value, at) => at !== " + str(state_at) +
            ")); if (key === window.searchLastRerun) throw new Error('unchanged: already run');"
            " window.searchLastRerun = key; return values; }")

# Marks on results ("good", "not this"): their own block (search/web/marks_assets.py).
from search.web.marks_assets import MARKS_CSS, MARKS_JS  # noqa: E402

CSS += MARKS_CSS
RESULTS_JS += MARKS_JS
