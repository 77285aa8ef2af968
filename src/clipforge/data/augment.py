"""Per-sample training augmentation of ``(uint8 image, caption)`` pairs that keeps captions true.

Levels (``augment=``):

- ``"none"``: nothing (the train transform's own mild random resized crop only).
- ``"light"``: random resized crop with a mild area range (0.7-1.0, aspect 3/4-4/3) and a
  horizontal flip of half the images, *skipped* when the caption names a direction a flip would
  change (``left``, ``right``, ``clockwise``...: ``flip_words.txt``).
- ``"strong"``: light, plus mild brightness / contrast / saturation jitter. Each of the three
  scales or shifts the three channels alike, so the hue of every pixel (and every colour word) is
  unchanged.

Images are uint8 ``(H, W, 3)`` tensors (the pre-decoded cache's, or the train transform's with
``uint8=True``); normalisation happens per batch on the device. Random draws come from torch's
global RNG, which the loader seeds per ``(seed, epoch, index)`` before each sample, so the
augmentation of a sample is reproducible and independent of workers and resumes. Text
augmentation (:mod:`.text_augment`) runs on the same pairs.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from clipforge.data.protocols import Epochal, load_skips_of
from clipforge.data.skips import Skip
from clipforge.data.text_augment import augment_caption
from clipforge.data.transforms import random_resized_crop_box

AugmentLevel = Literal["none", "light", "strong"]
AUGMENT_LEVELS = ("none", "light", "strong")
LIGHT_SCALE = (0.7, 1.0)  # area fraction of the random resized crop
LIGHT_RATIO = (3 / 4, 4 / 3)
JITTER = 0.2  # brightness / contrast / saturation factors drawn from [1 - JITTER, 1 + JITTER]
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights


@cache
def _direction_pattern() -> re.Pattern[str]:
    text = resources.files("clipforge.data").joinpath("flip_words.txt").read_text(encoding="utf-8")
    words = [w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#")]
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + ")", re.IGNORECASE)


def mentions_direction(caption: str) -> bool:
    """Whether ``caption`` names a left/right direction (so a mirrored image would contradict it)."""
    return _direction_pattern().search(caption) is not None


def check_level(augment: str) -> None:
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_LEVELS)}, got {augment!r}")


def resized_crop_uint8(
    image: torch.Tensor, *, size: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> torch.Tensor:
    """A random resized crop of a uint8 ``(H, W, 3)`` image back to ``(size, size, 3)`` (bilinear,
    antialiased), drawn from torch's global RNG like the PIL train transform."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], scale=scale, ratio=ratio)
    crop = image[top : top + h, left : left + w]  # (h, w, 3)
    if (h, w) == (size, size):
        return crop.contiguous()
    x = crop.permute(2, 0, 1)[None].float()  # (1, 3, h, w)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()  # (size, size, 3)


def jitter_colour(image: torch.Tensor, *, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` with brightness (scale), contrast (blend with the mean grey) and saturation
    (blend with each pixel's grey) changed by the given factors; the hue of each pixel is kept."""
    x = image.float()  # (H, W, 3)
    x = x * brightness
    weights = torch.tensor(_GREY, dtype=x.dtype)
    grey = x @ weights  # (H, W)
    x = (x - grey.mean()) * contrast + grey.mean()
    grey = (x @ weights)[..., None]  # (H, W, 1)
    x = (x - grey) * saturation + grey
    return x.round_().clamp_(0, 255).to(torch.uint8)


class PairAugment:
    """``(uint8 (H, W, 3) image, caption) -> (augmented image, augmented caption)``.

    ``crop_size`` set: this also takes the random resized crop (the cache path, where images are
    stored at the model's size); ``None``: the transform already cropped (the decode path).
    ``text_dropout`` / ``shuffle_tags``: :func:`~clipforge.data.text_augment.augment_caption`.
    A plain object, so it pickles into DataLoader workers.
    """

    def __init__(
        self,
        augment: AugmentLevel = "none",
        *,
        crop_size: int | None = None,
        text_dropout: float = 0.0,
        shuffle_tags: bool = False,
    ) -> None:
        check_level(augment)
        if not 0.0 <= text_dropout < 1.0:
            raise ValueError(f"text_dropout must be in [0, 1), got {text_dropout}")
        self.augment, self.crop_size = augment, crop_size
        self.text_dropout, self.shuffle_tags = text_dropout, shuffle_tags

    @property
    def active(self) -> bool:
        return self.augment != "none" or self.text_dropout > 0 or self.shuffle_tags

    def image(self, image: torch.Tensor, caption: str) -> torch.Tensor:
        if self.augment == "none":
            return image
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise TypeError(f"augment expects uint8 (H, W, 3) images, got {image.dtype} {tuple(image.shape)}")
        if self.crop_size is not None:
            image = resized_crop_uint8(image, size=self.crop_size, scale=LIGHT_SCALE, ratio=LIGHT_RATIO)
        flip = bool(torch.rand(()) < 0.5)
        if flip and not mentions_direction(caption):
            image = image.flip(1)  # (H, W, 3): mirror the width
        if self.augment == "strong":
            b, c, s = (1.0 + JITTER * (2 * torch.rand(3) - 1)).tolist()
            image = jitter_colour(image, brightness=b, contrast=c, saturation=s)
        return image

    def __call__(self, image: Any, caption: str) -> tuple[Any, str]:
        image = self.image(image, caption)  # the flip is decided on the caption as written
        if self.text_dropout > 0 or self.shuffle_tags:
            caption = augment_caption(caption, dropout=self.text_dropout, shuffle_tags=self.shuffle_tags)
        return image, caption


class AugmentedPairs(Dataset):
    """A map-style pair dataset with :class:`PairAugment` applied to every usable item; skips pass
    through. The loader's per-sample seeding (``SeededDataset``) makes it deterministic."""

    def __init__(self, dataset: Dataset, augment: PairAugment) -> None:
        self.dataset, self.augment = dataset, augment
        self.load_skips = load_skips_of(dataset)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.dataset, Epochal):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, Skip) or item is None:
            return item
        image, caption = item
        return self.augment(image, caption)
