"""A person's own folder (`build_index.py --images-dir`) as a first-class collection: words from its own names,
captions and detail from the original file, EXIF dates as the camera's local time, the place shown, the start-up
notice with the folder commands."""

from __future__ import annotations

import html
import re
from pathlib import Path, PurePosixPath

import pyarrow as pa

from bench.dominant_colour import measure
from search.build.picture_facts import exif_date
from search.build.sources import name_words
from search.bundle.attributes import DATE_PATTERN
from search.bundle.metadata import ItemCatalog
from search.types import Hit
from search.web.page_text import date_text, place_text
from search.web.render import detail_html, tile_html
from search.web.startup import BUILD_COMMAND, FOLDER_COMMAND, demo_notice


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
