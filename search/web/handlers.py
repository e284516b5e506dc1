"""What the page's events and the API endpoints call: searches rendered as the results grid and a status line."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from search.errors import BadQueryError, SearchError, UnknownItemError
from search.query.engine import Query, SearchEngine, Term, checked_threshold, checked_top_k
from search.query.options import MAX_OFFSET, SearchOptions
from search.types import Hit
from search.web.links import LinkState, parse_link
from search.web.marks import MARK_KEYS, event_marks, marks_note, marks_of, with_marks
from search.web.options_panel import available_options, clean_options, link_options, search_options
from search.web.page_settings import Settings, settings_for_link, settings_from_link
from search.web.page_text import hits_json, refused_link_note, status_text, unknown_item_note
from search.web.public_errors import bug_message, shown_error
from search.web.reading_chips import chips_html
from search.web.render import results_html
from search.web.request_values import checked_exclude, checked_weight, combined_query
from search.web.startup import Startup, mode_defaults

logger = logging.getLogger(__name__)
MORE_FETCHES = 3
"""Pages one "Load more" may fetch to fill its page when a deeper search repeats hits already shown."""



def api_options(params: Mapping[str, Any] | None) -> SearchOptions | None:
    """The API's optional parameters as SearchOptions (None when none was given: the plain ranking)."""
    return None if params is None else SearchOptions.from_params(params)


def as_gr_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler so every failure reaches the browser and the client as a readable one-line gr.Error."""

    @functools.wraps(fn)  # keeps the signature: API parameter names, and gr.EventData / gr.Request injection
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except SearchError as exc:
            raise shown_error(str(exc), args) from exc
        except Exception as exc:  # a bug: gradio would show an empty message; say what kind, log the rest
            logger.exception("unexpected failure in %s", fn.__name__)
            raise shown_error(bug_message(exc)) from exc

    return wrapped


@dataclass(frozen=True, slots=True)
class Request:
    """One search the page ran: enough to run it again with a new top-k or threshold, and to link to it."""

    mode: str  # "text", "image" or "similar"
    what: str  # for the status line
    query: Query | None = None
    parts: tuple[str, str | None, float, str] = ("", None, 1.0, "")
    """The query's text, picture, text weight and Exclude field: what a changed weight or Exclude rebuilds it from."""
    item_id: str | None = None
    link: LinkState = field(default_factory=LinkState)
    options: dict[str, str] = field(default_factory=dict)
    """The options panel's values that differ from its defaults (options_panel.py)."""


@dataclass(frozen=True, slots=True)
class View:
    """What one tab shows: the rendered results, the status line, the hits (for clicks) and the search."""

    html: str = ""
    status: str = ""
    hits: tuple[Hit, ...] = ()
    request: Request | None = None
    page: tuple[int, float] = (0, 0.0)
    """top-k and threshold of the search: "Load more" asks for the next page with the same ones."""


@dataclass(frozen=True, slots=True)
class Session:
    """One visitor's page: the open tab and each tab's last view (switching tabs shows that tab's own results)."""

    tab: str = "text"
    views: dict[str, View] = field(default_factory=dict)

    @property
    def view(self) -> View:
        """The open tab's view."""
        return self.views.get(self.tab, View())

    def showing(self, view: View) -> Session:
        """This session with `view` in the open tab."""
        return replace(self, views={**self.views, self.tab: view})


Shown = tuple[str, str, Session]  # results HTML, status line, session




