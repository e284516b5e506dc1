"""What a local picture file says about itself: size as shown, EXIF date, camera and GPS position."""

from __future__ import annotations

import io
import logging
import math
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image, UnidentifiedImageError

from search.bundle.metadata import MAX_TEXT

logger = logging.getLogger(__name__)

TURNED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height when shown
EXIF_DATE = "%Y:%m:%d %H:%M:%S"
_READ_ERRORS = (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, ZeroDivisionError,
                UnidentifiedImageError, Image.DecompressionBombError)


def file_facts(data: bytes) -> dict[str, Any]:
    """width, height, date, camera_make, camera_model, latitude, longitude of a picture file (None: unknown).

    Read from the header only (no pixel decode). A broken EXIF block gives Nones, never an error: the
    picture itself was already decoded for the model.
    """
    facts: dict[str, Any] = dict.fromkeys(("width", "height", "date", "camera_make", "camera_model",
                                           "latitude", "longitude"))
    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            width, height = image.size
            turned = exif.get(ExifTags.Base.Orientation) in TURNED
            facts["width"], facts["height"] = (height, width) if turned else (width, height)
            facts.update(_exif_facts(exif))
    except _READ_ERRORS as exc:
        logger.debug("no EXIF facts: %s", exc)
    return facts


def _exif_facts(exif: Image.Exif) -> dict[str, Any]:
    details = exif.get_ifd(ExifTags.IFD.Exif)
    taken = details.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    latitude, longitude = _position(exif.get_ifd(ExifTags.IFD.GPSInfo))
    return {"date": exif_date(taken), "camera_make": _text(exif.get(ExifTags.Base.Make)),
            "camera_model": _text(exif.get(ExifTags.Base.Model)), "latitude": latitude, "longitude": longitude}


def exif_date(value: Any) -> str | None:
    """An EXIF "YYYY:MM:DD HH:MM:SS" as the bundle's "YYYY-MM-DDTHH:MM:SS"; None when it is not a real date."""
    try:
        moment = datetime.strptime(str(value).strip("\x00 "), EXIF_DATE)
    except ValueError:
        return None
    return moment.isoformat(timespec="seconds")  # four-digit years: strftime writes the year 5 as "5"


def _text(value: Any) -> str | None:
    text = value.strip("\x00 ") if isinstance(value, str) else None
    return text[:MAX_TEXT] if text else None


def _position(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    latitude = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), 90.0)
    longitude = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), 180.0)
    return (latitude, longitude) if latitude is not None and longitude is not None else (None, None)


def _degrees(parts: Any, ref: Any, limit: float) -> float | None:
    """Degrees, minutes, seconds and N/S/E/W as signed degrees; None when missing or out of range."""
    try:
        degrees, minutes, seconds = (float(part) for part in parts)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    value = -value if str(ref).strip("\x00 ").upper() in {"S", "W"} else value
    return round(value, 6) if math.isfinite(value) and abs(value) <= limit else None
