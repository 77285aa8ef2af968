"""Thumbnails of indexed files, and the one place that turns a stored path into a file path.

:func:`indexed_file` resolves a path *read from the index* against the index root and refuses
anything that lands outside it (``..`` components, absolute paths, links pointing out), so neither a
tampered database nor a link swapped in after indexing can expose other files.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .scan import is_within

THUMB_SIZE = 256
THUMB_MAX_PIXELS = 89_478_485


class ThumbnailError(ValueError):
    """The file cannot be shown (gone, outside the root, or not decodable)."""


def indexed_file(root: str | Path, rel_path: str) -> Path:
    """``root / rel_path``, resolved, guaranteed to be a regular file inside ``root``."""
    if not rel_path or os.path.isabs(rel_path) or "\x00" in rel_path:
        raise ThumbnailError(f"{rel_path!r}: not a relative path")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, rel_path))
    if not is_within(real, real_root) or real == real_root:
        raise ThumbnailError(f"{rel_path!r}: resolves outside the indexed folder")
    if not os.path.isfile(real):
        raise ThumbnailError(f"{rel_path!r}: no longer exists")
    return Path(real)


def make_thumbnail(
    path: str | Path, *, size: int = THUMB_SIZE, max_pixels: int = THUMB_MAX_PIXELS, quality: int = 85
) -> bytes:
    """JPEG bytes of the image at ``path``, fitted in ``size`` x ``size``, EXIF-oriented.

    JPEGs are decoded at reduced scale (``draft``), which makes large photos cheap to thumbnail.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels or w == 0 or h == 0:
                    raise ThumbnailError(f"{path}: {w}x{h} image refused (limit {max_pixels} pixels)")
                im.draft("RGB", (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode != "RGB":  # flatten transparency onto white
                    rgba = im.convert("RGBA")
                    im = Image.new("RGB", rgba.size, (255, 255, 255))
                    im.paste(rgba, mask=rgba.getchannel("A"))
                im.thumbnail((size, size), Image.Resampling.BICUBIC)
                out = io.BytesIO()
                im.save(out, format="JPEG", quality=quality)
                return out.getvalue()
    except ThumbnailError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ThumbnailError(f"{path}: cannot make a thumbnail ({type(e).__name__}: {e})") from e
