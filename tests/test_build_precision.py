"""`build_index.py --precision int8`: the image tower at int8 once the build's own pictures pass the gate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import build_index
from search.bundle.store import Bundle
from search.model import quantised
from tests.conftest import DEMO_MODEL_DIR
from tests.test_quantised import pictures

ARGS = ["--model", f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--batch-size", "8", "--workers", "2",
        "--no-progress", "--precision", "int8"]


def test_int8_build_of_distinct_pictures_passes_the_gate_and_searches(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "photos").mkdir()
    for number, picture in enumerate(pictures(48, seed=3)):
        picture.save(tmp_path / "photos" / f"{number}.png")
    monkeypatch.setattr(quantised, "IMAGE_SAMPLE", 24)
    monkeypatch.setattr(quantised, "MIN_RECALL", 0.95)  # the demo's 64-d tower sits at ~0.99 (test_quantised.py)
    with caplog.at_level(logging.INFO, logger="search.model.quantised"):
        assert build_index.main([*ARGS, "--images-dir", str(tmp_path / "photos"), "--out", str(tmp_path / "b")]) == 0
    assert "image tower at int8 from now on: int8 ranks as fp32 does: recall@10" in caplog.text
    bundle = Bundle.load(tmp_path / "b")
    assert len(bundle.catalog) == 48 and np.allclose(np.linalg.norm(bundle.embeddings, axis=1), 1, atol=1e-5)


def test_int8_build_of_pictures_it_cannot_tell_apart_is_refused_with_the_figure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "photos").mkdir()
    base = np.asarray(pictures(1)[0], np.int16)
    rng = np.random.default_rng(0)
    for number in range(24):  # the same picture with a pixel or two changed: near-ties int8 cannot keep in order
        copy = base.copy()
        copy[tuple(rng.integers(0, 96, 2))] += 1
        Image.fromarray(np.clip(copy, 0, 255).astype(np.uint8)).save(tmp_path / "photos" / f"{number}.png")
    monkeypatch.setattr(quantised, "IMAGE_SAMPLE", 24)
    assert build_index.main([*ARGS, "--images-dir", str(tmp_path / "photos"), "--out", str(tmp_path / "b")]) == 1
    error = capsys.readouterr().err
    assert "--precision int8 refused for this build's pictures: int8 ranks differently from fp32: recall@10 0." in error
    assert "(< 0.99); build with --precision fp32" in error


def test_int8_is_refused_with_ray_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert build_index.main([*ARGS, "--images-dir", str(tmp_path), "--out", str(tmp_path / "b"), "--ray"]) == 1
    assert "--precision int8 runs without Ray" in capsys.readouterr().err
