"""A person's own folder (`build_index.py --images-dir`) as a first-class collection: words from its own names,
captions and detail from the original file, EXIF dates as the camera's local time, the place shown, the start-up
notice with the folder commands."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pytest
from PIL import Image

from bench.dominant_colour import measure
from search.build.picture_facts import exif_date
from search.build.pipeline import build_bundle
from search.build.sources import name_words
from search.bundle.attributes import DATE_PATTERN
from search.bundle.metadata import ItemCatalog
from search.bundle.store import Bundle
from search.config import REPO_ROOT, EngineConfig
from search.errors import BundleError
from search.query.engine import SearchEngine, load_engine
from search.types import Hit
from search.web.handlers import SearchUI
from search.web.page_text import date_text, place_text
from search.web.render import detail_html, tile_html
from search.web.startup import BUILD_COMMAND, FOLDER_COMMAND, Startup, demo_notice
from tests.test_build import shape_picture
from tests.test_images_dir_bundle import config


def test_an_exif_date_of_any_year_is_written_with_four_digits() -> None:
    assert exif_date("0005:01:02 03:04:05") == "0005-01-02T03:04:05"
    assert re.fullmatch(DATE_PATTERN, exif_date("0005:01:02 03:04:05") or "")
    assert exif_date("2019:07:14 18:30:00\x00") == "2019-07-14T18:30:00"
    assert exif_date("2019:02:30 18:30:00") is None


def test_a_pictures_words_come_from_its_name_and_folders_not_camera_counters() -> None:
    assert name_words(PurePosixPath("red-circle-24.jpg")) == ("red circle", None)
    assert name_words(PurePosixPath("Holiday 2021/Beach/IMG_1234.JPG")) == ("Beach", "Holiday, Beach")
    assert name_words(PurePosixPath("summer_trip/DSC00012.jpg")) == ("summer trip", "summer trip")
    for no_words in ("IMG_1234.jpg", "PXL_20210503_101010.jpg", "72cf0a9b3e.jpg", "a.png", "DSCN0001.JPG"):
        assert name_words(PurePosixPath(no_words)) == ("", None)


def folder_hit(**fields: object) -> Hit:
    return Hit("holiday/red-circle-24.jpg", 0.5, "/srv/bundle/images/72cf0a9b3e1d.jpg", None, "red circle", None,
               **fields)


def test_the_detail_view_names_the_original_file_its_local_date_and_place() -> None:
    hit = folder_hit(date="2019-07-14T18:30:00", latitude=59.910004, longitude=-10.75)
    shown = html.unescape(detail_html(hit, Path("/srv/bundle")))
    seen = re.sub("<[^>]+>", "", shown)  # the text a person reads (links still lead to the thumbnail)
    assert "local file holiday/red-circle-24.jpg" in seen and "72cf" not in seen and "images/" not in seen
    assert "<dt>Date</dt><dd>2019-07-14 18:30:00</dd>" in shown and "Z<" not in shown
    assert "59.910° N, 10.750° W" in shown
    assert "red circle" in tile_html(0, hit) and "picture holiday" not in tile_html(0, hit)


def test_dates_show_their_zone_only_when_they_have_one() -> None:
    assert date_text("2020-01-31T12:00:00Z") == "2020-01-31 12:00:00 UTC"
    assert date_text("2020-01-31T12:00:00") == "2020-01-31 12:00:00"
    assert place_text(folder_hit(location="Oslo", latitude=-33.8688, longitude=151.2093)) == \
        "Oslo · 33.869° S, 151.209° E"
    assert place_text(folder_hit()) is None


def test_a_folder_bundles_dates_are_local_and_an_unsplash_bundles_utc() -> None:
    table = pa.table({"id": ["a.jpg"], "image": ["https://example.com/a.jpg"],
                      "page_url": pa.array([None], pa.string()),
                      "description": [""], "photographer": pa.array([None], pa.string()),
                      "date": ["2019-07-14T18:30:00"]})
    assert ItemCatalog(table, {}, local_dates=True).hit(0, 1.0).date == "2019-07-14T18:30:00"
    assert ItemCatalog(table, {}).hit(0, 1.0).date == "2019-07-14T18:30:00Z"


def test_a_folder_that_failed_to_load_is_answered_with_the_folder_commands(tmp_path: Path) -> None:
    notice = demo_notice(str(tmp_path), "its model folder is not there")
    assert FOLDER_COMMAND in notice and BUILD_COMMAND not in notice and "--push-to" not in notice
    assert FOLDER_COMMAND in demo_notice("./my-photos", "missing")
    hub = demo_notice("someone/photos@main", "cannot download")
    assert BUILD_COMMAND in hub and FOLDER_COMMAND not in hub
    assert FOLDER_COMMAND in demo_notice(None, None) and BUILD_COMMAND in demo_notice(None, None)


def test_the_dominant_colour_is_the_subjects_not_the_plain_background() -> None:
    shares = measure(108, seed=3)  # every palette colour on every plain background, twice
    assert shares["subject"]["all"] >= 0.9
    assert shares["whole picture"]["all"] < 0.5  # the rule before named the background


# --- built folders: one with named files, one with camera names only ---

def exif_picture(colour: tuple[int, int, int], shape: str) -> tuple[Image.Image, Image.Exif]:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 18:30:00"  # DateTimeOriginal: the camera's clock, no zone
    exif.get_ifd(0x8825).update({1: "N", 2: (59.0, 54.0, 36.0), 3: "W", 4: (10.0, 45.0, 0.0)})
    return shape_picture(colour, shape, 0), exif


@pytest.fixture(scope="module")
def named_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of named pictures (one with EXIF date and GPS) and camera-named ones, built once."""
    root = tmp_path_factory.mktemp("named")
    photos, beach = root / "photos", root / "photos" / "Holiday 2021" / "Beach"
    beach.mkdir(parents=True)
    picture, exif = exif_picture((220, 30, 30), "circle")
    picture.save(photos / "red-circle-24.jpg", exif=exif)
    shape_picture((30, 70, 225), "square", 4).save(beach / "IMG_1234.JPG")
    shape_picture((30, 170, 50), "triangle", 2).save(photos / "green triangle.png")
    shape_picture((240, 220, 40), "circle", 6).save(photos / "IMG_0001.jpg")
    build_bundle(config(root / "out", photos))
    return root / "out"


