"""The build's split preprocessing (PIL steps in the worker threads, tensor steps per batch in the main thread)
gives exactly the pixels, and so the vectors, of the encoder's own transform."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torchvision import transforms

from search.build.pipeline import BuildConfig, build_bundle
from search.build.sources import SourceConfig
from search.build.transform import split_transform
from search.bundle.store import Bundle
from search.model.images import load_image
from tests.conftest import DEMO_SPEC

SIZES = [(384, 256), (256, 384), (224, 224), (100, 50), (640, 427), (31, 300)]


def pictures(kind: str = "JPEG") -> list[Image.Image]:
    """Photo-like RGB pictures of varied shapes (smaller and larger than the model input), through load_image."""
    rng = np.random.default_rng(0)
    result = []
    for width, height in SIZES:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, kind)
        result.append(load_image(buffer.getvalue()))
    return result


def in_two_parts(preprocess, images: list[Image.Image]) -> torch.Tensor:
    split = split_transform(preprocess)
    return split.in_batch([split.in_worker(image) for image in images])


TRANSFORMS = {
    "ViT-B-32": lambda: open_clip.image_transform(224, is_train=False),  # what create_model_and_transforms gives it
    "longest": lambda: open_clip.image_transform(224, is_train=False, resize_mode="longest"),
    "squash": lambda: open_clip.image_transform(96, is_train=False, resize_mode="squash", interpolation="bilinear"),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_split_is_bit_identical_to_the_transform(name: str) -> None:
    preprocess, images = TRANSFORMS[name](), pictures()
    split = split_transform(preprocess)
    assert all(isinstance(split.in_worker(image), np.ndarray) for image in images)  # no torch op in the workers
    assert torch.equal(in_two_parts(preprocess, images), torch.stack([preprocess(image) for image in images]))


def test_split_is_bit_identical_for_the_demo_model(demo_encoder) -> None:
    images = pictures("PNG")
    assert isinstance(split_transform(demo_encoder.preprocess).in_worker(images[0]), np.ndarray)
    batch = in_two_parts(demo_encoder.preprocess, images)
    assert batch.is_contiguous()  # as torch.stack gives it: the model sees the same memory layout
    assert torch.equal(batch, demo_encoder.preprocess_images(images))


@pytest.mark.parametrize("preprocess", [
    transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
                        transforms.Lambda(lambda pixels: pixels * 2)]),
    transforms.Compose([transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float32)]),
    lambda image: transforms.functional.to_tensor(image.resize((32, 32))),
], ids=["tensor-step-after-ToTensor", "no-ToTensor", "not-a-Compose"])
def test_an_unexpected_transform_runs_whole_in_the_worker(preprocess) -> None:
    images = [image.resize((40, 40)) for image in pictures()]
    split = split_transform(preprocess)
    assert split.in_worker is preprocess
    assert torch.equal(in_two_parts(preprocess, images), torch.stack([preprocess(image) for image in images]))


def test_built_vectors_equal_the_encoders_own(demo_encoder, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number, image in enumerate(pictures()):
        image.save(photos / f"{number}.png")  # PNG: no reduced-size JPEG decoding, so load_image(path) matches
    config = BuildConfig(tmp_path / "out", SourceConfig(images_dir=photos), DEMO_SPEC, "cpu", batch_size=4,
                         workers=2, progress=False)
    build_bundle(config)
    ids = pq.read_table(tmp_path / "out" / "metadata.parquet").column("id").to_pylist()
    images = [load_image(photos / photo_id) for photo_id in ids]
    expected = demo_encoder.encode_images(images, batch_size=config.batch_size)
    # The pixels are asserted bit-identical above; the model's own float sums may be ordered differently by
    # its thread pool between two calls, so the vectors get float32 noise room (unit vectors: 1e-6 ≈ 8 ulp).
    np.testing.assert_allclose(Bundle.load(tmp_path / "out").embeddings, expected, rtol=0, atol=1e-6)
