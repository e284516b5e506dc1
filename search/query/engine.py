"""SearchEngine: text, image, similar-item and combined queries over one bundle, returning hits."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from search.bundle.hub import fetch_bundle
from search.bundle.store import Bundle
from search.config import EngineConfig
from search.errors import BadQueryError, EncoderMismatchError, SearchError, UnknownItemError
from search.model.batching import MAX_PICTURE_BATCH, MAX_TEXT_BATCH, model_work
from search.model.encoder import ClipEncoder, same_model
from search.model.images import load_image
from search.model.limits import WorkLimiter, shared_limiter
from search.query.feedback import moved
from search.query.options import SearchOptions
from search.query.retrieval import MAX_COLLAPSED_DEPTH, Retriever
from search.query.understand import Reading, Vocabulary, read_query, with_readings
from search.types import FeatureVector, Hit

logger = logging.getLogger(__name__)

MAX_TOP_K = 1000
MAX_NEGATIVES = 10
MAX_QUERY_CHARS = 1000  # the tokenizer keeps 77 tokens; longer text only costs time
# Query pictures are decoded with a short side of at least this many times the model's input side: a JPEG at
# reduced size, a big picture of another format shrunk before conversion. At 2x the model's antialiased resize
# sees nearly the pixels of a full decode (demo: an item scores 1.000000 against itself, 0.998 at 1x).
QUERY_DECODE_MARGIN = 2


@dataclass(frozen=True, slots=True)
class Term:
    """One positive part of a combined query: a text or an image (path, bytes or PIL image), weighted."""

    text: str | None = None
    image: Any = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Query:
    """A combined query: weighted positive terms minus negative texts (rclip-style)."""

    positives: tuple[Term, ...]
    negatives: tuple[str, ...] = ()


class SearchEngine:
    """Answers queries against one bundle with the encoder it was built with."""

    def __init__(self, encoder: ClipEncoder, bundle: Bundle, text_cache_size: int = 1024,
                 limiter: WorkLimiter | None = None, batch: bool = True) -> None:
        expected = bundle.encoder_spec
        actual = encoder.spec.resolved(Path.cwd())
        if not same_model(actual, expected):
            raise EncoderMismatchError(
                f"index {bundle.label} was built with model {expected}, not {actual}; load it with the "
                "model its manifest names, or rebuild the index with this model")
        if encoder.dim != bundle.manifest.dim:
            raise EncoderMismatchError(
                f"model {actual} makes {encoder.dim}-d vectors but index {bundle.label} holds "
                f"{bundle.manifest.dim}-d ones; rebuild the index with this model")
        self.encoder = encoder
        self.bundle = bundle
        # Every decode and encode goes through one limiter, whichever route asked: that bounds a burst's memory.
        self.limiter = limiter or shared_limiter()
        self.decode_side = QUERY_DECODE_MARGIN * encoder.input_side
        # Concurrent encodes of one kind share a model call (search/model/batching.py); a lone one runs at once.
        # The encoder's methods are looked up per call, as a direct call would (tests wrap them on the instance).
        self._text_work = model_work(lambda texts: self.encoder.encode_text(texts),  # noqa: PLW0108
                                     self.limiter, MAX_TEXT_BATCH, batch)
        self._picture_work = model_work(lambda pictures: self.encoder.encode_preprocessed(pictures),  # noqa: PLW0108
                                        self.limiter, MAX_PICTURE_BATCH, batch)
        # Examples, slider moves and "more like this" round trips repeat the same texts; a hit costs
        # well under a millisecond instead of ~9-17 ms of model time. lru_cache is thread-safe for Gradio's workers.
        self._text_vector = functools.lru_cache(maxsize=text_cache_size)(self._encode_text)
        self.retriever = Retriever(bundle.index, bundle.embeddings, bundle.catalog, keywords=bundle.keywords)
        self.vocabulary = Vocabulary.of(bundle.catalog.attributes)

    def _encode_text(self, text: str) -> FeatureVector:
        # only on a cache miss: a cached text costs no model work
        vector = self._text_work(text).copy()  # a row of its batch: kept alone, not with its batch-mates
        vector.flags.writeable = False  # shared between callers through the cache
        return vector

    def warm_up(self) -> None:
        """Encode a picture and a text once on each model thread before serving: the libraries' first-call set-up
        (oneDNN primitives, ONNX Runtime's and the allocator's buffers) then happens at start-up instead of in the
        first visitors' queries, and the memory it keeps is taken before the server's RSS is watched."""
        picture = Image.new("RGB", (self.encoder.input_side, self.encoder.input_side), (128, 128, 128))
        self.limiter.on_every_thread(lambda: (self.encoder.encode_images([picture]),
                                              self.encoder.encode_text(["a photo"])))

    def clear_text_cache(self) -> None:
        """Forget cached text vectors (benchmarks measure the uncached path with it)."""
        self._text_vector.cache_clear()

    def search_text(self, text: str, top_k: int = 10, threshold: float = 0.0,
                    options: SearchOptions | None = None) -> list[Hit]:
        """Items that match a text description; an empty text with items marked good: items like those."""
        likes_only = options is not None and isinstance(text, str) and not text.strip() and options.like
        return self.search(Query(() if likes_only else (Term(text=text),)), top_k, threshold, options)

    def search_image(self, image: Any, top_k: int = 10, threshold: float = 0.0,
                     options: SearchOptions | None = None) -> list[Hit]:
        """Items that look like an image (a path, bytes, file object or PIL image)."""
        return self.search(Query((Term(image=image),)), top_k, threshold, options)

    def similar(self, item_id: str, top_k: int = 10, threshold: float = 0.0,
                options: SearchOptions | None = None) -> list[Hit]:
        """Items like a collection item, from its stored embedding (moved by the options' marks); the item itself is
        left out."""
        top_k, threshold = _check_limits(top_k, threshold, options)
        row = self.bundle.catalog.row_of(str(item_id))
        vector = self.bundle.embeddings[row]
        if options is not None and options.marked:
            vector = self.marked_vector(vector, options)
        return self.search_vector(vector, top_k, threshold, options, exclude_row=row)

    def search(self, query: Query, top_k: int = 10, threshold: float = 0.0,
               options: SearchOptions | None = None) -> list[Hit]:
        """Items nearest to the weighted sum of the positive terms minus the negative texts; a one-text query's
        places, dates and orientation (`understood`) filter it unless the options say not to."""
        top_k, threshold = _check_limits(top_k, threshold, options)
        vector, text = self.query_vector(query, options), _keyword_text(query)
        options = with_readings(options or SearchOptions(), self.understood(query, options))
        return self.search_vector(vector, top_k, threshold, options, text=text)

    def understood(self, query: Query, options: SearchOptions | None = None) -> tuple[Reading, ...]:
        """What a one-text query's words are read as (search/query/understand.py): the filters `search` adds."""
        return read_query(_keyword_text(query), self.vocabulary, options or SearchOptions())

    def search_vector(self, vector: FeatureVector, top_k: int = 10, threshold: float = 0.0,
                      options: SearchOptions | None = None, *, exclude_row: int | None = None,
                      text: str | None = None) -> list[Hit]:
        """Hits for a unit query vector; the defaults (no options) give exactly the plain nearest items.

        `text`: the text of a text query, whose keyword matches are fused in where the bundle has a keyword index.
        """
        top_k, threshold = _check_limits(top_k, threshold, options)
        options = options or SearchOptions()
        fused = text is not None and options.keywords and self.retriever.fusion is not None
        if options.plain and not fused:
            return self._nearest(vector, top_k, threshold, exclude_row)
        ranked = self.retriever.ranked(vector, top_k, threshold, options, exclude_row=exclude_row,
                                       text=text if fused else None)
        catalog = self.bundle.catalog
        return [catalog.hit(int(row), float(score), int(folded)) for row, score, folded
                in zip(ranked.rows, ranked.scores, ranked.duplicates, strict=True)]

    def query_vector(self, query: Query, options: SearchOptions | None = None) -> FeatureVector:
        """The unit vector a combined query searches with, moved by the options' marks (like, unlike); with items
        marked good, a query of no terms searches for items like those."""
        if options is not None and options.marked:
            base = self.query_vector(query) if query.positives or query.negatives else None
            return self.marked_vector(base, options)
        if not query.positives:
            raise BadQueryError("empty query: type a description or give an image")
        if len(query.negatives) > MAX_NEGATIVES:  # each one is a text encode: refused before anything runs
            raise BadQueryError(f"the query excludes {len(query.negatives)} terms; keep it to {MAX_NEGATIVES} "
                                "or fewer")
        total = np.zeros(self.encoder.dim, np.float32)
        for term in query.positives:
            total += _checked_weight(term.weight) * self._term_vector(term)
        negatives = [_checked_text(text) for text in query.negatives]
        for text in negatives:
            total -= self._text_vector(text)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise BadQueryError("the query terms cancel each other out; drop a negative term or change a weight")
        return total / norm

    def marked_vector(self, base: FeatureVector | None, options: SearchOptions) -> FeatureVector:
        """`base` (None: no query of its own) moved toward the stored vectors of the items the options like and
        away from those they unlike (search/query/feedback.py); an id not in this index is refused, named."""
        liked, unliked = (self.bundle.embeddings[self._marked_rows(ids, name)]
                          for ids, name in ((options.like, "like"), (options.unlike, "unlike")))
        return moved(base, liked, unliked)

    def _marked_rows(self, ids: tuple[str, ...], name: str) -> list[int]:
        rows = []
        for item_id in ids:
            try:
                rows.append(self.bundle.catalog.row_of(item_id))
            except UnknownItemError:  # a parameter's value, not a path: the caller's request is what is wrong
                raise BadQueryError(f"{name} names {item_id[:60]!r}, which is not in this index; mark items "
                                    "from this index's results") from None
        return rows

    def _term_vector(self, term: Term) -> FeatureVector:
        if (term.text is None) == (term.image is None):
            raise BadQueryError("each query term needs exactly one of a text or an image")
        if term.image is not None:
            image, side = term.image, self.decode_side  # the decode in a slot of its own: it takes the memory
            pixels = self.limiter.run(lambda: self.encoder.preprocess_images([load_image(image, min_side=side)])[0])
            return self._picture_work(pixels)
        return self._text_vector(_checked_text(term.text))

    def _nearest(self, vector: FeatureVector, top_k: int, threshold: float, exclude_row: int | None = None
                 ) -> list[Hit]:
        wanted = top_k + (exclude_row is not None)
        rows, scores = self.bundle.index.query(vector, wanted)
        # Scores come rounded from the index: the threshold sees exactly the number the caller is shown.
        # Ties are ordered by row so that equal scores always come back in the same order.
        kept = sorted(((score, row) for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
                       if row != exclude_row and score >= threshold), key=lambda pair: (-pair[0], pair[1]))
        return [self.bundle.catalog.hit(row, score) for score, row in kept[:top_k]]


def checked_top_k(value: Any) -> int:
    """The one check of a top_k, whatever route sent it: a whole number (5 or 5.0) from 0 to MAX_TOP_K."""
    whole = (isinstance(value, int | np.integer) and not isinstance(value, bool)) or \
        (isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer())
    if not whole:
        raise BadQueryError(f"top_k must be a whole number, got {value!r}")
    if not 0 <= value <= MAX_TOP_K:  # named as the whole number it is: 5000.0 from one client, 5000 from another
        raise BadQueryError(f"top_k must be a whole number from 0 to {MAX_TOP_K}, got {int(value)}")
    return int(value)


def checked_threshold(value: Any) -> float:
    """The one check of a threshold, whatever route sent it: a finite number from -1 to 1 (a cosine)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or not math.isfinite(value):
        raise BadQueryError(f"threshold must be a number, got {value!r}")
    if not -1.0 <= value <= 1.0:
        raise BadQueryError(f"threshold must be a cosine similarity from -1 to 1, got {value!r}")
    return float(value)


def _check_limits(top_k: Any, threshold: Any, options: Any = None) -> tuple[int, float]:
    top_k, threshold = checked_top_k(top_k), checked_threshold(threshold)
    if options is not None and not isinstance(options, SearchOptions):
        raise BadQueryError("options must be a SearchOptions; build it with SearchOptions.from_params")
    if options is not None and options.collapse_radius is not None and options.offset + top_k > MAX_COLLAPSED_DEPTH:
        raise BadQueryError(f"with near-duplicates folded (collapse_radius), pages reach {MAX_COLLAPSED_DEPTH} hits "
                            f"deep, not offset {options.offset} + top_k {top_k}; turn folding off to page further")
    return top_k, threshold


def _keyword_text(query: Query) -> str | None:
    """The text of a one-text query (keywords can rank it); None for pictures and mixed queries."""
    if len(query.positives) != 1 or query.positives[0].text is None or query.positives[0].image is not None:
        return None
    return _checked_text(query.positives[0].text)


def _checked_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) \
            or weight <= 0:
        raise BadQueryError(f"a term weight must be a positive number, got {weight!r}")
    return float(weight)


def _checked_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadQueryError("empty query: type a description or give an image")
    text = text.strip()
    if len(text) > MAX_QUERY_CHARS:  # refused, not cut: searching only the first part would mislead
        raise BadQueryError(f"the query has {len(text)} characters; keep it under {MAX_QUERY_CHARS} "
                            "(CLIP reads only the first ~77 tokens)")
    return text


def load_engine(config: EngineConfig) -> SearchEngine:
    """Fetch and verify the configured bundle, then load the encoder its manifest names."""
    if config.qdrant_url:  # vectors served by a Qdrant collection; qdrant-client is an optional extra
        try:
            from search.query.qdrant_index import load_qdrant_bundle
        except ModuleNotFoundError as exc:
            raise SearchError(f"--qdrant needs the {exc.name} package: pip install -r requirements-scale.txt") from None
        bundle = load_qdrant_bundle(fetch_bundle(config.index), config)
    else:
        bundle = Bundle.load(fetch_bundle(config.index), cache_dir=config.cache_dir)
    encoder = ClipEncoder.load(bundle.encoder_spec, config.device, config.threads)
    return SearchEngine(encoder, bundle, config.text_cache_size, batch=config.batch)
