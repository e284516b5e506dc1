"""Gradio app: search the index by text or by image. (The full Space UI is tracked in its own issue.)"""

from __future__ import annotations

import logging

import gradio as gr

from search.config import EngineConfig
from search.engine import SearchEngine, load_engine
from search.errors import SearchError
from search.types import Hit

logger = logging.getLogger(__name__)

GalleryItem = tuple[str, str]


def caption(hit: Hit) -> str:
    """Gallery caption: description, photographer when known, and the score."""
    credit = f" · Photo by {hit.photographer}" if hit.photographer else ""
    return f"{hit.description}{credit} · {hit.score:.3f}"


def build_demo(engine: SearchEngine) -> gr.Blocks:
    """The Blocks UI over one engine."""

    def run(search, *args) -> list[GalleryItem]:
        try:
            hits = search(*args)
        except SearchError as exc:
            raise gr.Error(str(exc)) from exc
        if not hits:
            gr.Info("Nothing above the threshold: lower it to see more.")
        return [(hit.image, caption(hit)) for hit in hits]

    def by_text(query: str, top_k: float, threshold: float) -> list[GalleryItem]:
        return run(engine.search_text, query, int(top_k), float(threshold))

    def by_image(image, top_k: float, threshold: float) -> list[GalleryItem]:
        if image is None:
            raise gr.Error("Upload an image first.")
        return run(engine.search_image, image, int(top_k), float(threshold))

    with gr.Blocks(title="Semantic image search") as demo:
        gr.Markdown("# Semantic image search\nFind photos by meaning, ranked by CLIP cosine similarity.")
        with gr.Row():
            top_k = gr.Slider(1, 100, value=12, step=1, label="Results")
            threshold = gr.Slider(-1.0, 1.0, value=0.0, step=0.01, label="Similarity threshold")
        with gr.Tab("Text"):
            query = gr.Textbox(label="Describe the picture", placeholder="a red circle on a dark background")
            text_button = gr.Button("Search", variant="primary")
        with gr.Tab("Image"):
            image = gr.Image(type="pil", label="Example image", sources=["upload", "webcam", "clipboard"])
            image_button = gr.Button("Search", variant="primary")
        gallery = gr.Gallery(label="Results", columns=4)
        gr.on([text_button.click, query.submit], by_text, [query, top_k, threshold], gallery, api_name="search_text")
        image_button.click(by_image, [image, top_k, threshold], gallery, api_name="search_image")
    return demo


def main() -> None:
    """Load the configured index and serve the app."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = load_engine(EngineConfig.from_env())
    build_demo(engine).queue(default_concurrency_limit=2).launch(allowed_paths=[str(engine.bundle.root)])


if __name__ == "__main__":
    main()
