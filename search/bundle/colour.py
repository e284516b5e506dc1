"""Dominant colour of a picture: the palette name most of its subject's pixels are nearest to, and their mean as hex.

The subject, not the background: a product shot or a drawing (a coloured thing on plain white, black or grey) is
mostly background, so counting every pixel names the background. When most of the picture's border is one of those
plain colours, the pixels of that colour are left out and the rest (the subject) is counted; of a subject that is
mostly coloured, only its coloured pixels, and only the vivid ones: its edges, blended with the background, are
paler or darker (red on white reads pink there, on black brown).
bench/dominant_colour.py measures it on such pictures (docs/building.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (240, 220, 40), "green": (50, 160, 60), "teal": (20, 150, 150),
    "blue": (40, 80, 210), "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (130, 80, 40),
}
"""Fixed colour names a filter offers, each with a typical RGB (what a pixel is compared with)."""
SAMPLE_SIDE = 64  # pixels per side looked at: enough that a thin subject has pixels not blended with the background
PLAIN = (0, 1, 2)  # black, white, grey: the palette entries a plain background is
BACKGROUND_SHARE = 0.6  # of the border pixels in one plain colour: the picture has that background
SUBJECT_SHARE = 0.005  # of all pixels (20 of 64 x 64) left once the background is out: fewer are noise
COLOURED_SHARE = 0.25  # of the subject's pixels coloured (not plain): a coloured subject, counted by those
VIVID = 0.6  # of the subject's usual chroma (its 90th percentile): paler or darker pixels are its blended edges


def dominant_colour(image: Image.Image) -> tuple[str, str]:
    """(palette name, "#rrggbb") of the colour covering most of an RGB picture's subject."""
    small = image.convert("RGB")
    small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BILINEAR)
    grid = np.asarray(small, np.float32)
    centres = np.asarray(list(PALETTE.values()), np.float32)
    nearest = np.argmin(((grid[:, :, None, :] - centres[None, None, :, :]) ** 2).sum(axis=3), axis=2)
    counted = _subject(grid, nearest)
    winner = int(np.bincount(nearest[counted], minlength=len(centres)).argmax())  # ties: the earlier entry
    mean = np.rint(grid[counted & (nearest == winner)].mean(axis=0)).astype(int)
    return list(PALETTE)[winner], "#{:02x}{:02x}{:02x}".format(*mean)


def _subject(grid: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """The pixels that count: the subject's (see the module's docstring), else the whole picture's."""
    background = _background(nearest)
    subject = nearest != background
    if background < 0 or subject.sum() < SUBJECT_SHARE * nearest.size:  # no plain background, or only a speck
        return np.ones_like(subject)
    coloured = subject & ~np.isin(nearest, PLAIN)
    if coloured.sum() < COLOURED_SHARE * subject.sum():  # a plain subject (a black cat on white)
        return subject
    chroma = grid.max(axis=2) - grid.min(axis=2)
    return coloured & (chroma >= VIVID * np.percentile(chroma[coloured], 90))


def _background(nearest: np.ndarray) -> int:
    """The plain palette entry most of the border is, or -1: the picture has no plain background."""
    border = np.concatenate([nearest[0], nearest[-1], nearest[1:-1, 0], nearest[1:-1, -1]])
    counts = np.bincount(border, minlength=len(PALETTE))
    plain = max(PLAIN, key=lambda entry: counts[entry])
    return plain if counts[plain] >= BACKGROUND_SHARE * len(border) else -1
