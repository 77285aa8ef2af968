"""Loading image files robustly: one clear error type for everything that can go wrong.

:func:`load_image` opens a file (or bytes), refuses decompression bombs before decoding, decodes
fully (so truncated or corrupt data fails here, not later inside a transform), applies the EXIF
orientation, keeps only the first frame of animations, and returns an in-memory image detached from
the file. 16-bit grayscale images are rescaled to 8 bits: Pillow's ``convert("RGB")`` would clip
them to 0..255 and make almost every pixel white.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

# Pillow's own default for Image.MAX_IMAGE_PIXELS (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageDecodeError(ValueError):
    """An image that cannot be used: missing, not an image, truncated, corrupt or too large."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # keep picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True if the file name ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def load_image(
    path_or_bytes: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Open, check, fully decode and EXIF-orient one image.

    ``max_pixels`` bounds width * height, checked from the header before any pixel is decoded.
    ``name`` labels in-memory bytes in error messages (e.g. a tar member); paths label themselves.
    Raises :class:`ImageDecodeError` for every failure (truncated data included, unless the caller
    has set Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES``).
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        source: io.BytesIO | Path = io.BytesIO(path_or_bytes)
    else:
        label = name or os.fspath(path_or_bytes)
        source = Path(path_or_bytes)
        if not source.is_file():
            raise ImageDecodeError(label, "no such file" if not source.exists() else "not a regular file")
    try:
        # Our own max_pixels check below replaces Pillow's warning; its hard error (at twice its
        # global limit) is still caught and reported as ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(label, f"decompression bomb refused by Pillow ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(label, "not a recognised image format") from e
    except OSError as e:
        raise ImageDecodeError(label, f"cannot open ({e})") from e
    with handle:
        width, height = handle.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                label,
                f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
                "(possible decompression bomb)",
            )
        if width == 0 or height == 0:
            raise ImageDecodeError(label, f"empty image ({width}x{height})")
        try:
            handle.load()  # first frame of an animation; raises on truncated or corrupt data
            image = ImageOps.exif_transpose(handle)  # a detached copy, rotated if EXIF says so
        except MemoryError:
            raise
        except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
            raise ImageDecodeError(label, f"cannot decode ({type(e).__name__}: {e})") from e
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_to_eight_bit(image)
    return image


def _sixteen_to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale → 8-bit "L", keeping the top byte (65535 → 255)."""
    pixels = np.array(image).astype(np.uint16)  # (H, W), native byte order whatever the mode
    return Image.fromarray((pixels >> 8).astype(np.uint8))  # (H, W) uint8 → mode "L"