class SearchUI:
    """Handlers over one engine: the JSON API endpoints and the page's events."""

    def __init__(self, startup: Startup) -> None:
        self.engine: SearchEngine = startup.engine
        self.defaults = mode_defaults(self.engine)
        self.available = available_options(self.engine)
        self.carried = (*self.available, *MARK_KEYS)  # the options a search carries: the panel's, and the marks

    # --- API: exactly one output each, a JSON list of hits ---
    def search_text(self, query: str, top_k: float, threshold: float, options: Mapping[str, Any] | None = None
                    ) -> list[dict]:
        """Find pictures that match a text description, best first.

        Args:
            query: what the picture shows, in words (up to 1000 characters), e.g. "a foggy forest at dawn"
            top_k: how many hits at most (0 to 1000)
            threshold: keep hits whose cosine similarity is at least this (-1 to 1; a text scores lower than a picture)
        """
        return hits_json(self.engine.search_text(query, checked_top_k(top_k),
                                                 checked_threshold(threshold), api_options(options)))

    def search_image(self, image: str | None, top_k: float, threshold: float,
                     options: Mapping[str, Any] | None = None) -> list[dict]:
        """Find pictures that look like an example picture, best first.

        Args:
            image: the example picture: a public http(s) URL of a JPEG, PNG, GIF, WebP, BMP or TIFF (up to 10 MB)
            top_k: how many hits at most (0 to 1000)
            threshold: keep hits whose cosine similarity is at least this (-1 to 1)
        """
        if image is None:
            raise BadQueryError("no image given: upload a JPEG, PNG, GIF, WebP, BMP or TIFF file")
        return hits_json(self.engine.search_image(image, checked_top_k(top_k),
                                                  checked_threshold(threshold), api_options(options)))

    def similar(self, id: str, top_k: float, threshold: float, options: Mapping[str, Any] | None = None
                ) -> list[dict]:
        """Find pictures like one in the collection (more like this), the item itself left out.

        Args:
            id: the `id` of a hit returned by another search
            top_k: how many hits at most (0 to 1000)
            threshold: keep hits whose cosine similarity is at least this (-1 to 1)
        """
        return hits_json(self.engine.similar(str(id or "").strip(), checked_top_k(top_k),
                                             checked_threshold(threshold), api_options(options)))

    def understood(self, query: str, options: Mapping[str, Any] | None = None) -> list[dict]:
        """What search_text reads a text query's words as: the places, dates and orientation it filters by.

        Args:
            query: the text given to search_text, e.g. "beach in Portugal 2019"
        """
        if not str(query or "").strip():  # no words ("more like these" from marks alone): nothing to read
            return []
        return [reading.as_dict() for reading in self.engine.understood(Query((Term(text=query),)),
                                                                        api_options(options))]

    # --- page events ---
    def ui_text(self, query: str, exclude: str, top_k: float, threshold: float,  # noqa: PLR0917
                session: Session | None = None, options: Mapping[str, Any] | None = None) -> Shown:
        """Text tab: the query minus excluded terms."""
        session = session or Session()
        text = str(query or "").strip()
        request = Request("text", f"“{text[:60]}”", link=LinkState(text=text), options=self.options(options),
                          query=combined_query(query, None, 1.0, checked_exclude(exclude)),
                          parts=(str(query or ""), None, 1.0, exclude or ""))
        return self.show(replace(session, tab="text"), request, top_k, threshold)

    def ui_image(self, image: str | None, text: str, weight: float, exclude: str, top_k: float,  # noqa: PLR0917
                 threshold: float, session: Session | None = None, options: Mapping[str, Any] | None = None
                 ) -> Shown:
        """Image tab: the image, optionally mixed with text, minus excluded terms."""
        session = session or Session()
        # Gradio passes one positional argument per input component, hence seven.
        if image is None:
            raise BadQueryError("no image yet: upload one, paste one or take a webcam picture")
        request = Request("image", "the image", options=self.options(options),
                          query=combined_query(text, image, checked_weight(weight), checked_exclude(exclude)),
                          parts=(text or "", image, weight, exclude or ""))
        return self.show(replace(session, tab="image"), request, top_k, threshold)

    def ui_similar(self, top_k: float, threshold: float, session: Session, evt: gr.EventData,
                   options: Mapping[str, Any] | None = None) -> Shown:
        """"More like this" from the detail view: the items nearest to the picture's stored embedding."""
        return self.similar_to(self.picked(session, evt).id, top_k, threshold, session, options)

    def similar_to(self, item_id: str, top_k: float, threshold: float, session: Session,
                   options: Mapping[str, Any] | None = None) -> Shown:
        """More like `item_id`, shown in the open tab with the picture itself as the query."""
        request = Request("similar", f"more like {item_id}", item_id=item_id, link=LinkState(item_id=item_id),
                          options=self.options(options))
        return self.show(session, request, top_k, threshold)

    def options(self, values: Mapping[str, Any] | None) -> dict[str, str]:
        """The panel's values as option params, checked now so a bad one is refused before any model work."""
        options = clean_options(values or {}, self.carried)
        search_options(options)
        return options

    def picked(self, session: Session, evt: gr.EventData) -> Hit:
        """The hit a page event names by its index in the open tab's results."""
        hits, index = session.view.hits, getattr(evt, "_data", None) or {}
        position = index.get("index") if isinstance(index, dict) else None
        if not isinstance(position, int) or not 0 <= position < len(hits):
            raise BadQueryError("that result is no longer shown; search again")
        return hits[position]

    def ui_rerun(self, top_k: float, text_threshold: float, image_threshold: float, session: Session,  # noqa: PLR0917
                 options: Mapping[str, Any] | None = None, mix: tuple[float, str] | None = None) -> Shown:
        """A moved slider, a changed option or Exclude: repeat the open tab's search with them (from its first page).
        mix: the text weight and the Exclude field (None: the search's own)."""
        last = session.view.request
        if last is None:  # nothing to repeat: leave the page as it is (a search may be on its way)
            return gr.skip(), gr.skip(), gr.skip()
        if options is not None:  # the panel's values; the marks stay the search's own
            last = replace(last, options=with_marks(self.options(options), last.options))
        if mix is not None and last.mode != "similar":  # "more like this" has no text to weigh or steer
            text, image, weight, _ = last.parts
            weight = checked_weight(mix[0]) if last.mode == "image" else weight
            last = replace(last, parts=(text, image, weight, mix[1] or ""),
                           query=combined_query(text, image, weight, checked_exclude(mix[1])))
        threshold = text_threshold if last.mode == "text" else image_threshold
        page = (checked_top_k(top_k), checked_threshold(threshold))
        if (last, page) == (session.view.request, session.view.page):  # e.g. a deep link setting the panel
            return gr.skip(), gr.skip(), gr.skip()  # nothing changed: keep the pages loaded so far
        return self.show(session, last, top_k, threshold)

    def ui_marks(self, top_k: float, text_threshold: float, image_threshold: float, session: Session,
                 evt: gr.EventData) -> Shown:
        """"Search again with marks" (or "Clear marks"): the open tab's search with the marks the page sends."""
        last = session.view.request
        if last is None:
            raise BadQueryError("nothing to search again; search first, then mark results")
        marked = replace(last, options=self.options(with_marks(last.options, event_marks(getattr(evt, "_data", None)))))
        threshold = text_threshold if last.mode == "text" else image_threshold
        return self.show(session, marked, top_k, threshold)

    def ui_more(self, session: Session) -> Shown:
        """"Load more": the next page of the open tab's search, after the hits already shown (stable order)."""
        view = session.view
        if view.request is None or not view.hits:
            raise BadQueryError("nothing to load more of; search first")
        (top_k, threshold), shown = view.page, len(view.hits)
        if shown > MAX_OFFSET:
            raise BadQueryError(f"at most {MAX_OFFSET} results can be paged through; refine the search instead")
        start = time.perf_counter()
        seen, page, offset = {hit.id for hit in view.hits}, [], shown
        for _ in range(MORE_FETCHES):
            # A deeper search can rank a hit already shown lower down (an approximate graph asked for more
            # candidates under a filter): it is left out, and the page filled from the one after.
            found = self._hits(view.request, top_k, threshold, search_options(view.request.options, offset=offset))
            page += [hit for hit in found if hit.id not in seen]
            seen.update(hit.id for hit in found)
            more = len(found) == top_k
            if len(page) >= top_k or not more or offset + top_k > MAX_OFFSET:
                break
            offset += top_k
        return self.render(session, view.request, (*view.hits, *page[:top_k]), (top_k, threshold),
                           (time.perf_counter() - start, more))

    def ui_tab(self, tab: str, session: Session) -> Shown:
        """A tab was opened: show its own last results (or nothing yet), not the other tab's."""
        if tab == session.tab:  # e.g. the select gradio sends for the open tab while the page loads
            return gr.skip(), gr.skip(), gr.skip()
        session = replace(session, tab=tab)
        return session.view.html, session.view.status, session

    def ui_load(self, request: gr.Request) -> tuple[str, Settings, str, str, Session]:
        """Page load: the search the URL asks for (`?q=`, `?id=`), else the first example."""
        return self.ui_open(parse_link(dict(request.query_params) if request is not None else {}), Session())

    def ui_open(self, link: LinkState, session: Session) -> tuple[str, Settings, str, str, Session]:
        """What a link shows (page load, browser Back/Forward): its search with its settings and options, and the
        query and settings for the page's controls; a bad value is left at its default, so the page still loads."""
        settings = settings_from_link(link, self.defaults.text_threshold, self.defaults.image_threshold)
        options = link_options(link.options, self.carried)
        session, note = replace(session, tab=settings.tab), ""
        if link.item_id:
            try:
                shown = self.similar_to(link.item_id, settings.top_k, settings.image_threshold, session, options)
                return "", settings, *shown
            except UnknownItemError:  # an old link to another index: say so, and still never an empty page
                logger.info("a link asked for an item this index lacks; showing the default search")
                note = unknown_item_note(link.item_id)
        if not link.text and settings.tab == "image":  # an uploaded picture's search: the tab's own results
            return "", settings, session.view.html, session.view.status, session
        text = link.text or next(iter(self.defaults.text_examples), "")
        settings = replace(settings, tab="text")
        if not text:  # no examples (a bundle without descriptions): open on a sample of it, never an empty page
            html, status, session = self.opening_sample(session)
        else:
            try:
                html, status, session = self.ui_text(text, settings.exclude, settings.top_k, settings.text_threshold,
                                                     session, options)
            except BadQueryError as exc:  # the link's search as a whole cannot run: say why, never an empty page
                if link.empty:
                    raise
                logger.info("a link's search was refused (%s); showing the default search", exc)
                text, settings, html, status, session = self.ui_open(LinkState(), session)
                note = refused_link_note(str(exc))
        return text, settings, html, note + status, session

    def opening_sample(self, session: Session) -> Shown:
        """The pictures chosen at build time to show a collection's range (the manifest's `ui.sample`)."""
        catalog = self.engine.bundle.catalog
        hits = tuple(catalog.hit(catalog.row_of(item_id), math.nan) for item_id in self.defaults.sample)  # no score
        if not hits:
            return "", "Type a description, or give an example picture in the Image tab.", session
        html = results_html(list(hits), self.engine.bundle.root, "")
        status = (f"{len(hits)} pictures that show the range of this collection: type a description, or open one "
                  "and choose More like this.")
        return html, status, session.showing(View(html, status, hits))

    def _linked(self, tab: str, request: Request, page: tuple[int, float]) -> dict[str, str]:
        default = self.defaults.text_threshold if request.mode == "text" else self.defaults.image_threshold
        return settings_for_link(tab, request.mode, request.parts, page, default)

    def show(self, session: Session, request: Request, top_k: float, threshold: float) -> Shown:
        """Search, time it, and render the results, the status line and the session."""
        k, limit = checked_top_k(top_k), checked_threshold(threshold)
        start = time.perf_counter()
        hits = self._hits(request, k, limit, search_options(request.options))
        return self.render(session, request, tuple(hits), (k, limit), (time.perf_counter() - start, len(hits) == k))

    def render(self, session: Session, request: Request, hits: tuple[Hit, ...], page: tuple[int, float],
               timing: tuple[float, bool]) -> Shown:
        """The results, the status line and the session for `hits`; timing: (seconds, whether more may follow)."""
        (seconds, full), limit = timing, page[1]
        # Only for the empty-result hint: how far the threshold is from the closest item.
        closest = replace(search_options(request.options), cutoff="flat")  # among the items the filters keep
        best = None if hits else next((hit.score for hit in self._hits(request, 1, -1.0, closest)), None)
        status = status_text(list(hits), seconds, limit, best, request.what + marks_note(request.options),
                             closest.filters.active)
        catalog = self.engine.bundle.catalog
        query_hit = catalog.hit(catalog.row_of(request.item_id), 1.0) if request.item_id else None
        link = replace(request.link, options=request.options,
                       settings=self._linked(session.tab, request, page)).query_string()
        more = full and page[0] > 0 and len(hits) <= MAX_OFFSET
        html = results_html(list(hits), self.engine.bundle.root, link, query_hit, more, marks_of(request.options))
        if request.query is not None:  # the filters read from a text query, as removable chips above its results
            html = chips_html(self.engine.understood(request.query, search_options(request.options))) + html
        view = View(html, status, hits, request, page)
        return html, status, session.showing(view)

    def _hits(self, request: Request, top_k: int, threshold: float, options: SearchOptions) -> list[Hit]:
        if request.item_id is not None:
            return self.engine.similar(request.item_id, top_k, threshold, options)
        assert request.query is not None
        return self.engine.search(request.query, top_k, threshold, options)
