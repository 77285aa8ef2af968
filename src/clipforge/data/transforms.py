"""TEMPORARY STAND-IN written by the data helper so the data branch runs on its own.

The transforms helper owns this module; on merge, replace this file with theirs (same names:
``image_transform``, ``normalize_uint8``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from clipforge.config import PreprocessConfig


def _resize(img: Image.Image, size: int, preprocess: PreprocessConfig) -> Image.Image:
    resample = Image.BICUBIC if preprocess.interpolation == "bicubic" else Image.BILINEAR
    if preprocess.resize_mode == "squash":
        return img.resize((size, size), resample)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def image_transform(
    preprocess: PreprocessConfig, image_size: int, *, train: bool = False
) -> Callable[[Image.Image], torch.Tensor]:
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)

    def apply(img: Image.Image) -> torch.Tensor:
        arr = np.asarray(_resize(img.convert("RGB"), image_size, preprocess))  # (H, W, 3) uint8
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0  # (3, H, W)
        return (x - mean) / std

    return apply


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
