"""Example queries and default thresholds: measured on a bundle, recorded in its manifest, parsed as untrusted."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.build.measured_hints import hints_for_metadata, ui_hints
from search.bundle.hub import fetch_bundle
from search.bundle.manifest import MAX_EXAMPLES, BundleInfo, UiHints, parse_manifest
from search.bundle.store import Bundle, write_bundle
from search.config import EncoderSpec, EngineConfig
from search.errors import BundleError
from tests.conftest import DEMO_INDEX_DIR


def test_demo_hints_are_measured_between_matching_and_unrelated_scores(demo_engine) -> None:
    hints = ui_hints(replace(demo_engine.bundle, manifest=replace(demo_engine.bundle.manifest, ui=None)),
                     demo_engine.encoder)  # measured now, as for a bundle that records none
    assert replace(hints, sample=()) == demo_engine.bundle.manifest.ui  # what the shipped manifest records
    assert len(hints.sample) == len(set(hints.sample)) == 12  # the shipped demo predates ui.sample
    hits = demo_engine.search_text("a red circle on a dark background", 300, -1.0)
    matching = [hit.score for hit in hits if "red circle" in hit.description]
    assert min(matching) > hints.text_threshold > hits[-1].score  # keeps every red circle, drops the worst others
    assert len(hints.examples) == 4 and all(text.startswith("a ") for text in hints.examples)


def test_hints_measured_while_writing_are_recorded_and_survive_a_reload(tmp_path: Path, demo_engine) -> None:
    bundle = demo_engine.bundle
    root = shutil.copytree(DEMO_INDEX_DIR, tmp_path / "copy")
    (root / "manifest.json").unlink()
    table = pq.read_table(root / "metadata.parquet")
    embeddings = np.asarray(bundle.embeddings)
    info = BundleInfo(EncoderSpec(f"local-dir:{DEMO_INDEX_DIR.parent / 'model'}"), bundle.manifest.info.hnsw)
    written = write_bundle(root, embeddings, table, info, hints_for_metadata(table, embeddings, demo_engine.encoder))
    assert written.ui is not None and Bundle.load(root).manifest.ui == written.ui
    assert replace(written.ui, sample=()) == bundle.manifest.ui  # the demo's, measured the same way
    assert written.ui.sample == ui_hints(replace(bundle, manifest=replace(bundle.manifest, ui=None)),
                                         demo_engine.encoder).sample  # picked the same way at build and at start


@pytest.mark.parametrize(("ui", "message"), [
    ({"examples": "a cat"}, "ui.examples must be a list"),
    ({"examples": ["x"] * (MAX_EXAMPLES + 1)}, "ui.examples must be a list"),
    ({"examples": ["<b>\n</b>"]}, "printable texts"),
    ({"examples": ["a" * 201]}, "at most 200 characters"),
    ({"examples": [], "text_threshold": 2}, "ui.text_threshold must be a number from -1 to 1"),
    ({"examples": [], "image_threshold": "0.5"}, "ui.image_threshold must be a number from -1 to 1"),
    ({"examples": [], "image_threshold": True}, "ui.image_threshold must be a number"),
    ({"examples": [], "text_threshold": float("nan")}, "ui.text_threshold must be a number"),
    ("yes", "ui is not a JSON object"),
])
def test_hostile_ui_hints_are_one_line_bundle_errors(ui: object, message: str) -> None:
    manifest = json.loads((DEMO_INDEX_DIR / "manifest.json").read_text())
    manifest["ui"] = ui
    with pytest.raises(BundleError, match=message):
        parse_manifest(json.dumps(manifest).encode())


def test_manifests_without_ui_hints_still_load() -> None:
    manifest = json.loads((DEMO_INDEX_DIR / "manifest.json").read_text())
    manifest.pop("ui")
    assert parse_manifest(json.dumps(manifest).encode()).ui is None
    manifest["ui"] = {"examples": ["a cat"], "text_threshold": None, "image_threshold": 0.5}
    assert parse_manifest(json.dumps(manifest).encode()).ui == UiHints(("a cat",), None, 0.5)


@pytest.mark.parametrize("source", ["./nonexistent", "../nowhere/x", "~/no-such-folder"])
def test_a_mistyped_relative_path_is_never_taken_for_a_hub_repo(source: str) -> None:
    with pytest.raises(BundleError, match="is neither an existing folder nor a Hub repo id"):
        fetch_bundle(source)


def test_the_app_says_the_clear_thing_for_a_missing_relative_path() -> None:
    from search.web.startup import start_engine

    startup = start_engine(EngineConfig(index="./nonexistent", onnx_text=False))
    assert startup.is_demo and "neither an existing folder nor a Hub repo id" in (startup.notice or "")
    assert "Repo id must use" not in (startup.notice or "")
