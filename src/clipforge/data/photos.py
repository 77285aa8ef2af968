"""What a photo library is searched by besides its pixels: when, with what camera, how big, what type.

:func:`photo_info` reads it from an opened image's header (no pixel is decoded): the date taken
(EXIF ``DateTimeOriginal``, else ``DateTimeDigitized``, else ``DateTime``; failing those the file's
modification time), the camera (EXIF make and model), the displayed size (EXIF orientations 5-8
swap width and height) and the format. Dates are kept as ISO-8601 local time without a zone, as
cameras write them, so ranges compare as strings.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from PIL import Image

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED, _DATETIME = 0x9003, 0x9004, 0x0132
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112

# Pillow format names → the type users filter by.
_TYPES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
          "TIFF": "tiff", "HEIF": "heic", "AVIF": "avif"}


class PhotoInfo(NamedTuple):
    taken_at: str  # "YYYY-MM-DDTHH:MM:SS", local time
    taken_from: str  # "exif" or "file"
    camera: str | None  # "Make Model", None when the file does not say
    width: int  # as displayed (after EXIF orientation)
    height: int
    type: str  # jpeg, png, webp, gif, bmp, tiff, heic, avif (or Pillow's name, lower-case)


def file_type(image: Image.Image) -> str:
    fmt = image.format or ""
    return _TYPES.get(fmt, fmt.lower() or "unknown")


def photo_info(image: Image.Image, *, mtime_ns: int) -> PhotoInfo:
    """Metadata of an opened (not necessarily loaded) image; call before any reduced-size decode."""
    width, height = image.size
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block must not cost the picture
        exif = Image.Exif()
    if exif.get(_ORIENTATION) in (5, 6, 7, 8):
        width, height = height, width
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    taken, source = None, "file"
    for value in (sub.get(_DATETIME_ORIGINAL), sub.get(_DATETIME_DIGITIZED), exif.get(_DATETIME)):
        taken = parse_exif_datetime(value)
        if taken is not None:
            source = "exif"
            break
    if taken is None:
        taken = dt.datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat()
    camera = " ".join(_text(exif.get(tag)) for tag in (_MAKE, _MODEL) if _text(exif.get(tag))) or None
    if camera:
        make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
        if make and model.lower().startswith(make.lower()):  # "Canon Canon EOS 5D" → "Canon EOS 5D"
            camera = model
    return PhotoInfo(taken, source, camera, width, height, file_type(image))


def parse_exif_datetime(value) -> str | None:
    """``"2021:07:04 18:30:00"`` (EXIF) → ``"2021-07-04T18:30:00"``; None for blanks and garbage."""
    text = _text(value)
    if len(text) < 19:
        return None
    try:
        return dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""
