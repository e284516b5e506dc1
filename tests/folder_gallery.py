"""A person's own photo folder, generated: shape pictures with EXIF dates, cameras and GPS in trip folders.

`write_photo_folder` writes what a phone or camera would leave (JPEGs with DateTimeOriginal, Make/Model and a
GPS position, named after what they show, one folder per trip); `build_folder_bundle` indexes it with
`build_index.py --images-dir` and the demo model, as the README tells a person to. `write_all_filters_bundle`
gives the demo's pictures every optional column, so every filter the panel has is offered.
"""

from __future__ import annotations

import itertools
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import ExifTags, Image

import build_index
from scripts.synthetic_shapes import BACKGROUNDS, ShapeSpec, render
from search.bundle.store import BundleInfo, write_bundle
from search.config import HnswParams
from tests.conftest import DEMO_INDEX_DIR, DEMO_MODEL_DIR, DEMO_SPEC

# (folder, year, camera make, camera model, latitude, longitude): one trip each
TRIPS = (("2019 Lisbon", 2019, "Canon", "EOS 80D", 38.7223, -9.1393),
         ("2021 Kyoto", 2021, "FUJIFILM", "X-T30", 35.0116, 135.7681),
         ("2023 Reykjavik", 2023, "Apple", "iPhone 13", 64.1466, -21.9426))
COLOURS, SHAPES = ("red", "green", "blue", "yellow"), ("circle", "square", "triangle", "star")


@dataclass(frozen=True)
class PhotoFolder:
    """The folder, and per picture file (relative path) its shape and trip."""

    root: Path
    specs: dict[str, ShapeSpec]
    trips: dict[str, tuple]

    def names(self, keep) -> set[str]:
        """The relative paths of the pictures `keep(spec, trip)` selects."""
        return {name for name, spec in self.specs.items() if keep(spec, self.trips[name])}


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees, minutes = int(value), int(value % 1 * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 2)


def _exif(trip: tuple, day: int) -> Image.Exif:
    _, year, make, model, latitude, longitude = trip
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = make, model
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = f"{year}:06:{day:02d} 14:{day:02d}:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "N" if latitude >= 0 else "S", _dms(latitude)
    gps[ExifTags.GPS.GPSLongitudeRef], gps[ExifTags.GPS.GPSLongitude] = ("E" if longitude >= 0 else "W",
                                                                         _dms(longitude))
    return exif


def write_photo_folder(root: Path, seed: int) -> PhotoFolder:
    """Each trip holds every COLOURS x SHAPES picture once (background drawn at random), as an EXIF-tagged JPEG
    root/<trip>/<colour>-<shape>-<n>.jpg."""
    rng, specs, trips = random.Random(seed), {}, {}
    for trip in TRIPS:
        (root / trip[0]).mkdir(parents=True, exist_ok=True)
        for colour, shape in itertools.product(COLOURS, SHAPES):
            spec = ShapeSpec(colour, shape, rng.choice(BACKGROUNDS))
            name = f"{trip[0]}/{colour}-{shape}-{len(specs):02d}.jpg"
            render(spec, rng).save(root / name, quality=90, exif=_exif(trip, rng.randint(1, 28)))
            specs[name], trips[name] = spec, trip
    return PhotoFolder(root, specs, trips)


def build_folder_bundle(photos: Path, out: Path) -> Path:
    """`build_index.py --images-dir photos --out out --model local-dir:<demo model>`; the bundle folder."""
    code = build_index.main(["--images-dir", str(photos), "--out", str(out), "--model",
                             f"local-dir:{DEMO_MODEL_DIR}", "--device", "cpu", "--workers", "2", "--hnsw-m", "8"])
    assert code == 0, f"build_index.py --images-dir {photos} failed with {code}"
    return out


def write_all_filters_bundle(root: Path) -> Path:
    """The demo's pictures and vectors with every optional column, so the panel offers every filter."""
    table = pq.read_table(DEMO_INDEX_DIR / "metadata.parquet")
    rows, rng = table.num_rows, np.random.default_rng(7)
    extra = {"width": pa.array([640] * rows), "height": pa.array([480] * rows),
             "date": pa.array([f"{2015 + row % 9}-0{1 + row % 9}-11T10:00:00" for row in range(rows)]),
             "city": pa.array([("Lisbon", "Kyoto", "Oslo")[row % 3] for row in range(rows)]),
             "country": pa.array([("Portugal", "Japan", "Norway")[row % 3] for row in range(rows)]),
             "camera_make": pa.array(["Canon"] * rows), "camera_model": pa.array(["EOS 80D"] * rows),
             "photographer_username": pa.array([f"person{row % 7}" for row in range(rows)]),
             "featured": pa.array([bool(row % 2) for row in range(rows)]),
             "downloads": pa.array(rng.integers(0, 5000, rows).tolist()),
             "views": pa.array(rng.integers(0, 50000, rows).tolist()),
             "words_in_picture": pa.array([("OPEN", "")[row % 2] for row in range(rows)])}
    for name, column in extra.items():
        table = table.append_column(name, column)
    shutil.copytree(DEMO_INDEX_DIR / "images", root / "images")
    info = BundleInfo(DEMO_SPEC, HnswParams(m=8, ef_construction=64, ef_search=32), "all-filters")
    write_bundle(root, np.load(DEMO_INDEX_DIR / "embeddings.npy"), table, info)
    return root
