"""Heat maps from the model's input view back onto the original image, and their colour overlays.

The eval preprocessing scales the image (shorter side to the model's input size, or both sides
for ``resize_mode="squash"``) and crops the centred square. :func:`heat_on_image` inverts that
geometry exactly: every pixel of the original is mapped to its continuous position in the model's
input and the map is sampled there bilinearly (pixel centres at half-integers, as
``F.interpolate(..., align_corners=False)`` samples), so the heat sits on the pixels it was
computed from at any resolution. Pixels the crop cut off get NaN; :func:`overlay` dims them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..data.transforms import center_crop_box, shortest_side_size

# Colour ramp for overlays (low → high): dark blue, blue, cyan, yellow, red.
_RAMP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[0, 0, 96], [0, 64, 255], [0, 224, 224], [255, 224, 0], [224, 0, 0]], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), _RAMP_POS, _RAMP_RGB[:, c]) for c in range(3)], -1)
_LUT = _LUT.round().astype(np.uint8)  # (256, 3)
_OUTSIDE_DIM = 0.45  # brightness kept where the model did not look (cropped off)
_ROWS = 256  # rows blended at a time


def view_geometry(width: int, height: int, *, size: int, resize_mode: str) -> tuple[float, float, float, float]:
    """Where the model's ``size`` x ``size`` input lies on a ``width`` x ``height`` image:
    (scale_x, scale_y, left, top) — input pixels per original pixel, and the crop's offset in the
    scaled image (input pixels)."""
    if resize_mode == "squash":
        return size / width, size / height, 0.0, 0.0
    new_h, new_w = shortest_side_size(height, width, size)
    left, top, _, _ = center_crop_box(new_h, new_w, size)
    return new_w / width, new_h / height, float(left), float(top)


def _resample_matrix(n_out: int, n_in: int, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights (n_out, n_in) that sample a length-``n_in`` axis at the positions of
    ``n_out`` original pixels, and which of those pixels fall inside the input (n_out,) bool."""
    c = (np.arange(n_out) + 0.5) * scale - offset  # continuous input coordinate of each pixel centre
    inside = (c >= 0.0) & (c <= n_in)
    p = np.clip(c - 0.5, 0.0, n_in - 1.0)  # in index units, clamped to the border as interpolate does
    i0 = np.minimum(np.floor(p).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (p - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m, inside


def heat_on_image(
    heat: np.ndarray | torch.Tensor, width: int, height: int, *, resize_mode: str = "shortest"
) -> np.ndarray:
    """A map over the model's square input (S, S) → the same map over the original image
    (height, width), float32, NaN where the preprocessing cropped the image off."""
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"heat must be a square (S, S) map, got shape {h.shape}")
    size = h.shape[0]
    sx, sy, left, top = view_geometry(width, height, size=size, resize_mode=resize_mode)
    mx, in_x = _resample_matrix(width, size, sx, left)  # (W, S)
    my, in_y = _resample_matrix(height, size, sy, top)  # (H, S)
    out = my @ h @ mx.T  # (H, S) @ (S, S) @ (S, W) -> (H, W): separable bilinear sampling
    out[~in_y, :] = np.nan
    out[:, ~in_x] = np.nan
    return out


def colorize(heat: np.ndarray | torch.Tensor) -> np.ndarray:
    """Values in [0, 1], (H, W) → RGB uint8 (H, W, 3) on a blue→red ramp (NaN → the lowest)."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    return _LUT[np.clip(h * 255.0 + 0.5, 0, 255).astype(np.uint8)]


def overlay(image: Image.Image, heat: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """Blend the coloured ``heat`` (H, W, over ``image``'s own pixels; NaN where the model did not
    look, those pixels are dimmed instead) over ``image``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heat map of shape {heat.shape} does not match the {image.width}x{image.height} image")
    out = np.empty_like(rgb)
    for r0 in range(0, rgb.shape[0], _ROWS):  # in bands of rows: bounded memory on large photos
        band, h = rgb[r0 : r0 + _ROWS].astype(np.float32), heat[r0 : r0 + _ROWS]  # (b, W, 3), (b, W)
        mixed = (1.0 - alpha) * band + alpha * colorize(h).astype(np.float32)
        mixed = np.where(np.isnan(h)[..., None], band * _OUTSIDE_DIM, mixed)
        out[r0 : r0 + _ROWS] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out)
