"""Where build items come from: an HF data set (streamed), local parquet files, or a folder of images."""

from __future__ import annotations

import glob
import itertools
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from search.build.thumbnails import thumbnail_path
from search.bundle.attributes import MAX_COUNT
from search.bundle.manifest import FOLDER_SOURCE
from search.bundle.metadata import MAX_TEXT, MAX_URL, canonical_url, is_web_url, row_problems
from search.errors import SearchError, one_line

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "1aurent/unsplash-lite"
UNSPLASH_LITE_ROWS = 25_000  # about; the data set card lists no split sizes to read instead
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
KEYWORD_CONFIDENCE = 50.0
"""Keep an AI-given keyword at this confidence (0-100) or above; a person's suggestion always."""
CHECK_BATCH = 256  # rows read and checked together
NOT_UTF8 = "its text is not valid UTF-8"
RESIZABLE_HOSTS = frozenset({"images.unsplash.com", "plus.unsplash.com"})  # imgix CDNs that honour ?w=
CAMERA_WORDS = frozenset({"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "gopr", "dji", "imag", "sam", "wp", "pic",
                          "image", "photo", "scan", "screenshot", "edited", "copy", "final", "jpg", "jpeg", "png"})
"""Words camera and phone file names are made of ("IMG_1234", "PXL_20210503_..."): they say nothing of the picture."""
_NAME_WORD = re.compile(r"[^\W\d_]{2,20}")  # letters only: digits are counters and dates; longer runs are hashes


class SourceError(SearchError):
    """A data set, parquet glob or image folder that cannot be read as a build source."""


@dataclass(frozen=True, slots=True)
class Item:
    """One picture to embed: a unique id, where its bytes are (URL or file path) and its metadata row.

    `thumbnail`: the bundle-relative path where the build saves a small copy (local files only; the
    metadata's `image` names the same path, so the bundle never points outside itself). `problem`: the bundle
    rule the row breaks (search/bundle/metadata.py `check_rows`); the build records it as a failure, unfetched.
    """

    id: str
    location: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    thumbnail: str | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Exactly one of dataset (default), data_files or images_dir; revision pins a Hub data set."""

    dataset: str = DEFAULT_DATASET
    revision: str | None = None
    data_files: str | None = None
    images_dir: Path | None = None

    @property
    def name(self) -> str:
        """The source in full: what a build folder records, so a resume reads the same files."""
        if self.images_dir is not None:
            return f"{FOLDER_SOURCE}{self.images_dir}"
        if self.data_files is not None:
            return f"parquet:{self.data_files}"
        return self.dataset

    @property
    def published_name(self) -> str:
        """What the published manifest records: a local source by its last part, not the builder's /home/..."""
        if self.images_dir is not None:
            return f"{FOLDER_SOURCE}{self.images_dir.resolve().name}"
        if self.data_files is not None:
            return f"parquet:{Path(self.data_files).name}"
        return self.dataset

    @property
    def pinned_revision(self) -> str | None:
        """The revision recorded in the manifest (only a Hub data set has one)."""
        return self.revision if self.images_dir is None and self.data_files is None else None


def iter_items(config: SourceConfig) -> Iterator[Item]:
    """Items of the configured source, in a stable order, each checked with the bundle's own rules (`problem`);
    rows without an id or image are skipped."""
    items = _source_items(config)
    while True:  # in batches: one check per batch while its rows are clean
        batch: list[Item] = []
        try:
            for item in itertools.islice(items, CHECK_BATCH):
                batch.append(item)
        finally:  # a stream that breaks still hands over the rows it gave
            yield from _checked(batch)
        if len(batch) < CHECK_BATCH:
            return


def _source_items(config: SourceConfig) -> Iterator[Item]:
    if config.images_dir is not None:
        yield from folder_items(config.images_dir)
        return
    for row, problem in _stream_rows(config):
        item = unsplash_item(row)
        if item is None:
            logger.warning("skipping a row without a usable photo id or image_url (missing or too long)")
            continue
        yield item if problem is None else replace(item, problem=problem)


def _checked(items: list[Item]) -> list[Item]:
    """The items, each with the first bundle rule its row breaks as its `problem` (search/bundle/metadata.py)."""
    rows = [{"id": item.id, **item.metadata} for item in items]
    problems = row_problems(rows, {item.thumbnail for item in items if item.thumbnail is not None})
    return [item if item.problem or not problem else replace(item, problem=problem)
            for item, problem in zip(items, problems, strict=True)]


