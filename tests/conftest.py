"""Shared fixtures: small synthetic bundles, the shipped demo model and bundle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from search.bundle.store import BundleInfo, write_bundle
from search.config import REPO_ROOT, EncoderSpec, HnswParams

DEMO_MODEL_DIR = REPO_ROOT / "assets" / "demo" / "model"
DEMO_INDEX_DIR = REPO_ROOT / "assets" / "demo" / "index"
DEMO_SPEC = EncoderSpec(f"local-dir:{DEMO_MODEL_DIR}", None)


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random float32 rows of length 1."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def metadata_table(count: int) -> pa.Table:
    """Metadata rows with the bundle's required columns; every third item has no page or photographer."""
    return pa.table({
        "id": [f"item-{row:04d}" for row in range(count)],
        "image": [f"https://images.example/{row}.jpg" for row in range(count)],
        "page_url": [None if row % 3 == 0 else f"https://example.com/p/{row}" for row in range(count)],
        "description": [f"picture number {row}" for row in range(count)],
        "photographer": [None if row % 3 == 0 else f"Person {row}" for row in range(count)],
    })


def tiny_model_dir(folder: Path, dim: int = 32, custom_text: bool = False) -> Path:
    """A tiny open_clip model folder with seeded random weights (a folder without weights is refused on load)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    config = {"model_cfg": {"embed_dim": dim, "custom_text": custom_text,
                            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                           "head_width": 16},
                            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                         "layers": 1}},
              "preprocess_cfg": {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")  # random init: no weights file yet
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SEARCH_CACHE_DIR in a temporary folder: the app's ONNX exports never land in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("search-cache")
        patch.setenv("SEARCH_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a bundle of random vectors into a fresh folder and return the folder."""

    def make(count: int = 50, dim: int = 16, spec: EncoderSpec | None = None, name: str = "bundle") -> Path:
        root = tmp_path / name
        info = BundleInfo(spec or EncoderSpec("ViT-B-32", None), HnswParams(m=8, ef_construction=64, ef_search=32),
                          source="unit-test", source_revision="r1", failures=2)
        write_bundle(root, unit_vectors(count, dim), metadata_table(count), info)
        return root

    return make


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub in offline mode with an empty cache, whether or not it was imported already."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture(scope="session")
def demo_encoder():
    """The shipped demo CLIP, loaded through open_clip's local-dir path."""
    from search.model.encoder import ClipEncoder

    return ClipEncoder.load(DEMO_SPEC)


@pytest.fixture(scope="session")
def demo_engine(demo_encoder):
    """A SearchEngine over the shipped demo bundle."""
    from search.bundle.store import Bundle
    from search.query.engine import SearchEngine

    return SearchEngine(demo_encoder, Bundle.load(DEMO_INDEX_DIR))


@pytest.fixture(scope="session")
def random_vit_b32():
    """A ViT-B-32 with random weights: the real architecture and cost, no download."""
    import open_clip
    import torch

    from search.model.encoder import ClipEncoder

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), EncoderSpec("ViT-B-32", None))


@pytest.fixture(scope="module")
def demo_startup(demo_engine):
    """The app's start-up state on the shipped demo, as with no index configured."""
    from search.web.startup import Startup, demo_notice

    return Startup(demo_engine, demo_notice(None, None), True)


@pytest.fixture(scope="module")
def app_url(demo_startup) -> Iterator[str]:
    """The app on the demo bundle, served in-process on a free port for one test module."""
    from tests.app_server import serve

    with serve(demo_startup) as url:
        yield url


@pytest.fixture(scope="session")
def page_app_url(demo_engine) -> Iterator[str]:
    """The app on the demo bundle for the browser modules, one server for the session: their pages only search."""
    from search.web.startup import Startup, demo_notice
    from tests.app_server import serve

    with serve(Startup(demo_engine, demo_notice(None, None), True)) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url: str):
    """A gradio_client connected to the in-process app."""
    from gradio_client import Client

    return Client(app_url, verbose=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long runs marked `fuzz` are deselected unless asked for (`pytest -m fuzz`): the suite stays ~minutes."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    long_runs = [item for item in items if item.get_closest_marker("fuzz")]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if not item.get_closest_marker("fuzz")]
