"""Image → tensor preprocessing, pixel-exact with OpenAI's and open_clip's pipeline.

The eval transform reproduces, on PIL input, what torchvision's v1 ``Resize(size, BICUBIC)`` →
``CenterCrop(size)`` → ``convert("RGB")`` → ``ToTensor()`` → ``Normalize(mean, std)`` does,
without importing torchvision. The facts that make the tensors equal:

* Resize of the shorter side: the short side becomes ``size`` and the long side
  ``int(size * long / short)`` (truncated, not rounded). An image already at that size is not
  touched. Otherwise Pillow's ``Image.resize`` is called once, with no ``reducing_gap``: Pillow
  always antialiases bicubic/bilinear, forces NEAREST for modes "1" and "P", and resizes "RGBA"/"LA"
  with premultiplied alpha.
* Resize and crop run on the image in its *original* mode; ``convert("RGB")`` comes after. So a
  palette image is resized with NEAREST, and 16-bit or float images are clipped to 0..255 by
  Pillow's conversion (that is the reference's behaviour; :func:`clipforge.data.images.load_image`
  rescales 16-bit images to 8 bits before they get here).
* Center crop offsets are ``round((H - size) / 2)`` with Python's round-half-to-even.
* ``ToTensor`` divides the uint8 value by 255 in float32; ``Normalize`` then subtracts the
  float32 mean and divides by the float32 std, in that order. Same ops, same order → same bits.

``resize_mode="squash"`` resizes both sides to ``size`` and does not crop.

The train transform is a random resized crop: torchvision's sampling of area fraction and log
aspect ratio (ten tries, then a centre crop clamped to the ratio range), drawing from torch's global
RNG in the same order, so with the same seed it picks the same boxes, and ``DataLoader`` worker
seeding gives each worker its own stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from clipforge.config import PreprocessConfig

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def shortest_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(new_height, new_width) after scaling the shorter side to ``size``; the longer side is
    truncated, as torchvision does."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``size`` x ``size`` window, torchvision's rounding."""
    if height < size or width < size:
        # Never reached after a shortest-side resize (the short side is ``size`` and the long side
        # int(size * long / short) >= size), so the reference's zero padding is not reproduced.
        raise ValueError(f"cannot center-crop {size}x{size} from a {width}x{height} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def random_resized_crop_box(
    height: int,
    width: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of a random crop covering ``scale`` of the image area
    with aspect ratio (w / h) log-uniform in ``ratio``.

    Draws from torch's RNG (the global one unless ``generator`` is given) exactly like torchvision's
    ``RandomResizedCrop.get_params``: up to ten (area, ratio) proposals, each followed by two
    ``randint`` draws for the offset once one fits; otherwise a centred crop of the whole image,
    narrowed to the nearest allowed aspect ratio.
    """
    area = height * width
    # torchvision takes the log of the ratio bounds in float32 and exponentiates a float32 sample;
    # doing the same keeps the proposals bit-identical.
    log_lo, log_hi = (float(v) for v in torch.log(torch.tensor(ratio, dtype=torch.float32)))
    for _ in range(10):
        frac = torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        log_r = torch.empty(1).uniform_(log_lo, log_hi, generator=generator)
        aspect = torch.exp(log_r).item()
        target_area = area * frac
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - crop_w + 1, size=(1,), generator=generator).item())
            return top, left, crop_h, crop_w
    image_ratio = width / height
    if image_ratio < min(ratio):  # too tall: keep the width, cut the height
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif image_ratio > max(ratio):  # too wide: keep the height, cut the width
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def normalize_uint8(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, H, W, 3) uint8 pixels → (B, 3, H, W) float32, ``(x / 255 - mean) / std``.

    The arithmetic is the reference's (float32 divide by 255, subtract mean, divide by std), so an
    image resized once and cached as uint8 gives the same tensor as the PIL path. Runs on whatever
    device ``batch`` lives on: move uint8 to the GPU first, normalise there (4x less to copy).
    """
    if batch.dtype != torch.uint8:
        raise TypeError(f"normalize_uint8 expects uint8 pixels, got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"normalize_uint8 expects a (B, H, W, 3) batch, got shape {tuple(batch.shape)}")
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    x = batch.permute(0, 3, 1, 2)  # (B, 3, H, W), a view
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    return x.div_(255).sub_(mean_t).div_(std_t)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (H, W, 3) uint8 tensor (a copy that owns its memory)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
    return torch.from_numpy(np.array(image, dtype=np.uint8))  # (H, W, 3)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")`` with an error that names the mode when Pillow cannot convert it."""
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"cannot convert a {image.mode!r} image to RGB: {e}") from e


class ImageTransform:
    """Callable PIL image → (3, size, size) float32 tensor. Plain attributes only, so it pickles
    into ``DataLoader`` workers. Build it with :func:`image_transform`."""

    def __init__(
        self,
        preprocess: PreprocessConfig,
        image_size: int,
        *,
        train: bool,
        scale: tuple[float, float],
        ratio: tuple[float, float],
        uint8: bool = False,
    ) -> None:
        self.preprocess = preprocess
        self.uint8 = uint8
        self.image_size = image_size
        self.train = train
        self.scale = scale
        self.ratio = ratio

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """The geometric part: the output is ``image_size`` square, still in the input's mode."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"ImageTransform expects a PIL.Image.Image, got {type(image).__name__}")
        size, resample = self.image_size, _RESAMPLE[self.preprocess.interpolation]
        width, height = image.size
        if self.train:
            top, left, h, w = random_resized_crop_box(height, width, scale=self.scale, ratio=self.ratio)
            image = image.crop((left, top, left + w, top + h))
            if (h, w) != (size, size):
                image = image.resize((size, size), resample, reducing_gap=None)
            return image
        if self.preprocess.resize_mode == "squash":
            if (height, width) != (size, size):
                image = image.resize((size, size), resample, reducing_gap=None)
            return image
        new_h, new_w = shortest_side_size(height, width, size)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), resample, reducing_gap=None)
        return image.crop(center_crop_box(new_h, new_w, size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = to_rgb(self.resize_and_crop(image))
        pixels = pil_to_uint8(rgb)  # (S, S, 3)
        if self.uint8:  # normalised later, per batch, on the device (collate.prepare_images)
            return pixels
        return normalize_uint8(pixels[None], self.preprocess.mean, self.preprocess.std)[0]  # (3, S, S)

    def __repr__(self) -> str:
        p = self.preprocess
        kind = f"train, scale={self.scale}, ratio={self.ratio}" if self.train else p.resize_mode
        return (
            f"ImageTransform(size={self.image_size}, {kind}, {p.interpolation}, mean={p.mean}, std={p.std})"
        )


def image_transform(
    preprocess: PreprocessConfig,
    image_size: int,
    *,
    train: bool = False,
    scale: tuple[float, float] = (0.9, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    uint8: bool = False,
) -> ImageTransform:
    """The model's preprocessing as a picklable callable: PIL image → (3, S, S) float32 tensor.

    ``train=False``: OpenAI/open_clip's eval pipeline (resize shortest side + center crop, or
    squash). ``train=True``: random resized crop with area fraction in ``scale`` and aspect ratio in
    ``ratio``, resized with ``preprocess.interpolation``. Both convert to RGB and normalise, unless
    ``uint8=True``: then the result is the uint8 ``(S, S, 3)`` pixels (normalise them per batch).
    """
    preprocess.validate()
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    return ImageTransform(
        preprocess,
        image_size,
        train=train,
        scale=(float(scale[0]), float(scale[1])),
        ratio=(float(ratio[0]), float(ratio[1])),
        uint8=uint8,
    )
