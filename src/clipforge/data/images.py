"""Loading image files robustly: one clear error type for everything that can go wrong.

:func:`load_image` opens a file (or bytes), refuses decompression bombs before decoding, decodes
fully (so truncated or corrupt data fails here, not later inside a transform), applies the EXIF
orientation, keeps only the first frame of animations, and returns an in-memory image detached from
the file. 16-bit grayscale images are rescaled to 8 bits: Pillow's ``convert("RGB")`` would clip
them to 0..255 and make almost every pixel white.

``min_side`` asks for a *reduced-size decode*: a JPEG much larger than needed is decoded by libjpeg
at 1/2, 1/4 or 1/8 scale (DCT scaling, Pillow's ``Image.draft``), the largest reduction that keeps
the shorter side at least ``min_side``. A 4032x3024 photo decoded at 1/4 costs about a fifth of the
full decode. Indexing uses it with ``min_side = 2 * model input``, so the transform still
downsamples by 2x or more with its antialiasing filter; eval and training never do.

HEIC/HEIF and AVIF are read through optional plugins (:mod:`clipforge.data.formats`); without them
such a file fails with an install hint.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .formats import missing_format_hint, register_optional_formats

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif",
)

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
    min_side: int | None = None,
) -> Image.Image:
    """Open, check, fully decode and EXIF-orient one image.

    ``max_pixels`` bounds width * height, checked from the header before any pixel is decoded.
    ``name`` labels in-memory bytes in error messages (e.g. a tar member); paths label themselves.
    ``min_side`` allows a reduced-size JPEG decode whose shorter side stays >= ``min_side`` (see the
    module docstring); None decodes at full size.
    Raises :class:`ImageDecodeError` for every failure (truncated data included, unless the caller
    has set Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES``).
    """
    label, handle = open_image(path_or_bytes, max_pixels=max_pixels, name=name)
    with handle:
        return decode_image(handle, label, min_side=min_side)


def open_image(
    path_or_bytes: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> tuple[str, Image.Image]:
    """(label, lazily opened image) after the header checks; the caller closes it (``with``)."""
    register_optional_formats()
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
        hint = missing_format_hint(_head(source), label)
        raise ImageDecodeError(label, hint or "not a recognised image format") from e
    except OSError as e:
        raise ImageDecodeError(label, f"cannot open ({e})") from e
    width, height = handle.size
    problem = None
    if width * height > max_pixels:
        problem = (
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
            "(possible decompression bomb)"
        )
    elif width == 0 or height == 0:
        problem = f"empty image ({width}x{height})"
    if problem:
        handle.close()
        raise ImageDecodeError(label, problem)
    return label, handle


def decode_image(handle: Image.Image, label: str, *, min_side: int | None = None) -> Image.Image:
    """Decode an image from :func:`open_image` (reduced-size when ``min_side`` allows), EXIF-oriented."""
    try:
        if min_side is not None:
            reduce_jpeg_decode(handle, min_side=min_side)
        handle.load()  # first frame of an animation; raises on truncated or corrupt data
        image = ImageOps.exif_transpose(handle)  # a detached copy, rotated if EXIF says so
    except MemoryError:
        raise
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise ImageDecodeError(label, f"cannot decode ({type(e).__name__}: {e})") from e
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_to_eight_bit(image)
    return image


def reduce_jpeg_decode(handle: Image.Image, *, min_side: int) -> int:
    """Ask libjpeg to decode ``handle`` at 1/2, 1/4 or 1/8 scale, the largest reduction that keeps
    the shorter side >= ``min_side``. Returns the scale (1: not reduced; not a JPEG, or too small).
    Must be called before the pixels are loaded."""
    if handle.format != "JPEG" or min_side < 1:
        return 1
    width, height = handle.size
    short = min(width, height)
    for scale in (8, 4, 2):
        if -(-short // scale) >= min_side:  # libjpeg rounds the scaled size up
            handle.draft(None, (width // scale, height // scale))  # mode kept: L, RGB and CMYK alike
            return scale
    return 1


def _head(source: io.BytesIO | Path, n: int = 16) -> bytes:
    """The first bytes of a file or buffer (for format sniffing); empty if unreadable."""
    try:
        if isinstance(source, io.BytesIO):
            return source.getvalue()[:n]
        with open(source, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _sixteen_to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale → 8-bit "L", keeping the top byte (65535 → 255)."""
    pixels = np.array(image).astype(np.uint16)  # (H, W), native byte order whatever the mode
    return Image.fromarray((pixels >> 8).astype(np.uint8))  # (H, W) uint8 → mode "L"
