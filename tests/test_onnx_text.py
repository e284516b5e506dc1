"""The text tower on ONNX Runtime: open_clip's vectors within 1e-4, a cache that is checked, PyTorch on failure."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from search.config import EncoderSpec, EngineConfig
from search.model import onnx_text
from search.model.encoder import ClipEncoder
from search.model.onnx_text import MODEL_FILE, OnnxTextTower, cache_key, enable_onnx_text, load_onnx_text
from tests.conftest import tiny_model_dir
from tests.test_encoder import TEXTS, _open_clip_full_context


def fresh(encoder: ClipEncoder) -> ClipEncoder:
    """Another encoder over the same model, so switching it to ONNX leaves the shared fixture alone."""
    return ClipEncoder(encoder.model, encoder.preprocess, encoder.tokenizer, encoder.spec)


def refuse_export(*_args, **_kwargs) -> None:
    raise AssertionError("exported again although the cache was good")


@pytest.fixture(scope="module")
def exported(demo_encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder with one fresh export of the demo text tower (~8 s each): tests that need an export but do
    not test exporting start from a copy of it."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    assert enable_onnx_text(fresh(demo_encoder), cache)
    return cache


def copy_of(exported: Path, folder: Path) -> Path:
    """`folder` holding a copy of the exported cache."""
    shutil.copytree(exported, folder, dirs_exist_ok=True)
    return folder


@pytest.mark.parametrize("encoder_name", ["random_vit_b32", "demo_encoder"])
def test_onnx_text_equals_open_clip_full_context(encoder_name: str, request: pytest.FixtureRequest,
                                                 tmp_path: Path) -> None:
    encoder = fresh(request.getfixturevalue(encoder_name))
    assert enable_onnx_text(encoder, tmp_path)
    assert isinstance(encoder.onnx_text, OnnxTextTower)
    for texts in [[text] for text in TEXTS] + [TEXTS]:  # one by one (own lengths) and as one padded batch
        expected = _open_clip_full_context(encoder, texts)
        got = encoder.encode_text(texts)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_second_start_loads_the_cached_export(demo_encoder: ClipEncoder, exported: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = exported / cache_key(demo_encoder)  # the first start's export, into an empty cache
    assert (folder / MODEL_FILE).is_file() and (folder / f"{MODEL_FILE}.data").is_file()
    assert [p.name for p in exported.iterdir()] == [folder.name]  # no temporary folder left behind
    monkeypatch.setattr(onnx_text, "export_text_tower", refuse_export)
    encoder = fresh(demo_encoder)
    assert enable_onnx_text(encoder, exported)
    assert np.abs(encoder.encode_text(TEXTS[:2]) - demo_encoder.encode_text(TEXTS[:2])).max() <= 1e-4


def test_temporary_folder_of_a_killed_export_is_removed(demo_encoder: ClipEncoder, tmp_path: Path) -> None:
    folder = tmp_path / cache_key(demo_encoder)
    abandoned, in_progress = Path(f"{folder}.tmp-99999-1"), Path(f"{folder}.tmp-99998-1")
    for tmp in (abandoned, in_progress):
        tmp.mkdir()
        (tmp / MODEL_FILE).write_bytes(b"half")
    hours_ago = time.time() - 2 * onnx_text.ABANDONED_AFTER_S
    os.utime(abandoned, (hours_ago, hours_ago))
    assert enable_onnx_text(fresh(demo_encoder), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, in_progress.name])


def test_damaged_cache_is_exported_again(demo_encoder: ClipEncoder, exported: Path, tmp_path: Path) -> None:
    copy_of(exported, tmp_path)
    weights = tmp_path / cache_key(demo_encoder) / f"{MODEL_FILE}.data"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # as after a full disk or a killed copy
    encoder = fresh(demo_encoder)
    assert enable_onnx_text(encoder, tmp_path)
    assert weights.stat().st_size == size
    assert np.abs(encoder.encode_text(TEXTS[:3]) - demo_encoder.encode_text(TEXTS[:3])).max() <= 1e-4


def test_export_of_other_weights_under_this_key_is_not_trusted(demo_encoder: ClipEncoder, tmp_path: Path) -> None:
    other = ClipEncoder.load(EncoderSpec(f"local-dir:{tiny_model_dir(tmp_path / 'tiny', dim=64)}", None))
    assert other.dim == demo_encoder.dim  # same shapes, so only the check can tell the weights apart
    cache = tmp_path / "cache"
    assert load_onnx_text(other, cache) is not None
    shutil.move(cache / cache_key(other), cache / cache_key(demo_encoder))
    encoder = fresh(demo_encoder)
    assert enable_onnx_text(encoder, cache)
    assert np.abs(encoder.encode_text(TEXTS[:3]) - demo_encoder.encode_text(TEXTS[:3])).max() <= 1e-4


def test_the_check_refuses_a_tower_that_differs(demo_encoder: ClipEncoder, exported: Path, tmp_path: Path) -> None:
    tower = load_onnx_text(fresh(demo_encoder), copy_of(exported, tmp_path))
    off_by_a_bit = lambda tokens: tower(tokens) + np.float32(1e-2)  # noqa: E731
    with pytest.raises(onnx_text.OnnxTextError, match="differs from PyTorch"):
        onnx_text._checked(demo_encoder, off_by_a_bit)


def test_failed_export_keeps_pytorch_and_leaves_no_files(demo_encoder: ClipEncoder, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def half_written(module, args, path, **kwargs) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("exporter crashed\nwith a long story")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    encoder = fresh(demo_encoder)
    with caplog.at_level(logging.WARNING, logger="search.model.onnx_text"):
        assert not enable_onnx_text(encoder, tmp_path)
    assert encoder.onnx_text is None
    assert "text queries stay on PyTorch: cannot export the text tower" in caplog.text
    assert "exporter crashed with a long story" in caplog.text
    assert list(tmp_path.iterdir()) == []
    assert np.array_equal(encoder.encode_text(TEXTS[:2]), demo_encoder.encode_text(TEXTS[:2]))


def test_model_without_a_trimmable_text_tower_stays_on_pytorch(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    encoder = ClipEncoder.load(EncoderSpec(f"local-dir:{tiny_model_dir(tmp_path / 'hf', custom_text=True)}", None))
    with caplog.at_level(logging.WARNING, logger="search.model.onnx_text"):
        assert not enable_onnx_text(encoder, tmp_path / "cache")
    assert "no exportable CPU text tower" in caplog.text
    assert encoder.encode_text(["a red circle"]).shape == (1, encoder.dim)


def test_app_start_switches_text_queries_to_onnx_in_the_background(tmp_path: Path) -> None:
    from search.web.startup import start_engine

    startup = start_engine(EngineConfig(cache_dir=tmp_path, text_precision="fp32"))  # int8: tests/test_quantised.py
    encoder = startup.engine.encoder
    before = startup.engine.search_text("a red circle", 5, -1.0)  # answered at once, by PyTorch meanwhile
    by_pytorch = {hit.id: hit.score for hit in startup.engine.search_text("a red circle", 1000, -1.0)}
    deadline = time.monotonic() + 120
    while encoder.onnx_text is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert isinstance(encoder.onnx_text, OnnxTextTower)
    startup.engine.clear_text_cache()
    after = startup.engine.search_text("a red circle", 5, -1.0)
    # Two code paths: the export check allows 1e-4 per coordinate, so a score (a dot product with a unit vector)
    # may move by up to sqrt(dim) * 1e-4, plus one unit of the 6th decimal from rounding.
    tolerance = np.sqrt(encoder.dim) * onnx_text.MAX_ABS_DIFF + 1e-6
    assert np.allclose([hit.score for hit in after], [hit.score for hit in before], rtol=0, atol=tolerance)
    # The same ranking up to that tolerance: items may swap places only with one that scores as much by PyTorch.
    assert all(abs(by_pytorch[hit.id] - rank.score) <= tolerance for hit, rank in zip(after, before, strict=True))


def test_onnx_text_can_be_switched_off_and_cached_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEARCH_ONNX_TEXT", "0")
    monkeypatch.setenv("SEARCH_CACHE_DIR", str(tmp_path / "c"))
    config = EngineConfig.from_env()
    assert config.onnx_text is False and config.cache_dir == tmp_path / "c"
    monkeypatch.delenv("SEARCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SEARCH_ONNX_TEXT", "1")
    config = EngineConfig.from_env()
    assert config.onnx_text is True and config.cache_dir == tmp_path / "xdg" / "clip-search"



def test_text_queries_get_the_threads_asked_for_or_torchs(demo_encoder: ClipEncoder, exported: Path,
                                                          tmp_path: Path) -> None:
    def session_threads(tower: OnnxTextTower) -> int:
        return tower._session.get_session_options().intra_op_num_threads

    copy_of(exported, tmp_path)
    assert session_threads(load_onnx_text(fresh(demo_encoder), tmp_path, threads=3)) == 3
    default = session_threads(load_onnx_text(fresh(demo_encoder), tmp_path))
    assert default == onnx_text.default_text_threads() == torch.get_num_threads()
    with pytest.raises(ValueError, match="threads"):
        load_onnx_text(fresh(demo_encoder), tmp_path, threads=-1)
