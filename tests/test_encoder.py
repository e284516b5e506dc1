"""ClipEncoder: the trimmed text tower equals open_clip, vectors are unit float32, specs load or fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from search.config import EncoderSpec
from search.errors import EncoderLoadError
from search.model.encoder import ClipEncoder, resolve_device
from tests.conftest import DEMO_MODEL_DIR

TEXTS = [
    "a red circle",
    "a foggy forest at dawn, seen from a hill above the valley with a river and two small boats",
    "x",
    "",
    "😀 مرحبا שלום — ünïcödé",
    "word " * 200,  # longer than the 77-token context: truncated, so nothing to trim
]


def _open_clip_full_context(encoder: ClipEncoder, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        features = encoder.model.encode_text(encoder.tokenizer(texts))
    return torch.nn.functional.normalize(features, dim=-1).numpy()


@pytest.mark.parametrize("encoder_name", ["random_vit_b32", "demo_encoder"])
def test_trimmed_text_tower_equals_open_clip_full_context(encoder_name: str, request: pytest.FixtureRequest) -> None:
    encoder: ClipEncoder = request.getfixturevalue(encoder_name)
    assert encoder.can_trim_text
    for texts in ([text] for text in TEXTS[:5]):  # one at a time: each is trimmed to its own length
        trimmed = encoder.encode_text(texts)
        assert encoder.tokenizer(texts).count_nonzero() < 77
        assert np.abs(trimmed - _open_clip_full_context(encoder, texts)).max() <= 1e-5
    batch = encoder.encode_text(TEXTS)
    assert np.abs(batch - _open_clip_full_context(encoder, TEXTS)).max() <= 1e-5


def test_text_vectors_are_unit_float32_rows(demo_encoder: ClipEncoder) -> None:
    vectors = demo_encoder.encode_text(["a red circle", "a blue square", "a yellow star"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, demo_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_images_encode_the_same_in_any_batch_size(demo_encoder: ClipEncoder) -> None:
    images = [Image.new("RGB", (40 + 10 * n, 50), colour) for n, colour in
              enumerate(["red", "blue", "yellow", "green", "white"])]
    together = demo_encoder.encode_images(images, batch_size=2)
    one_by_one = np.concatenate([demo_encoder.encode_images([image]) for image in images])
    assert together.shape == (5, demo_encoder.dim) and together.dtype == np.float32
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert demo_encoder.encode_images([]).shape == (0, demo_encoder.dim)


def test_a_named_config_with_a_local_weights_file_loads_the_same_model(demo_encoder: ClipEncoder,
                                                                       tmp_path: Path) -> None:
    config = json.loads((DEMO_MODEL_DIR / "open_clip_config.json").read_text())
    (tmp_path / "demo-tiny.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(tmp_path / "demo-tiny.json")
    weights = next(DEMO_MODEL_DIR.glob("*.safetensors"))
    by_file = ClipEncoder.load(EncoderSpec("demo-tiny", str(weights)))
    np.testing.assert_allclose(by_file.encode_text(TEXTS[:3]), demo_encoder.encode_text(TEXTS[:3]), atol=1e-6)


@pytest.mark.parametrize(("spec", "detail"), [
    (EncoderSpec("no-such-model", None), "not found in built-ins"),
    (EncoderSpec("local-dir:/nonexistent/model", None), "not found"),
    (EncoderSpec("ViT-B-32", "laion2b_s34b_b79k"), "Failed to download"),
])
@pytest.mark.usefixtures("hub_offline")  # the download case must fail fast, with or without a network
def test_unloadable_specs_fail_with_one_clear_line(spec: EncoderSpec, detail: str) -> None:
    with pytest.raises(EncoderLoadError, match=f"cannot load CLIP model .*{detail}.*local-dir") as info:
        ClipEncoder.load(spec)
    assert "\n" not in str(info.value)


def test_schema_specs_ignore_pretrained_so_equal_models_compare_equal() -> None:
    assert EncoderSpec("hf-hub:org/model", "ignored") == EncoderSpec("hf-hub:org/model", None)
    assert str(EncoderSpec("ViT-B-32", "laion2b_s34b_b79k")) == "ViT-B-32 / laion2b_s34b_b79k"


def test_configure_threads_sets_torch_and_zero_keeps_the_default() -> None:
    from search.model.encoder import configure_threads

    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(0)
        assert torch.get_num_threads() == 1  # 0 leaves whatever is set
        with pytest.raises(ValueError, match="threads must be 0"):
            configure_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_load_applies_the_thread_setting() -> None:
    before = torch.get_num_threads()
    try:
        ClipEncoder.load(EncoderSpec(f"local-dir:{DEMO_MODEL_DIR}", None), threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _RunsCodeWhenUnpickled:
    """A pickle payload: loading it would create the folder named by `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("weights", ["plain-state-dict", "code-running-pickle"])
def test_pickled_weights_are_refused_before_they_are_read(weights: str, tmp_path: Path) -> None:
    """Only safetensors are trusted: a torch pickle is refused with one line, even a tensors-only one that
    torch.load(weights_only=True) would accept, and a payload never runs."""
    import pickle

    from safetensors.torch import load_file

    folder, marker = tmp_path / "model", tmp_path / "payload-ran"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((DEMO_MODEL_DIR / "open_clip_config.json").read_bytes())
    if weights == "plain-state-dict":
        name = "model.pth"
        torch.save(load_file(DEMO_MODEL_DIR / "open_clip_model.safetensors"), folder / name)
    else:
        name = "open_clip_pytorch_model.bin"
        (folder / name).write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    with pytest.raises(EncoderLoadError, match=rf"file {name} is not safetensors; only \.safetensors weights are "
                       "accepted") as info:
        ClipEncoder.load(EncoderSpec(f"local-dir:{folder}", None))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_broken_safetensors_file_fails_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((DEMO_MODEL_DIR / "open_clip_config.json").read_bytes())
    (folder / "open_clip_model.safetensors").write_bytes(b"\x80\x04not a safetensors header" * 4)
    with pytest.raises(EncoderLoadError, match="cannot load CLIP model .*header") as info:
        ClipEncoder.load(EncoderSpec(f"local-dir:{folder}", None))
    assert "\n" not in str(info.value)


def test_a_model_folder_without_weights_is_refused_not_randomly_initialised(tmp_path: Path) -> None:
    # open_clip alone only logs a warning and returns random weights: queries would then search noise.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((DEMO_MODEL_DIR / "open_clip_config.json").read_bytes())
    with pytest.raises(EncoderLoadError, match="no weights were loaded") as info:
        ClipEncoder.load(EncoderSpec(f"local-dir:{folder}", None))
    assert "\n" not in str(info.value)
    assert ClipEncoder.load(EncoderSpec(f"local-dir:{DEMO_MODEL_DIR}", None)).dim > 0  # with weights: loads


@pytest.mark.parametrize(("device", "message"), [
    ("meta", "device 'meta' cannot run the model; use auto, cpu, cuda, cuda:N or mps"),
    ("xla", "device 'xla' cannot run the model"),
    ("cpu:0 ", "device 'cpu:0 ' cannot run the model"),
    (f"cuda:{torch.cuda.device_count()}", "is not on this machine"),
])
def test_a_device_that_cannot_run_the_model_is_refused_before_loading(device: str, message: str) -> None:
    with pytest.raises(EncoderLoadError, match=message) as refused:
        ClipEncoder.load(EncoderSpec(f"local-dir:{DEMO_MODEL_DIR}"), device)
    assert "\n" not in str(refused.value)


def test_resolve_device_keeps_what_runs() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
