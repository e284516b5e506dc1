"""Words in the picture: recall@5 for queries naming rendered words, CLIP alone vs with OCR, and what --ocr costs.

    python bench/ocr.py                      # 60 pictures, 640x480, the demo model
    python bench/ocr.py --pictures 120 --json

Renders a fixture of pictures (640x480): of every 20, 14 carry one target word (a shop-sign word such as COFFEE, each
on one picture only), of those 4 also a distractor line ("OPEN 7 DAYS"), 3 carry distractor words only and 3 no text.
Fonts: DejaVu and Liberation from /usr/share/fonts where present, else Pillow's own (`ImageFont.load_default`);
28-72 px, angles within +-10 degrees; backgrounds flat, gradient, or photo-like (blurred noise with shapes). File
names are counters, which give no words. The fixture is built twice into a bundle with the demo model
(`build_index.py --images-dir ... --model local-dir:assets/demo/model`), with and without --ocr, in this run:

- recall@5 of each target word's picture, for the query "WORD" and "a sign that says WORD": CLIP alone (keyword
  matches off) vs the keyword fusion over the words found (the bundle built with --ocr);
- OCR's own word recall (target words found in words_in_picture) and pictures without text given words;
- build cost per picture: the whole build without --ocr vs the extra with it, and OCR alone vs ViT-B-32 (random
  weights: the real compute, no download) embedding the same 16 pictures in alternating blocks, as a ratio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

TARGETS = ("COFFEE", "BAKERY", "PHARMACY", "PARKING", "HOTEL", "GARAGE", "LIBRARY", "MUSEUM", "PIZZA", "TAXI",
           "CINEMA", "FLOWERS", "BOOKS", "TICKETS", "POLICE", "SUSHI", "BARBER", "DENTIST", "LAUNDRY", "BICYCLES",
           "JEWELRY", "TAILOR", "BUTCHER", "HARBOR", "STATION", "MARKET", "THEATER", "BREWERY", "GALLERY", "CASINO",
           "CHURCH", "FERRY", "BANK", "GELATO", "NOODLES", "TOYS", "PHOTO", "GARDEN", "FITNESS", "SALON", "CANDY",
           "ZOO")
DISTRACTORS = ("OPEN 7 DAYS", "NO ENTRY", "SALE 50%", "EXIT", "WELCOME", "THANK YOU", "CLOSED", "PUSH")
FONT_FILES = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSerif.ttf",
              "liberation/LiberationSans-Regular.ttf", "liberation/LiberationSerif-Bold.ttf",
              "liberation/LiberationMono-Regular.ttf")
FONT_ROOT = Path("/usr/share/fonts/truetype")
SIZE = (640, 480)
DEMO_MODEL = common.REPO_ROOT / "assets" / "demo" / "model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=60, help="pictures in the fixture (7 in 10 with a target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args(argv)


def fonts() -> list[tuple[str, object]]:
    """(name, loader of a size) for the system fonts present, else Pillow's own font."""
    found = [(path.stem, lambda size, path=path: ImageFont.truetype(str(path), size))
             for path in (FONT_ROOT / name for name in FONT_FILES) if path.is_file()]
    return found or [("pillow-default", lambda size: ImageFont.load_default(size=size))]


