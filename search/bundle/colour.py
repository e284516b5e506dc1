"""Dominant colour of a picture: the palette name most of its pixels are nearest to, and their mean as hex."""

from __future__ import annotations

import numpy as np
from PIL import Image

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (240, 220, 40), "green": (50, 160, 60), "teal": (20, 150, 150),
    "blue": (40, 80, 210), "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (130, 80, 40),
}
"""Fixed colour names a filter offers, each with a typical RGB (what a pixel is compared with)."""
SAMPLE_SIDE = 32  # pixels per side looked at: the dominant colour of a thumbnail is that of the picture


def dominant_colour(image: Image.Image) -> tuple[str, str]:
    """(palette name, "#rrggbb") of the colour covering most of an RGB picture."""
    small = image.convert("RGB")
    small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, np.float32).reshape(-1, 3)
    centres = np.asarray(list(PALETTE.values()), np.float32)
    nearest = np.argmin(((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
    winner = int(np.bincount(nearest, minlength=len(centres)).argmax())  # ties: the earlier palette entry
    mean = np.rint(pixels[nearest == winner].mean(axis=0)).astype(int)
    return list(PALETTE)[winner], "#{:02x}{:02x}{:02x}".format(*mean)
