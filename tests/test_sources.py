"""Build sources: the nested Unsplash schema, parquet streaming, image folders, CDN resizing."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from search.build.sources import (
    DEFAULT_DATASET,
    SourceConfig,
    SourceError,
    count_items,
    folder_items,
    iter_items,
    resized_url,
    unsplash_item,
)
from search.build.thumbnails import thumbnail_path

# The real nested schema of 1aurent/unsplash-lite (its dataset card), trimmed of nothing we read.
UNSPLASH_SCHEMA = pa.schema([
    ("photo", pa.struct([("id", pa.string()), ("url", pa.string()), ("image_url", pa.string()),
                         ("submitted_at", pa.string()), ("featured", pa.bool_()), ("width", pa.uint16()),
                         ("height", pa.uint16()), ("aspect_ratio", pa.float32()), ("description", pa.string()),
                         ("blur_hash", pa.string())])),
    ("photographer", pa.struct([("username", pa.string()), ("first_name", pa.string()),
                                ("last_name", pa.string())])),
    ("exif", pa.struct([(name, pa.string()) for name in ("camera_make", "camera_model", "iso", "aperture_value",
                                                           "focal_length", "exposure_time")])),
    ("location", pa.struct([("name", pa.string()), ("latitude", pa.float32()), ("longitude", pa.float32()),
                            ("country", pa.string()), ("city", pa.string())])),
    ("stats", pa.struct([("views", pa.uint32()), ("downloads", pa.uint32())])),
    ("ai", pa.struct([("description", pa.string()), ("primary_landmark_name", pa.string()),
                      ("primary_landmark_latitude", pa.string()), ("primary_landmark_longitude", pa.string()),
                      ("primary_landmark_confidence", pa.string())])),
    ("keywords", pa.list_(pa.struct([("keyword", pa.string()), ("ai_service_1_confidence", pa.string()),
                                     ("ai_service_2_confidence", pa.string()), ("suggested_by_user", pa.bool_())]))),
    ("collections", pa.list_(pa.struct([("collection_id", pa.string()), ("collection_title", pa.string()),
                                        ("photo_collected_at", pa.string())]))),
])


def unsplash_row(photo_id: str, image_url: str, number: int = 0, photo: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """One row in the nested schema; every third has no photo description (the AI one is used)."""
    described = number % 3 != 0
    return {
        "photo": {"id": photo_id, "url": f"https://unsplash.com/photos/{photo_id}", "image_url": image_url,
                  "submitted_at": "2020-01-01 00:00:00", "featured": True, "width": 4000 + number,
                  "height": 3000, "aspect_ratio": 1.33, "blur_hash": "LEHV6nWB2yk8",
                  "description": f"photo {number} of a thing" if described else None, **(photo or {})},
        "photographer": {"username": f"user{number}", "first_name": "Ana" if number % 2 else None,
                         "last_name": f"Número {number}" if number % 2 else None},
        "exif": {"camera_make": "Canon", "camera_model": None, "iso": "100", "aperture_value": "2.8",
                 "focal_length": "50", "exposure_time": "1/200"},
        "location": {"name": "Oslo, Norway", "latitude": 59.9, "longitude": 10.7, "country": "Norway",
                     "city": "Oslo"},
        "stats": {"views": 1000, "downloads": 10},
        "ai": {"description": f"ai says thing {number}", "primary_landmark_name": None,
               "primary_landmark_latitude": None, "primary_landmark_longitude": None,
               "primary_landmark_confidence": None},
        "keywords": [{"keyword": "thing", "ai_service_1_confidence": "90", "ai_service_2_confidence": None,
                      "suggested_by_user": False}],
        "collections": [],
    }


def write_unsplash_parquet(path: Path, urls: Sequence[tuple[str, str]], row_group_size: int = 16) -> Path:
    """A parquet file of (photo id, image url) rows in the real nested schema."""
    rows = [unsplash_row(photo_id, url, number) for number, (photo_id, url) in enumerate(urls)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=UNSPLASH_SCHEMA), path, row_group_size=row_group_size)
    return path


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_nested_row_maps_to_item_metadata() -> None:
    item = unsplash_item(unsplash_row("abc", "https://images.unsplash.com/photo-1?ixid=x", 1))
    assert item is not None and item.id == "abc" and item.location == "https://images.unsplash.com/photo-1?ixid=x"
    assert item.metadata == {"image": "https://images.unsplash.com/photo-1?ixid=x",
                             "page_url": "https://unsplash.com/photos/abc", "description": "photo 1 of a thing",
                             "photographer": "Ana Número 1", "photographer_username": "user1",
                             "width": 4001, "height": 3000, "date": "2020-01-01T00:00:00", "featured": True,
                             "location_name": "Oslo, Norway", "city": "Oslo", "country": "Norway",
                             "latitude": pytest.approx(59.9), "longitude": pytest.approx(10.7),
                             "camera_make": "Canon", "camera_model": None, "views": 1000, "downloads": 10,
                             "ai_description": "ai says thing 1", "keywords": "thing",
                             "blur_hash": "LEHV6nWB2yk8"}


@pytest.mark.parametrize(("field", "value", "column", "expected"), [
    ("submitted_at", "2021-02-03 04:05:06.789+02:00", "date", "2021-02-03T02:05:06"),
    ("submitted_at", "2021-02-30 00:00:00", "date", None),
    ("submitted_at", "yesterday", "date", None),
    ("width", -5, "width", None),
    ("featured", "yes", "featured", None),
])
def test_odd_photo_values_become_none_not_bad_columns(field: str, value: Any, column: str, expected: Any) -> None:
    item = unsplash_item(unsplash_row("abc", "https://x/y.jpg", 1, photo={field: value}))
    assert item is not None and item.metadata[column] == expected


def test_positions_out_of_range_or_unset_are_dropped_and_only_confident_keywords_kept() -> None:
    row = unsplash_row("abc", "https://x/y.jpg", 1)
    row["location"].update(latitude=95.0)
    row["keywords"] = [{"keyword": "sea", "ai_service_1_confidence": "97.5", "ai_service_2_confidence": None,
                        "suggested_by_user": False},
                       {"keyword": "maybe", "ai_service_1_confidence": "12", "ai_service_2_confidence": "bad",
                        "suggested_by_user": False},
                       {"keyword": "Oslo, harbour", "ai_service_1_confidence": None,
                        "ai_service_2_confidence": None, "suggested_by_user": True}]
    metadata = unsplash_item(row).metadata
    assert metadata["latitude"] is None and metadata["longitude"] is None
    assert metadata["keywords"] == "sea, Oslo harbour"
    row["location"].update(latitude=0.0, longitude=0.0)
    assert unsplash_item(row).metadata["latitude"] is None


def test_description_falls_back_to_ai_and_photographer_to_username() -> None:
    item = unsplash_item(unsplash_row("abc", "https://x/y.jpg", 0))
    assert item is not None
    assert item.metadata["description"] == "ai says thing 0"
    assert item.metadata["photographer"] == "user0"


@pytest.mark.parametrize("photo", [{"id": None}, {"image_url": None}, {"image_url": ""}])
def test_rows_without_id_or_image_are_not_items(photo: dict[str, Any]) -> None:
    assert unsplash_item(unsplash_row("abc", "https://x/y.jpg", photo=photo)) is None
    assert unsplash_item({}) is None


def test_parquet_files_stream_in_order_through_datasets(tmp_path: Path) -> None:
    first = write_unsplash_parquet(tmp_path / "data" / "a.parquet", [(f"a{n}", f"http://h/{n}.jpg") for n in range(20)])
    write_unsplash_parquet(tmp_path / "data" / "b.parquet", [(f"b{n}", f"http://h/{n}.jpg") for n in range(5)])
    ids = [item.id for item in iter_items(SourceConfig(data_files=str(tmp_path / "data" / "*.parquet")))]
    assert ids == [f"a{n}" for n in range(20)] + [f"b{n}" for n in range(5)]
    assert [item.id for item in iter_items(SourceConfig(data_files=str(tmp_path / "data")))] == ids
    assert [item.id for item in iter_items(SourceConfig(data_files=str(first)))] == ids[:20]
    assert count_items(SourceConfig(data_files=str(tmp_path / "data"))) == 25


def test_a_glob_matching_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="matches no file"):
        list(iter_items(SourceConfig(data_files=str(tmp_path / "*.parquet"))))


def test_hub_data_set_is_streamed_with_the_pinned_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.IterableDataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([unsplash_row("p1", "https://images.unsplash.com/p1", 1)]
                                          ).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = list(iter_items(SourceConfig(revision="21e2b62")))
    assert [item.id for item in items] == ["p1"]
    assert calls == [((DEFAULT_DATASET,), {"split": "train", "streaming": True, "revision": "21e2b62"})]
    assert SourceConfig(revision="21e2b62").pinned_revision == "21e2b62"


@pytest.mark.usefixtures("hub_offline")
def test_an_unreachable_hub_data_set_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match="cannot stream someone/missing"):
        list(iter_items(SourceConfig(dataset="someone/missing")))


def test_image_folder_items_are_recursive_sorted_and_skip_non_images(tmp_path: Path) -> None:
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for relative in ("b.png", "a.JPG", "nested/ünïcödé 写真.jpg", "nested/deeper/c.webp", ".hidden/x.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / relative, "PNG")
    (tmp_path / "notes.txt").write_text("not a picture")
    items = list(folder_items(tmp_path))
    assert [item.id for item in items] == ["a.JPG", "b.png", "nested/deeper/c.webp", "nested/ünïcödé 写真.jpg"]
    assert all(Path(item.location).is_absolute() and Path(item.location).is_file() for item in items)
    assert items[0].metadata["image"] == items[0].thumbnail == thumbnail_path("a.JPG")
    assert len({item.thumbnail for item in items}) == len(items)
    assert all(item.thumbnail.startswith("images/") and "/" not in item.thumbnail[7:] for item in items)
    assert count_items(SourceConfig(images_dir=tmp_path)) == 5  # a cheap estimate: hidden files counted


def test_a_missing_image_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a folder"):
        list(folder_items(tmp_path / "nope"))


@pytest.mark.parametrize(("url", "width", "expected"), [
    ("https://images.unsplash.com/photo-1?ixid=abc&w=4000", 384,
     "https://images.unsplash.com/photo-1?ixid=abc&w=384"),
    ("https://images.unsplash.com/photo-1", 512, "https://images.unsplash.com/photo-1?w=512"),
    ("https://images.unsplash.com/photo-1?ixid=abc", None, "https://images.unsplash.com/photo-1?ixid=abc"),
    ("https://example.com/photo.jpg?w=10", 384, "https://example.com/photo.jpg?w=10"),
    ("http://127.0.0.1:8000/ok/a.jpg", 384, "http://127.0.0.1:8000/ok/a.jpg"),
])
def test_cdn_urls_ask_for_a_resized_rendition(url: str, width: int | None, expected: str) -> None:
    assert resized_url(url, width) == expected


@pytest.mark.parametrize("page", ["javascript:alert(1)", "file:///etc/passwd", "unsplash.com/photos/abc", "", 42])
def test_a_page_url_that_is_not_http_is_dropped(page: object) -> None:
    row = unsplash_row("abc", "https://images.unsplash.com/photo-1", 1)
    row["photo"]["url"] = page
    item = unsplash_item(row)
    assert item is not None and item.metadata["page_url"] is None


def test_rows_are_kept_within_the_limits_a_bundle_loads_with() -> None:
    row = unsplash_row("abc", "https://images.unsplash.com/photo-1", 1, photo={"description": "x" * 5000})
    row["photographer"]["first_name"] = "y" * 5000
    item = unsplash_item(row)
    assert item is not None and len(item.metadata["description"]) == 2000 and len(item.metadata["photographer"]) == 2000
    assert unsplash_item(unsplash_row("abc", "https://images.unsplash.com/" + "p" * 3000, 1)) is None
    assert unsplash_item(unsplash_row("i" * 2001, "https://images.unsplash.com/photo-1", 1)) is None
    long_page = unsplash_row("abc", "https://images.unsplash.com/photo-1", 1, photo={"url": "https://u/" + "q" * 3000})
    assert unsplash_item(long_page).metadata["page_url"] is None


def test_a_date_before_the_year_1000_keeps_four_digits() -> None:
    item = unsplash_item(unsplash_row("abc", "https://x/y.jpg", 1, photo={"submitted_at": "0005-01-02 03:04:05"}))
    assert item is not None and item.metadata["date"] == "0005-01-02T03:04:05"  # the bundle's date rule


@pytest.mark.parametrize(("page", "kept"), [("HTTPS://unsplash.com/p/4", "https://unsplash.com/p/4"),
                                            ("https://unsplash.com/p 4", None), ("https:///x", None)])
def test_a_page_link_is_kept_only_as_the_bundle_rule_allows(page: str, kept: str | None) -> None:
    item = unsplash_item(unsplash_row("abc", "HTTP://images.example/a.jpg", 1, photo={"url": page}))
    assert item is not None and item.metadata["page_url"] == kept
    assert item.location == item.metadata["image"] == "http://images.example/a.jpg"  # a scheme is case-blind


def test_rows_that_break_a_bundle_rule_carry_it_as_their_problem(tmp_path: Path) -> None:
    urls = [(f"r{number}", f"https://images.example/{number}.jpg") for number in range(6)]
    urls[2] = ("r2", "https://images.example/p 2.jpg")
    urls[3] = ("r3", "https:///x.jpg")
    write_unsplash_parquet(tmp_path / "rows.parquet", urls, row_group_size=4)
    write_not_utf8(tmp_path / "rows.parquet", row=4)
    items = list(iter_items(SourceConfig(data_files=str(tmp_path / "rows.parquet"))))
    assert [item.id for item in items] == [f"r{number}" for number in range(6)]
    assert {item.id: item.problem for item in items if item.problem} == {
        "r2": "image must be an http(s) URL or a bundle file listed in manifest.json",
        "r3": "image must be an http(s) URL or a bundle file listed in manifest.json",
        "r4": "its text is not valid UTF-8"}
    assert "\ufffd" in items[4].metadata["description"]


def write_not_utf8(path: Path, row: int) -> None:
    """Rewrite a parquet file of the Unsplash schema so that row `row`'s photo description is not UTF-8."""
    table = pq.read_table(path)
    photo = table.column("photo").combine_chunks()
    texts = [None if text is None else text.encode() for text in photo.field("description").to_pylist()]
    texts[row] = b"caf\xe9 \xff"
    fields = [pa.array(texts, pa.binary()).view(pa.string()) if part.name == "description" else photo.field(number)
              for number, part in enumerate(photo.type)]
    table = table.set_column(0, "photo", pa.StructArray.from_arrays(fields, fields=list(photo.type)))
    pq.write_table(table, path, row_group_size=4)