def background(rng: random.Random) -> tuple[Image.Image, str]:
    """A flat, gradient or photo-like (blurred noise and shapes) background, and its kind."""
    kind = rng.choice(("flat", "gradient", "photo"))
    colour = tuple(rng.randrange(256) for _ in range(3))
    if kind == "flat":
        return Image.new("RGB", SIZE, colour), kind
    if kind == "gradient":
        ramp = np.linspace(0.4, 1.0, SIZE[0])[None, :, None] * np.array(colour)[None, None, :]
        return Image.fromarray(np.repeat(ramp, SIZE[1], axis=0).astype(np.uint8)), kind
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (SIZE[1] // 8, SIZE[0] // 8, 3))
    image = Image.fromarray(noise.astype(np.uint8)).resize(SIZE, Image.BICUBIC).filter(ImageFilter.GaussianBlur(3))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(SIZE[0]), rng.randrange(SIZE[1])
        draw.ellipse((x, y, x + rng.randrange(40, 200), y + rng.randrange(40, 200)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    return image, kind


def render(lines: list[str], rng: random.Random, loaders: list[tuple[str, object]]) -> Image.Image:
    """The lines on a sign (a plate of contrasting colour) on a background, turned by up to 10 degrees."""
    image, _ = background(rng)
    if not lines:
        return image
    _, load = rng.choice(loaders)
    font = load(rng.randrange(28, 73))
    draw = ImageDraw.Draw(image)
    y = rng.randrange(40, 200)
    for line in lines:
        left, top, right, bottom = draw.textbbox((0, 0), line, font=font)
        x = rng.randrange(20, max(21, SIZE[0] - (right - left) - 20))
        plate = tuple(rng.randrange(256) for _ in range(3))
        ink = (15, 15, 15) if sum(plate) > 380 else (245, 245, 245)
        draw.rectangle((x - 12, y - 10, x + right - left + 12, y + bottom - top + 14), fill=plate)
        draw.text((x - left, y - top), line, fill=ink, font=font)
        y += bottom - top + 40
    return image.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, fillcolor=image.getpixel((0, 0)))


def write_fixture(folder: Path, count: int, seed: int) -> dict[str, str]:
    """Render `count` pictures into `folder`; returns file name -> its target word (pictures with one)."""
    rng = random.Random(seed)
    loaders = fonts()
    targets = iter(rng.sample(TARGETS * (count // len(TARGETS) + 1), len(TARGETS) * (count // len(TARGETS) + 1)))
    shown: dict[str, str] = {}
    for number in range(count):
        slot = number % 20
        lines: list[str] = []
        name = f"{number:05d}.png"
        if slot < 14:
            word = next(word for word in targets if word not in shown.values())
            shown[name] = word
            lines = [word, rng.choice(DISTRACTORS)] if slot < 4 else [word]
        elif slot < 17:
            lines = rng.sample(DISTRACTORS, 2)
        render(lines, rng, loaders).save(folder / name)
    return shown


def recall_at_5(engine, shown: dict[str, str], template: str, keywords: bool) -> tuple[float, list[str]]:
    """Share of target pictures among the first 5 hits of the query naming their word, and the words missed."""
    from search.query.options import SearchOptions

    options = SearchOptions(keywords=keywords)
    missed = [word for name, word in shown.items()
              if name not in {hit.id for hit in engine.search_text(template.format(word.lower()), 5, -1.0, options)}]
    return 1.0 - len(missed) / len(shown), missed


def build(photos: Path, out: Path, ocr: bool) -> float:
    """Seconds for build_index.py --images-dir with the demo model (and --ocr)."""
    import build_index

    flags = ["--images-dir", str(photos), "--out", str(out), "--model", f"local-dir:{DEMO_MODEL}",
             "--device", "cpu", "--no-progress", "--workers", "2"]
    start = time.perf_counter()
    if build_index.main(flags + (["--ocr"] if ocr else [])) != 0:
        raise SystemExit("the build failed")
    return time.perf_counter() - start


def per_picture_costs(photos: Path, rounds: int = 3) -> dict[str, float]:
    """Median seconds per picture of OCR alone (engine loaded) and of ViT-B-32 embedding alone, on the same
    pictures in batches of 4, timed in alternating blocks (bench.common.in_blocks) so that other work on the
    machine slows both alike."""
    from search.build.ocr import load_reader, words_in_picture

    images = [Image.open(path).convert("RGB") for path in sorted(photos.glob("*.png"))[:16]]
    batches = [images[first:first + 4] for first in range(0, len(images), 4)]
    load_reader()
    encoder = common.random_vit_b32()
    times = common.in_blocks({"ocr": lambda batch: [words_in_picture(image) for image in batch],
                              "vit": encoder.encode_images}, batches, rounds)
    return {"ocr_s": common.p50(times["ocr"]) / 4000, "vit_b32_s": common.p50(times["vit"]) / 4000}


def ocr_quality(bundle: Path, shown: dict[str, str]) -> dict[str, float]:
    """Target words found in their picture's words_in_picture; pictures without text given any words."""
    import pyarrow.parquet as pq

    rows = pq.read_table(bundle / "metadata.parquet", columns=["id", "words_in_picture"]).to_pylist()
    words = {row["id"]: (row["words_in_picture"] or "").upper() for row in rows}
    found = np.mean([word in words[name] for name, word in shown.items()])
    blank = [name for name in words if name not in shown and int(name[:5]) % 20 >= 17]
    return {"word_recall": float(found), "blank_with_words": float(np.mean([bool(words[n]) for n in blank]))}


def main(argv: list[str] | None = None) -> None:
    """Render, build with and without --ocr, search, time, print."""
    args = parse_args(argv)
    from search.bundle.store import Bundle
    from search.config import EncoderSpec
    from search.model.encoder import ClipEncoder
    from search.query.engine import SearchEngine

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        photos = root / "photos"
        photos.mkdir()
        shown = write_fixture(photos, args.pictures, args.seed)
        plain_s, with_ocr_s = build(photos, root / "plain", ocr=False), build(photos, root / "ocr", ocr=True)
        engine = SearchEngine(ClipEncoder.load(EncoderSpec(f"local-dir:{DEMO_MODEL}", None)), Bundle.load(root / "ocr"))
        recall = {template: (recall_at_5(engine, shown, template, False), recall_at_5(engine, shown, template, True))
                  for template in ("{}", "a sign that says {}")}
        quality = ocr_quality(root / "ocr", shown)
        costs = per_picture_costs(photos)
        shutil.rmtree(root / "plain")
    count = args.pictures
    print(f"{count} pictures ({len(shown)} with a target word), fonts: {', '.join(n for n, _ in fonts())}; "
          f"CPU: {common.machine()}")
    common.print_table(["query", "recall@5 CLIP alone", "recall@5 with OCR"],
                       [[template.format("WORD"), f"{alone[0]:.2f}", f"{fused[0]:.2f}"]
                        for template, (alone, fused) in recall.items()])
    print(f"missed with OCR, one-word query: {', '.join(recall['{}'][1][1]) or 'none'}")
    print(f"OCR found {quality['word_recall']:.2f} of the target words; pictures without text given words: "
          f"{quality['blank_with_words']:.2f}")
    common.print_table(["build cost per picture", "seconds"], [
        ["whole build, demo model, no --ocr", f"{plain_s / count:.3f}"],
        ["extra with --ocr (same build)", f"{(with_ocr_s - plain_s) / count:.3f}"],
        ["OCR alone (engine loaded)", f"{costs['ocr_s']:.3f}"],
        ["ViT-B-32 embedding alone (batch 4)", f"{costs['vit_b32_s']:.3f}"],
        ["ratio OCR / ViT-B-32 embedding", f"{costs['ocr_s'] / costs['vit_b32_s']:.1f}x"]])
    if args.json:
        common.emit_json({"pictures": count, "targets": len(shown), "recall_at_5": recall, **quality, **costs,
                          "build_plain_s": plain_s, "build_ocr_s": with_ocr_s, "cpu": common.machine()})


if __name__ == "__main__":
    main()
