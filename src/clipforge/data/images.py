"""TEMPORARY STAND-IN written by the data helper so the data branch runs on its own.

The transforms helper owns this module; on merge, replace this file with theirs (same names:
``load_image``, ``ImageDecodeError``, ``IMAGE_EXTENSIONS``)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class ImageDecodeError(ValueError):
    """An image that cannot be read or decoded."""


def load_image(source: str | Path | bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        img.load()
        return img.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise ImageDecodeError(f"{name}: {e}") from e