@pytest.fixture(scope="module")
def camera_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose files have camera names only: no words to make examples of."""
    root = tmp_path_factory.mktemp("camera")
    photos = root / "DCIM"
    photos.mkdir()
    colours = [(220, 30, 30), (30, 70, 225), (30, 170, 50), (240, 220, 40), (130, 50, 170), (240, 140, 20)]
    for number, colour in enumerate(colours):
        shape_picture(colour, ("circle", "square", "triangle")[number % 3], number).save(
            photos / f"IMG_{number:04d}.jpg")
    build_bundle(config(root / "out", photos))
    return root / "out"


def test_a_folder_bundle_speaks_its_own_words_dates_and_places(named_folder: Path, demo_encoder) -> None:
    engine = SearchEngine(demo_encoder, Bundle.load(named_folder))
    ui = engine.bundle.manifest.ui
    assert ui is not None and ui.examples and ui.text_threshold is not None
    assert set(ui.examples) <= {"red circle", "green triangle", "Beach"} and not any("IMG" in e for e in ui.examples)
    catalog = engine.bundle.catalog
    red = catalog.hit(catalog.row_of("red-circle-24.jpg"), 1.0)
    assert (red.description, red.date, red.latitude, red.longitude) == ("red circle", "2019-07-14T18:30:00",
                                                                        59.91, -10.75)
    assert red.colour == "red"  # the subject, not the near-white background
    beach = catalog.hit(catalog.row_of("Holiday 2021/Beach/IMG_1234.JPG"), 1.0)
    assert beach.description == "Beach"
    shown = re.sub("<[^>]+>", "", html.unescape(detail_html(red, named_folder)))
    assert "local file red-circle-24.jpg" in shown and "2019-07-14 18:30:00" in shown and "59.910° N" in shown
    assert "images/" not in shown


def test_a_collection_without_examples_opens_on_a_diverse_sample(camera_folder: Path, demo_encoder) -> None:
    engine = SearchEngine(demo_encoder, Bundle.load(camera_folder))
    ui = engine.bundle.manifest.ui
    assert ui is not None and ui.examples == () and len(ui.sample) == len(set(ui.sample)) == 6
    query, _, page, status, session = SearchUI(Startup(engine, None, False)).ui_load(None)
    assert query == "" and [hit.id for hit in session.view.hits] == list(ui.sample)
    assert page.count('class="tile"') == 6 and "range of this collection" in status
    assert page.count('<span class="score"></span>') == 6  # not a query's hits: no similarity to show


def test_a_moved_folder_bundle_carries_its_model(named_folder: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = json.loads((named_folder / "manifest.json").read_text())
    assert manifest["encoder"] == {"model": "local-dir:model", "pretrained": None}
    # A published bundle names its folder, not where the builder keeps it (/tmp/.../named0/photos).
    assert manifest["source"]["name"] == "images-dir:photos"
    moved = tmp_path / "published" / "photos-index"
    shutil.copytree(named_folder, moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    engine = load_engine(EngineConfig(index=str(moved), onnx_text=False))
    assert engine.encoder.spec.local_dir == (moved / "model").resolve()
    assert engine.search_text("red circle", 1)[0].id == "red-circle-24.jpg"


def test_a_model_folder_that_is_not_there_is_refused_with_what_to_do(named_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(named_folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["encoder"]["model"] = "local-dir:../builders-checkout/model"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="rebuild the index with build_index.py, which copies a local-dir: model") \
            as refused:
        load_engine(EngineConfig(index=str(copy), onnx_text=False))
    assert "builders-checkout" not in str(refused.value)  # names no path outside the bundle


def test_a_hub_download_fetches_the_model_the_bundle_carries(named_folder: Path) -> None:
    from huggingface_hub.utils import filter_repo_objects

    from search.bundle.hub import BUNDLE_PATTERNS

    listed = sorted(json.loads((named_folder / "manifest.json").read_text())["files"])
    assert any(name.startswith("model/") for name in listed)
    assert sorted(filter_repo_objects(listed, allow_patterns=BUNDLE_PATTERNS)) == listed


def test_a_model_file_the_manifest_does_not_list_is_refused(named_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(named_folder, copy)
    (copy / "model" / "other.safetensors").write_bytes(b"planted")
    with pytest.raises(BundleError, match=r"model files its manifest does not list \(other.safetensors\)"):
        load_engine(EngineConfig(index=str(copy), onnx_text=False))
    with pytest.raises(BundleError, match=r"model files its manifest does not list \(other.safetensors\)"):
        Bundle.load(copy)  # checked once, on load: the bundle is never handed out


def test_a_hub_snapshot_may_not_name_a_model_folder_outside_itself(tmp_path: Path) -> None:
    # The huggingface_hub cache layout: the demo bundle names `local-dir:../model`, a folder beside the snapshot.
    repo = tmp_path / "datasets--someone--index"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(REPO_ROOT / "assets" / "demo" / "index", snapshot)
    shutil.copytree(REPO_ROOT / "assets" / "demo" / "model", snapshot.parent / "model")
    with pytest.raises(BundleError, match="names a model folder outside itself"):
        Bundle.load(snapshot)  # checked once, on load: the bundle is never handed out


def test_a_build_never_deletes_someone_elses_files_in_its_model_folder(tmp_path: Path) -> None:
    from search.build.bundled_model import ModelCopyError, bundled_encoder
    from search.config import EncoderSpec

    notes = tmp_path / "out" / "model" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(ModelCopyError, match="holds 'notes.txt'"):
        bundled_encoder(EncoderSpec(f"local-dir:{REPO_ROOT / 'assets' / 'demo' / 'model'}", None), tmp_path / "out")
    assert notes.read_text() == "mine"
