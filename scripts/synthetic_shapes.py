"""Synthetic captioned images of coloured shapes on light or dark backgrounds, for the offline demo model."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Hues far apart so that a 64 px model can tell them apart on any background tint.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 220, 25),
    "purple": (140, 45, 190),
    "orange": (250, 135, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
BACKGROUNDS: tuple[str, ...] = ("light", "dark")

# Channel ranges of background tints; kept away from the shape colours' saturation.
_TINT_RANGE = {"light": (190, 255), "dark": (0, 65)}
_COLOUR_JITTER = 14
_MAX_TILT_DEGREES = 20.0
# How far each shape reaches from its centre, relative to its nominal radius (keeps it in frame).
_EXTENT = {"circle": 1.0, "square": 0.85 * math.sqrt(2), "triangle": 1.1, "star": 1.15}


@dataclass(frozen=True)
class ShapeSpec:
    """One class of synthetic image: a coloured shape on a light or dark background."""

    colour: str
    shape: str
    background: str

    @property
    def caption(self) -> str:
        """The full caption, e.g. 'a red circle on a light background' ('an orange ...')."""
        return f"{self.short_caption} on a {self.background} background"

    @property
    def short_caption(self) -> str:
        """Colour and shape with an article, e.g. 'a red circle' or 'an orange star'."""
        return f"{_article(self.colour)} {self.label}"

    @property
    def label(self) -> str:
        """Colour and shape only, e.g. 'red circle'."""
        return f"{self.colour} {self.shape}"


def _article(word: str) -> str:
    """'an' before a vowel, else 'a', so captions read like the queries people type."""
    return "an" if word[0] in "aeiou" else "a"


def all_specs() -> list[ShapeSpec]:
    """Every colour x shape x background combination, in a fixed order."""
    return [ShapeSpec(c, s, b) for c, s, b in itertools.product(COLOURS, SHAPES, BACKGROUNDS)]


def caption_variants(spec: ShapeSpec) -> list[str]:
    """Training captions for a spec: `spec.caption` and others naming the background, then ones that do not."""
    colour, shape, background = spec.colour, spec.shape, spec.background
    one = spec.short_caption
    with_background = [
        spec.caption,
        f"a photo of {one} on a {background} background",
        f"{spec.label} on {background} background",
        f"{one} against a {background} background",
        f"a picture of {one} on a {background} background",
    ]
    without_background = [
        one,
        spec.label,
        f"a photo of {one}",
        f"a picture of {one}",
        f"a drawing of {one}",
        f"the {spec.label}",
        f"a {shape} that is {colour}",
    ]
    return with_background + without_background


def _tint(rng: random.Random, background: str) -> np.ndarray:
    """A random background colour in the range for `background`."""
    low, high = _TINT_RANGE[background]
    return np.array([rng.uniform(low, high) for _ in range(3)], dtype=np.float32)


def _background(rng: random.Random, background: str, size: int) -> np.ndarray:
    """A flat, gradient or noisy background as a float32 (size, size, 3) array."""
    start, end = _tint(rng, background), _tint(rng, background)
    style = rng.choice(("flat", "gradient", "noise", "gradient_noise"))
    if style in ("flat", "noise"):
        end = start
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None] + 0.5
    pixels = start + np.clip(ramp, 0.0, 1.0)[..., None] * (end - start)
    if "noise" in style:
        noise_rng = np.random.default_rng(rng.getrandbits(64))
        pixels = pixels + noise_rng.normal(0.0, rng.uniform(3.0, 12.0), pixels.shape).astype(np.float32)
    return pixels


def _polygon(shape: str, centre: tuple[float, float], radius: float, tilt: float) -> list[tuple[float, float]]:
    """Vertices of a square, triangle or star around `centre`, rotated by `tilt` radians."""
    if shape == "square":
        radii, count, offset = [0.85 * math.sqrt(2) * radius], 4, math.pi / 4
    elif shape == "triangle":
        radii, count, offset = [1.1 * radius], 3, -math.pi / 2
    else:  # star: alternate outer and inner points
        radii, count, offset = [1.15 * radius, 0.48 * radius], 10, -math.pi / 2
    points = []
    for i in range(count):
        theta = offset + tilt + 2.0 * math.pi * i / count
        r = radii[i % len(radii)]
        points.append((centre[0] + r * math.cos(theta), centre[1] + r * math.sin(theta)))
    return points


def _jittered(colour: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    """The colour with a small random shift per channel."""
    r, g, b = (min(255, max(0, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in colour)
    return (r, g, b)


def render(spec: ShapeSpec, rng: random.Random, size: int = 128) -> Image.Image:
    """Draw one RGB image of `spec` with random size, position, tilt, background and colour jitter."""
    pixels = _background(rng, spec.background, size)
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="RGB")
    radius = rng.uniform(0.18, 0.34) * size
    reach = _EXTENT[spec.shape] * radius + 0.04 * size
    centre = (rng.uniform(reach, size - reach), rng.uniform(reach, size - reach))
    colour = _jittered(COLOURS[spec.colour], rng)
    draw = ImageDraw.Draw(image)
    if spec.shape == "circle":
        x, y = centre
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    else:
        tilt = math.radians(rng.uniform(-_MAX_TILT_DEGREES, _MAX_TILT_DEGREES))
        draw.polygon(_polygon(spec.shape, centre, radius, tilt), fill=colour)
    return image


def make_samples(n: int, seed: int, size: int = 128) -> list[tuple[ShapeSpec, Image.Image]]:
    """`n` rendered images cycling through every spec, each cycle in a fresh seeded shuffled order."""
    rng = random.Random(seed)
    specs = all_specs()
    samples: list[tuple[ShapeSpec, Image.Image]] = []
    order: list[ShapeSpec] = []
    for i in range(n):
        if i % len(specs) == 0:
            order = specs[:]
            rng.shuffle(order)
        spec = order[i % len(specs)]
        samples.append((spec, render(spec, rng, size)))
    return samples
