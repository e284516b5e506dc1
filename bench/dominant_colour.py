"""Dominant colour of a coloured subject on a plain background: the share of pictures named with the subject's colour.

    python bench/dominant_colour.py --n 540

Each picture is one subject (circle, square, triangle, ring or star; 12 % to 60 % of the side; off centre) in one of
the palette's colours (jittered) on a plain white, off-white, light grey, grey, dark grey or black background
(with a little noise), saved as a JPEG and decoded, as a product shot or a drawing in a person's folder would be.
"right" is the share named with the subject's colour: the whole picture counted (the rule before) and the
subject counted (search/bundle/colour.py), on the same pictures in one run.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common
from search.bundle.colour import PALETTE, SAMPLE_SIDE, dominant_colour

SUBJECTS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown")
BACKGROUNDS = {"white": 252, "off-white": 236, "light grey": 200, "grey": 128, "dark grey": 60, "black": 8}
SHAPES = ("circle", "square", "triangle", "ring", "star")


def subject_pictures(count: int, seed: int = 0) -> Iterator[tuple[str, str, Image.Image]]:
    """(subject colour, background name, picture) for `count` pictures, every colour and background in turn."""
    rng = np.random.default_rng(seed)
    for number in range(count):
        colour, background = SUBJECTS[number % len(SUBJECTS)], list(BACKGROUNDS)[number // len(SUBJECTS) % 6]
        width, height = (int(side) for side in rng.choice([(320, 240), (240, 320), (300, 300)]))
        level = BACKGROUNDS[background]
        noise = rng.normal(0, 3, (height, width, 3))
        image = Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8))
        _draw(ImageDraw.Draw(image), SHAPES[number % len(SHAPES)], _jittered(colour, rng), (width, height), rng)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        yield colour, background, Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _jittered(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """The palette colour moved a little, still nearest to its own name."""
    centres = np.asarray(list(PALETTE.values()), float)
    while True:
        rgb = np.clip(np.asarray(PALETTE[name]) + rng.integers(-14, 15, 3), 0, 255)
        if list(PALETTE)[int(np.argmin(((centres - rgb) ** 2).sum(axis=1)))] == name:
            return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _draw(draw: ImageDraw.ImageDraw, shape: str, fill: tuple[int, int, int], size: tuple[int, int],
          rng: np.random.Generator) -> None:
    width, height = size
    side = min(size) * rng.uniform(0.12, 0.6)
    x, y = rng.uniform(side / 2 + 4, width - side / 2 - 4), rng.uniform(side / 2 + 4, height - side / 2 - 4)
    box = (x - side / 2, y - side / 2, x + side / 2, y + side / 2)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(3, int(side / 6)))
    else:
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        radii = np.where(np.arange(10) % 2 == 0, side / 2, side / 4)
        draw.polygon([(x + r * np.cos(a), y + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)], fill=fill)


def whole_picture_colour(image: Image.Image) -> str:
    """The rule before: the palette name most pixels of the whole picture are nearest to."""
    small = image.convert("RGB")
    small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, np.float32).reshape(-1, 3)
    centres = np.asarray(list(PALETTE.values()), np.float32)
    nearest = np.argmin(((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
    return list(PALETTE)[int(np.bincount(nearest, minlength=len(centres)).argmax())]


def measure(count: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Share right per background and overall, for the whole-picture rule and the subject rule."""
    right: dict[str, dict[str, list[bool]]] = {"whole picture": {}, "subject": {}}
    for colour, background, image in subject_pictures(count, seed):
        for rule, name in (("whole picture", whole_picture_colour(image)), ("subject", dominant_colour(image)[0])):
            right[rule].setdefault(background, []).append(name == colour)
    return {rule: {**{key: float(np.mean(values)) for key, values in shares.items()},
                   "all": float(np.mean([hit for values in shares.values() for hit in values]))}
            for rule, shares in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=540, help="pictures (every colour on every background: 54 a round)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = measure(args.n, args.seed)
    print(f"{args.n} pictures, {common.machine()}")
    common.print_table(["rule", *BACKGROUNDS, "all"],
                       [[rule, *(f"{shares.get(key, 0.0):.1%}" for key in [*BACKGROUNDS, "all"])]
                        for rule, shares in result.items()])
    common.emit_json({"n": args.n, "whole_picture_right": round(result["whole picture"]["all"], 4),
                      "subject_right": round(result["subject"]["all"], 4)})


if __name__ == "__main__":
    main()