def count_items(config: SourceConfig) -> int | None:
    """How many rows or files the source holds, when that is cheap to know (for the progress bar's ETA)."""
    if config.images_dir is not None:
        root = Path(config.images_dir)
        return sum(path.suffix.lower() in IMAGE_SUFFIXES for path in root.rglob("*")) if root.is_dir() else None
    if config.data_files is not None:
        import pyarrow.parquet as pq

        try:
            return sum(pq.ParquetFile(path).metadata.num_rows for path in _expand_files(config.data_files))
        except (OSError, ValueError, SourceError):
            return None
    return UNSPLASH_LITE_ROWS if config.dataset == DEFAULT_DATASET else None


def _stream_rows(config: SourceConfig) -> Iterator[tuple[dict[str, Any], str | None]]:
    """The source's rows, each with None or why it cannot be an item (its text is not UTF-8: then it comes
    decoded with replacement characters, to be recorded as a failure under a stable id)."""
    # Imported here: `datasets` is slow to import and only URL sources need it.
    import datasets

    try:
        if config.data_files is not None:
            files = _expand_files(config.data_files)
            stream = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
        else:
            stream = datasets.load_dataset(config.dataset, split="train", streaming=True, revision=config.revision)
        # Arrow batches, not Python rows: a row whose text is not UTF-8 would stop the whole stream.
        for batch in stream.with_format("arrow").iter(batch_size=CHECK_BATCH):
            yield from _python_rows(batch)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        detail = one_line(exc, 300)
        raise SourceError(f"cannot stream {config.name}: {detail}; check the name, --revision, the files "
                          "and the network (HF_TOKEN for a gated data set)") from exc


def _python_rows(batch: pa.Table) -> Iterator[tuple[dict[str, Any], str | None]]:
    try:
        rows = batch.to_pylist()
    except UnicodeDecodeError:  # find the rows at fault
        for number in range(batch.num_rows):
            row = batch.slice(number, 1)
            try:
                yield row.to_pylist()[0], None
            except UnicodeDecodeError:
                yield _replaced(row.cast(_as_binary(row.schema)).to_pylist()[0]), NOT_UTF8
        return
    for row in rows:
        yield row, None


def _as_binary(schema: pa.Schema) -> pa.Schema:
    """`schema` with every text field, nested ones too, as bytes."""
    def kind(value: pa.DataType) -> pa.DataType:
        if pa.types.is_string(value) or pa.types.is_large_string(value):
            return pa.large_binary()
        if pa.types.is_struct(value):
            return pa.struct([part.with_type(kind(part.type)) for part in value])
        if pa.types.is_list(value) or pa.types.is_large_list(value):
            return pa.list_(kind(value.value_type))
        return value

    return pa.schema([part.with_type(kind(part.type)) for part in schema])


def _replaced(value: Any) -> Any:
    """Bytes (nested in dicts and lists too) as text, with U+FFFD for what is not UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {key: _replaced(part) for key, part in value.items()}
    return [_replaced(part) for part in value] if isinstance(value, list) else value


def _expand_files(pattern: str) -> list[str]:
    """Parquet paths of a file, folder or glob, sorted so the item order is stable."""
    path = Path(pattern).expanduser()
    files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else sorted(glob.glob(str(path)))
    if not files:
        raise SourceError(f"--data-files {pattern!r} matches no file; give a parquet file, folder or glob")
    return files


def unsplash_item(row: Mapping[str, Any]) -> Item | None:
    """Map one nested Unsplash Lite row (photo, photographer, ai, ...) to an Item."""
    photo = row.get("photo") or {}
    people = row.get("photographer") or {}
    ai = row.get("ai") or {}
    photo_id, image_url = photo.get("id"), canonical_url(photo.get("image_url"))
    # Within the limits a bundle is loaded with (search/bundle/metadata.py), or the bundle built would be refused.
    if not photo_id or not image_url or len(str(photo_id)) > MAX_TEXT or len(str(image_url)) > MAX_URL:
        return None
    name = " ".join(part for part in (people.get("first_name"), people.get("last_name")) if part) or None
    metadata = {
        "image": image_url,
        "page_url": _http_url(photo.get("url")),
        "description": (photo.get("description") or ai.get("description") or "").strip()[:MAX_TEXT],
        "photographer": (name or people.get("username") or "")[:MAX_TEXT] or None,
        **unsplash_attributes(row),
    }
    return Item(str(photo_id), str(image_url), metadata)


def unsplash_attributes(row: Mapping[str, Any]) -> dict[str, Any]:
    """The optional columns (search/bundle/attributes.py) of a nested row, each checked or None."""
    photo, exif = row.get("photo") or {}, row.get("exif") or {}
    place, stats = row.get("location") or {}, row.get("stats") or {}
    latitude, longitude = _number(place.get("latitude"), 90.0), _number(place.get("longitude"), 180.0)
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):  # 0,0: unset, not the sea
        latitude = longitude = None
    return {
        "photographer_username": _short((row.get("photographer") or {}).get("username")),
        "width": _count(photo.get("width")), "height": _count(photo.get("height")),
        "date": submitted_date(photo.get("submitted_at")), "featured": _flag(photo.get("featured")),
        "location_name": _short(place.get("name")), "city": _short(place.get("city")),
        "country": _short(place.get("country")), "latitude": latitude, "longitude": longitude,
        "camera_make": _short(exif.get("camera_make")), "camera_model": _short(exif.get("camera_model")),
        "views": _count(stats.get("views")), "downloads": _count(stats.get("downloads")),
        "ai_description": _short((row.get("ai") or {}).get("description")),
        "keywords": confident_keywords(row.get("keywords")), "blur_hash": _short(photo.get("blur_hash")),
    }


def submitted_date(value: Any) -> str | None:
    """Unsplash's "2020-01-31 12:00:00[.fff][+tz]" as the bundle's "YYYY-MM-DDTHH:MM:SS" UTC; None if not a date."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")  # four-digit years: strftime writes the year 5 as "5"


