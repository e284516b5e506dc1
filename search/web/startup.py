"""Start-up: the configured bundle (or the demo, with a notice why), warmed up, with its per-bundle defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.build.measured_hints import ui_hints
from search.bundle.hub import parse_hub_source
from search.config import DEMO_INDEX_DIR, EngineConfig
from search.errors import SearchError
from search.model.onnx_text import bundle_probes, choose_text_precision, enable_onnx_text_in_background
from search.query.engine import SearchEngine, load_engine
from search.web.page_text import markdown_text
from search.web.process_settings import pin_blas_threads
from search.web.public_errors import without_server_paths

logger = logging.getLogger(__name__)

BUILD_COMMAND = ("python build_index.py --out unsplash-index --push-to YOUR_NAME/unsplash-index\n"
                 "SEARCH_INDEX=YOUR_NAME/unsplash-index@COMMIT_SHA python app.py")
FOLDER_COMMAND = ("python build_index.py --images-dir ~/Pictures --out my-photos\n"
                  "SEARCH_INDEX=my-photos python app.py")


@dataclass(frozen=True, slots=True)
class ModeDefaults:
    """Default thresholds per query mode and example text queries that suit one collection."""

    text_threshold: float
    image_threshold: float
    text_examples: tuple[str, ...]
    measured_text: bool = True  # False: the bundle has no descriptions, so no text threshold could be measured
    sample: tuple[str, ...] = ()  # ids of pictures that differ: what the page opens on when there are no examples


@dataclass(frozen=True, slots=True)
class Startup:
    """The engine the app serves, and a notice to show when it is not the configured index."""

    engine: SearchEngine
    notice: str | None
    is_demo: bool


def start_engine(config: EngineConfig) -> Startup:
    """Load the configured index (or the demo) and warm the model up, then move text queries to ONNX Runtime in
    the background (and warm that up too)."""
    pin_blas_threads()
    startup = _load_or_demo(config)
    engine = startup.engine
    engine.warm_up()
    if config.onnx_text and engine.encoder.device.type == "cpu":  # on a GPU, PyTorch is the fast path
        enable_onnx_text_in_background(engine.encoder, config.cache_dir, config.text_threads,
                                       then=lambda: _choose_text_precision(engine, config.text_precision))
    return startup


def _choose_text_precision(engine: SearchEngine, asked: str) -> None:
    """Once the fp32 ONNX tower serves: warm it up, then let the int8 gate decide on this bundle's own probes."""
    engine.warm_up()
    bundle = engine.bundle
    examples = bundle.manifest.ui.examples if bundle.manifest.ui is not None else ()
    probes = bundle_probes(lambda row: bundle.catalog.hit(row, 0.0).description, len(bundle.catalog), examples)

    def top_rows(vectors: np.ndarray, k: int) -> np.ndarray:
        return np.stack([bundle.index.query(vector, k)[0] for vector in vectors])

    if choose_text_precision(engine.encoder, asked, probes, top_rows).serving == "int8":
        engine.clear_text_cache()  # vectors cached from fp32 would answer a repeat unlike a fresh query
        engine.warm_up()


def _load_or_demo(config: EngineConfig) -> Startup:
    """Load the configured index; on any failure fall back to the bundled demo with a notice why."""
    if Path(config.index).expanduser().resolve() == DEMO_INDEX_DIR.resolve():
        engine = load_engine(config)
        return Startup(engine, demo_notice(None, None), True)
    try:
        return Startup(load_engine(config), None, False)
    except SearchError as exc:
        reason = str(exc)
        # The reason last: it may end with its own full stop ("… try again."), which nothing should follow.
        logger.warning("serving the demo: cannot load index %s: %s", config.index, reason)
    except Exception as exc:  # e.g. a network library's own error: the Space must still come up
        reason = without_server_paths(f"{type(exc).__name__}: {exc}")  # shown on the page: no server folders
        logger.exception("serving the demo: unexpected failure loading index %s", config.index)
    engine = load_engine(EngineConfig(index=str(DEMO_INDEX_DIR), device=config.device))
    return Startup(engine, demo_notice(config.index, reason), True)


def demo_notice(source: str | None, reason: str | None) -> str:
    """Markdown: why the demo is shown, and how to build and publish a real index."""
    if source is None:
        head = "**No index configured**: this is the bundled demo (300 synthetic shapes, a tiny CLIP)."
    else:
        head = (f"**Could not load the index {markdown_text(source)}**, so this is the bundled demo (300 synthetic "
                f"shapes).\n\nReason: {markdown_text(reason)}")
    folder = (f"To search your own photos, index their folder, then point the app at the index:\n\n"
              f"```bash\n{FOLDER_COMMAND}\n```")
    if source is not None and _is_folder(source):  # a folder collection: the Hub commands would not help
        return f"{head}\n\n{folder}"
    hub = (f"To search Unsplash photos, build and publish an index, then point the app at it "
           f"(`--index` or `SEARCH_INDEX`):\n\n```bash\n{BUILD_COMMAND}\n```")
    return f"{head}\n\n{hub}" if source is not None else f"{head}\n\n{folder}\n\n{hub}"


def _is_folder(source: str) -> bool:
    """Whether an index source names a local folder (as fetch_bundle reads it) rather than a Hub repo."""
    try:
        return Path(source).expanduser().exists() or parse_hub_source(source) is None
    except (OSError, RuntimeError, ValueError):
        return parse_hub_source(source) is None


def notice_summary(startup: Startup) -> str:
    """The one line the collapsed notice shows."""
    if startup.notice is None or not startup.is_demo:
        return ""
    if startup.notice.startswith("**No index configured**"):
        return "Demo collection: 300 synthetic shapes and a tiny CLIP. How to search real photos…"
    return "The configured index could not be loaded, so this is the demo. Why, and what to do…"


def mode_defaults(engine: SearchEngine) -> ModeDefaults:
    """Thresholds and examples recorded in (or measured on) this bundle: each model scores on its own scale."""
    hints = ui_hints(engine.bundle, engine.encoder)
    text = hints.text_threshold
    return ModeDefaults(0.0 if text is None else text,
                        0.0 if hints.image_threshold is None else hints.image_threshold,
                        hints.examples, text is not None, hints.sample)


def score_hint(defaults: ModeDefaults) -> str:
    """Markdown: what a score is, with this collection's own default thresholds (not another model's ranges)."""
    text = (f"{defaults.text_threshold:.2f} for text" if defaults.measured_text
            else "0 for text (the collection has no descriptions to measure text scores on)")
    return ("**Score** = cosine similarity of CLIP vectors (−1 to 1). Texts and pictures score on different "
            "scales, so each has its own threshold. For this collection the defaults are "
            f"{text} and {defaults.image_threshold:.2f} for pictures: halfway between how its items score against "
            "matching and against unrelated queries (measured when the index was built).")
