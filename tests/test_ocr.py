"""build_index.py --ocr: the words in each picture (search/build/ocr.py) in the bundle's words_in_picture column,
matched by text queries through the keyword index, shown in the detail view, filtered on with has_text; bundles
without the column load and search as before. One small build (5 pictures) for the module: OCR costs ~0.3-2 s a
picture on this CPU."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageFont

from search import cli
from search.build import ocr
from search.build.ocr import MAX_FRAGMENTS, MIN_CONFIDENCE, OcrUnavailableError, clean_fragments
from search.build.pipeline import BuildError, _check_state, build_bundle
from search.bundle.attributes import MAX_WORDS_CHARS
from search.bundle.store import Bundle
from search.errors import BadQueryError
from search.query.engine import SearchEngine
from search.query.options import SearchOptions
from search.web.options_panel import available_options
from search.web.render import detail_html
from tests.module_imports import modules_imported_on_load
from tests.test_images_dir_bundle import config

WORDS = {"pic-1.png": ("COFFEE", (236, 214, 170), 0), "pic-2.png": ("PARKING", (190, 215, 245), 8),
         "pic-3.png": ("BAKERY", (60, 60, 70), -8)}
"""Pictures with a word: file -> (word, background, angle in degrees). File names are words too (a folder build
indexes them), so they say nothing the picture shows."""
PLAIN = ("pic-4.png", "pic-5.png")


def sign(word: str | None, background: tuple[int, int, int], angle: float, shape: tuple[int, int, int]) -> Image.Image:
    """A small picture: a coloured shape and, when given, a word in Pillow's own font (no system font needed)."""
    image = Image.new("RGB", (320, 240), background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((200, 20, 300, 120), fill=shape)
    if word is not None:
        ink = (250, 250, 250) if sum(background) < 300 else (20, 20, 20)
        draw.text((24, 130), word, fill=ink, font=ImageFont.load_default(size=44))
    return image.rotate(angle, fillcolor=background) if angle else image


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One --ocr build of three signs and two pictures without words."""
    root = tmp_path_factory.mktemp("ocr")
    photos = root / "photos"
    photos.mkdir()
    for name, (word, background, angle) in WORDS.items():
        sign(word, background, angle, (200, 40, 40)).save(photos / name)
    for name, shape in zip(PLAIN, ((200, 40, 40), (40, 160, 60)), strict=True):
        sign(None, (235, 235, 235), 0, shape).save(photos / name)
    build_bundle(config(root / "out", photos, ocr=True))
    return root / "out"


@pytest.fixture(scope="module")
def engine(built: Path, demo_encoder) -> SearchEngine:
    return SearchEngine(demo_encoder, Bundle.load(built))


def test_a_build_with_ocr_stores_the_words_found_in_each_picture(built: Path) -> None:
    rows = pq.read_table(built / "metadata.parquet", columns=["id", "words_in_picture"]).to_pylist()
    found = {row["id"]: row["words_in_picture"] for row in rows}
    assert {name: found[name] for name in WORDS} == {name: word for name, (word, _, _) in WORDS.items()}
    assert [found[name] for name in PLAIN] == ["", ""]  # read, and nothing found


@pytest.mark.parametrize("name", list(WORDS))
def test_a_text_query_naming_the_word_ranks_its_picture_first_through_keywords(engine: SearchEngine,
                                                                               name: str) -> None:
    word = WORDS[name][0].lower()
    rows, _ = engine.bundle.keywords.search(word, 5)
    assert [engine.bundle.catalog.item_id(int(row)) for row in rows] == [name]  # only its picture has the word
    assert engine.search_text(word, 5)[0].id == name


def test_the_detail_view_shows_the_words_escaped(engine: SearchEngine) -> None:
    hit = engine.search_text("coffee", 1)[0]
    assert hit.words_in_picture == "COFFEE"
    assert "<dt>Words in the picture</dt><dd>COFFEE</dd>" in detail_html(hit, engine.bundle.root)
    shown = detail_html(replace(hit, words_in_picture='<b>SALE</b>\n"50%"'), engine.bundle.root)
    assert "<dd>&lt;b&gt;SALE&lt;/b&gt; · &quot;50%&quot;</dd>" in shown


def test_has_text_keeps_the_pictures_with_words_or_those_without(engine: SearchEngine, built: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def ids(value: str) -> set[str]:
        return {hit.id for hit in engine.search_text("a sign", 10, -1.0, SearchOptions.from_params(
            {"has_text": value}))}

    assert ids("true") == set(WORDS) and ids("false") == set(PLAIN)
    assert "has_text" in available_options(engine)
    assert cli.main(["a sign", "--index", str(built), "--has-text", "true", "--json"]) == 0
    assert {hit["id"] for hit in json.loads(capsys.readouterr().out)} == set(WORDS)
    with pytest.raises(BadQueryError, match="has_text must be true or false"):
        SearchOptions.from_params({"has_text": "maybe"})


def test_a_bundle_without_words_loads_and_searches_as_before(demo_engine: SearchEngine) -> None:
    assert "has_text" not in available_options(demo_engine)
    assert all(hit.words_in_picture is None for hit in demo_engine.search_text("a red circle", 5))
    with pytest.raises(BadQueryError, match="no words_in_picture data to filter on.*build_index.py --ocr"):
        demo_engine.search_text("a red circle", 5, options=SearchOptions.from_params({"has_text": "true"}))


def test_the_ray_tasks_read_the_words_with_the_same_function(built: Path, demo_encoder, tmp_path: Path) -> None:
    """The Ray task function itself, without Ray: a --ocr build's facts carry the words, as threads' do."""
    from search.build.fetch import ImageFetcher
    from search.build.pipeline import _Pipeline
    from search.build.ray_build import _prepare_batch, _stage
    from search.build.shards import ShardStore
    from search.build.sources import folder_items

    photos = built.parent / "photos"
    items = [item for item in folder_items(photos) if item.id == "pic-2.png"]
    pipeline = _Pipeline(demo_encoder, ImageFetcher(config(tmp_path, photos).fetch), ShardStore(tmp_path / "s", 1),
                         config(tmp_path / "out", photos, ocr=True))
    batch = {"position": np.arange(1), "id": np.array(["pic-2.png"]), "location": np.array([items[0].location]),
             "thumbnail": np.array([items[0].thumbnail])}
    facts = json.loads(_prepare_batch(batch, _stage(pipeline, "cpu"))["facts"][0])
    assert facts["words_in_picture"] == "PARKING"


def test_a_build_started_without_ocr_is_not_resumed_with_it(tmp_path: Path) -> None:
    work = tmp_path / "out" / ".build"
    (work / "shards").mkdir(parents=True)
    (work / "shards" / "shard-000000.parquet").touch()  # a committed shard: the folder has something to protect
    photos = tmp_path / "photos"
    source = config(tmp_path / "out", photos).source.name
    (work / "build.json").write_text(json.dumps({"source": source, "revision": None, "base": None}))  # no "ocr"
    with pytest.raises(BuildError, match=r"holds an unfinished or earlier build with other ocr \(ocr=None\)"):
        _check_state(work, config(tmp_path / "out", photos, ocr=True), None)
    _check_state(work, config(tmp_path / "out", photos), None)  # an old build folder resumes as before


def test_fragments_are_kept_only_when_confident_longer_than_one_character_and_within_bounds() -> None:
    assert clean_fragments([("STOP", 0.99), ("X", 0.99), ("7", 0.98), ("blur", MIN_CONFIDENCE - 0.01),
                            ("STOP", 0.97), ("  two\tspaced\u202e words ", 0.9), ("§!", 0.99), (None, 0.9),
                            ("nan", float("nan"))]) == "STOP\ntwo spaced words"
    many = clean_fragments((f"word{number}", 0.9) for number in range(100))
    assert len(many.splitlines()) == MAX_FRAGMENTS
    long = clean_fragments([("A" * 300, 0.9), ("B" * 300, 0.9), ("C" * 100, 0.9)])
    assert long == "A" * 300 + "\n" + "C" * 100 and len(long) <= MAX_WORDS_CHARS


def test_without_the_ocr_package_a_build_asking_for_it_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # an import of it now fails
    monkeypatch.setattr(ocr, "_loaded", ocr._loaded.__wrapped__)  # uncached: this process may have loaded it
    with pytest.raises(OcrUnavailableError, match=r"pip install -r requirements-ocr.txt"):
        ocr.load_reader()


def test_the_ocr_package_is_imported_only_when_a_build_asks_for_it() -> None:
    """The Space installs requirements.txt alone: no module of the app or the build imports rapidocr on load."""
    for path, packages in modules_imported_on_load().items():
        assert not packages & {"rapidocr_onnxruntime", "cv2"}, path
