"""Two random views of every image of a batch, on the device (SimCLR/SLIP's self-supervised input).

Works on the normalised float batch ``(B, 3, H, W)`` the model sees, in one batched pass per view:
a random resized crop with a random horizontal flip (one affine sampling grid per image, bilinear),
then brightness / contrast / saturation jitter and an occasional greyscale image, applied to the
un-normalised pixels. Captions play no part in this loss, so flips and colour changes are free.
Draws come from ``generator`` (seed it from the run's seed and step for reproducible runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

VIEW_SCALE = (0.25, 1.0)  # area fraction of each view's crop
VIEW_RATIO = (3 / 4, 4 / 3)
VIEW_JITTER = 0.4
VIEW_GREY = 0.2  # share of views turned grey
_GREY = (0.299, 0.587, 0.114)


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)


def random_view(images: Tensor, *, mean: Sequence[float], std: Sequence[float], generator: torch.Generator) -> Tensor:
    """One augmented view of each image of ``images`` (B, 3, H, W), normalised like the input."""
    B, dev = images.shape[0], images.device
    x = images.float()
    area = _uniform((B,), *VIEW_SCALE, generator, dev)  # (B,)
    log_ratio = _uniform((B,), math.log(VIEW_RATIO[0]), math.log(VIEW_RATIO[1]), generator, dev)
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # (B,) crop width as a share of the image width
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (2 * torch.rand(B, generator=generator, device=dev) - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
    cy = (2 * torch.rand(B, generator=generator, device=dev) - 1) * (1 - h)
    flip = torch.where(torch.rand(B, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)  # (B, 2, 3): output grid -> input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, 3, H, W)

    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=dev).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=dev).view(1, 3, 1, 1)
    x = x * std_t + mean_t  # (B, 3, H, W) pixels in [0, 1]
    b, c, s = (_uniform((3, B, 1, 1, 1), 1 - VIEW_JITTER, 1 + VIEW_JITTER, generator, dev)).unbind(0)
    weights = torch.tensor(_GREY, dtype=x.dtype, device=dev).view(1, 3, 1, 1)
    x = x * b
    grey = (x * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)
    grey = (x * weights).sum(dim=1, keepdim=True)
    grey_out = (torch.rand(B, 1, 1, 1, generator=generator, device=dev) < VIEW_GREY).float()
    s = s * (1 - grey_out)  # saturation 0: a grey image
    x = ((x - grey) * s + grey).clamp(0, 1)
    return ((x - mean_t) / std_t).to(images.dtype)


def two_views(
    images: Tensor, *, mean: Sequence[float], std: Sequence[float], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Two independent :func:`random_view` s of ``images``."""
    return (
        random_view(images, mean=mean, std=std, generator=generator),
        random_view(images, mean=mean, std=std, generator=generator),
    )
