"""Reading untrusted uploads: a byte limit enforced while streaming, and a pixel limit checked from
the image header before any pixel is decoded (decompression bombs)."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from ..data.images import ImageDecodeError, load_image

if TYPE_CHECKING:
    from starlette.requests import Request

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: any real photo, not a 50k x 50k bomb


class UploadError(ValueError):
    """A rejected upload, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``max_bytes``: a lying or absent
    Content-Length cannot make the server buffer more than the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise UploadError(413, f"upload of {int(declared)} bytes exceeds the {max_bytes}-byte limit")
        except ValueError as e:
            if isinstance(e, UploadError):
                raise
            raise UploadError(400, f"invalid Content-Length {declared!r}") from e
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadError(413, f"upload exceeds the {max_bytes}-byte limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise UploadError(400, "empty upload: send the image bytes as the request body")
    return data


def decode_upload(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Uploaded bytes → a decoded RGB-convertible PIL image, or an :class:`UploadError`."""
    try:  # the header alone gives the size: refuse bombs before decoding a single pixel
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"image refused: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UploadError(400, "not a readable image (jpg, png, webp, gif, bmp or tiff expected)") from e
    if width * height > max_pixels:
        raise UploadError(413, f"image of {width}x{height} pixels exceeds the {max_pixels}-pixel limit")
    try:
        return load_image(data, name="upload", max_pixels=max_pixels)
    except ImageDecodeError as e:
        raise UploadError(400, f"cannot decode the image: {e.reason}") from e
