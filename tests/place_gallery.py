"""A bundle of demo-model pictures whose texts name places: what keyword fusion must help with, and must not hurt.

Each rendered shape gets a city. Its description, like a person's, names the city and, usually, the shape: 60 %
say the right colour and shape, 20 % only the walk, 20 % a wrong colour. The AI description names the shape,
the keywords the city and country. No text names the background, which only the picture shows. The demo CLIP
cannot read a place name, and reads shapes, colours and backgrounds well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from scripts.synthetic_shapes import COLOURS, ShapeSpec, make_samples
from search.bundle.store import BundleInfo, write_bundle
from search.config import HnswParams
from search.model.encoder import ClipEncoder

PLACES = (("Lisbon", "Portugal"), ("Kyoto", "Japan"), ("Reykjavik", "Iceland"), ("Marrakesh", "Morocco"),
          ("Cusco", "Peru"), ("Oslo", "Norway"), ("Hanoi", "Vietnam"), ("Seville", "Spain"),
          ("Zanzibar", "Tanzania"), ("Valparaiso", "Chile"), ("Tbilisi", "Georgia"), ("Queenstown", "New Zealand"))
TUNING_SEED = 515_151  # the gallery KEYWORD_WEIGHT was chosen on; the tests use others
TRAP_PLACES = (("Paris", "France"), ("Nice", "France"), ("Sydney", "Australia"), ("New York", "United States"),
               ("Porto", "Portugal"), ("Florence", "Italy"))
"""Places a dated gallery adds: names that are also a person's or a word, and a second city of one country."""
YEARS = tuple(range(2015, 2024))
UNPLACED = 0.3
"""Share of a dated gallery's items with no city, country or date, as many real photos lack them."""


@dataclass(frozen=True)
class PlaceGallery:
    """The bundle folder and, per item, its id, shape class and city."""

    root: Path
    ids: list[str]
    specs: list[ShapeSpec]
    cities: list[str]

    def queries(self) -> dict[str, dict[str, set[str]]]:
        """Query kind -> query text -> relevant ids: a place, a full visual caption, a shape in a place."""
        def where(keep) -> set[str]:
            return {self.ids[i] for i in range(len(self.ids)) if keep(self.specs[i], self.cities[i])}

        return {
            "place": {city: where(lambda s, c, city=city: c == city) for city, _ in PLACES},
            "visual": {spec.caption: where(lambda s, c, spec=spec: s == spec) for spec in set(self.specs)},
            "both": {f"{spec.label} in {city}": where(lambda s, c, spec=spec, city=city: s.label == spec.label
                                                       and c == city)
                     for spec, city in zip(self.specs, self.cities, strict=True)},
        }


def write_place_gallery(root: Path, encoder: ClipEncoder, count: int, seed: int, dated: bool = False
                        ) -> PlaceGallery:
    """Render, caption and embed `count` pictures into a bundle at `root` (keyword index included).

    `dated`: the places include TRAP_PLACES, and items carry the real schema's city, date, width and height
    columns, with UNPLACED of them lacking city, country and date (their texts still name the city)."""
    rng = random.Random(seed)
    samples = make_samples(count, seed)
    rows: dict[str, list] = {name: [] for name in ("id", "image", "page_url", "description", "photographer",
                                                   "ai_description", "keywords", "country")}
    cities = []
    for number, (spec, _) in enumerate(samples):
        places = PLACES + TRAP_PLACES if dated else PLACES
        city, country = places[number % len(places)]
        draw = rng.random()
        colour = spec.colour if draw < 0.6 else rng.choice([c for c in COLOURS if c != spec.colour])
        text = f"afternoon walk in {city}" if 0.6 <= draw < 0.8 else f"{colour} {spec.shape} seen in {city}"
        for name, value in (("id", f"p{number:04d}"), ("image", f"https://images.example/{number}.jpg"),
                            ("page_url", None), ("description", text), ("photographer", None),
                            ("ai_description", f"a {spec.shape}"),
                            ("keywords", f"{city.lower()}, {country.lower()}"), ("country", country)):
            rows[name].append(value)
        cities.append(city)
    if dated:
        rows.update(_dated_columns(rows, cities, random.Random(seed + 1)))
    embeddings = encoder.encode_images([image for _, image in samples])
    info = BundleInfo(encoder.spec, HnswParams(m=16, ef_construction=100, ef_search=64), "place-gallery")
    write_bundle(root, embeddings, pa.table(rows), info)
    return PlaceGallery(root, rows["id"], [spec for spec, _ in samples], cities)


def _dated_columns(rows: dict[str, list], cities: list[str], rng: random.Random) -> dict[str, list]:
    """city, date, width and height per item; an UNPLACED share without city, country and date."""
    columns: dict[str, list] = {"city": [], "date": [], "width": [], "height": []}
    for number, city in enumerate(cities):
        known = rng.random() >= UNPLACED
        day = f"{rng.choice(YEARS)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00"
        width, height = rng.choice(((640, 480), (480, 640), (500, 500)))
        if not known:
            rows["country"][number] = None
        for name, value in (("city", city if known else None), ("date", day if known else None),
                            ("width", width), ("height", height)):
            columns[name].append(value)
    return columns