def confident_keywords(keywords: Any) -> str | None:
    """The keywords a person suggested or an AI service gave at least KEYWORD_CONFIDENCE, comma-joined."""
    kept: list[str] = []
    for entry in keywords if isinstance(keywords, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("keyword"), str):
            continue
        scores = [_number(entry.get(key), 100.0) for key in ("ai_service_1_confidence", "ai_service_2_confidence")]
        if entry.get("suggested_by_user") is True or max((s for s in scores if s is not None), default=0.0) \
                >= KEYWORD_CONFIDENCE:
            word = " ".join(entry["keyword"].replace(",", " ").split())
            if word and word not in kept:
                kept.append(word)
    return ", ".join(kept)[:MAX_TEXT] or None


def _short(value: Any) -> str | None:
    return (value.strip()[:MAX_TEXT] or None) if isinstance(value, str) else None


def _number(value: Any, limit: float) -> float | None:
    """A finite number within +-limit (strings too: the data set stores some numbers as text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and abs(number) <= limit else None


def _count(value: Any) -> int | None:
    number = _number(value, MAX_COUNT)
    return int(number) if number is not None and number >= 0 and number == int(number) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _http_url(value: Any) -> str | None:
    """A page link the bundle keeps (search/bundle/metadata.py `is_web_url`); anything else (javascript:, file:, a bare
    word, a space or no host) is dropped: the item keeps no link rather than a broken one."""
    url = canonical_url(value)
    return url if url is not None and is_web_url(url) else None


def folder_items(root: Path) -> Iterator[Item]:
    """Image files under `root` (recursive, sorted); the id is the relative path, the image its thumbnail."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"--images-dir {root} is not a folder; give a folder of images")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            logger.info("skipping %s: not an image file name", relative)
            continue
        item_id = relative.as_posix()
        thumbnail = thumbnail_path(item_id)
        description, keywords = name_words(PurePosixPath(item_id))
        yield Item(item_id, str(path.resolve()), {"image": thumbnail, "page_url": None, "description": description,
                                                  "photographer": None, "keywords": keywords}, thumbnail)


def name_words(relative: PurePosixPath) -> tuple[str, str | None]:
    """(description, keywords) of a picture from its own path: the file name's words ("red-circle-24.jpg": "red
    circle"), else the innermost folder's; the folders' names as comma-joined keywords. Camera counters give none."""
    def words(part: str) -> str:
        if sum(char.isdigit() for char in part) >= sum(char.isalpha() for char in part):
            return ""  # a counter, a date or a hash ("72cf0a9b3e"): its letters are no words
        found = (word for word in _NAME_WORD.findall(part) if word.lower() not in CAMERA_WORDS)
        return " ".join(found)[:MAX_TEXT]

    folders = [text for text in map(words, relative.parent.parts) if text]
    description = words(relative.stem) or (folders[-1] if folders else "")
    return description, ", ".join(dict.fromkeys(folders))[:MAX_TEXT] or None


def resized_url(url: str, width: int | None) -> str:
    """The URL of a `width`-pixel-wide rendition on CDNs that resize (Unsplash's imgix `w=`), else `url`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url  # a malformed URL fails in the fetcher with the reason recorded
    if width is None or parts.hostname not in RESIZABLE_HOSTS:
        return url
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "w"]
    query.append(("w", str(width)))
    return urlunsplit(parts._replace(query=urlencode(query)))
