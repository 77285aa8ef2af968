"""Shared input checks for the contrastive losses: clear errors instead of silent broadcasting."""

from __future__ import annotations

import torch
from torch import Tensor


def check_features(image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a batch of ``(n, d)`` paired features; return them in a float32-or-wider dtype."""
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must have shape (batch, dim) with batch >= 1, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must be paired, with equal shapes: "
            f"{tuple(image_features.shape)} vs {tuple(text_features.shape)}"
        )
    if image_features.device != text_features.device:
        raise ValueError(f"features on different devices: {image_features.device} vs {text_features.device}")
    # Half-precision features are upcast: log-sum-exp over thousands of logits needs float32.
    dtype = torch.promote_types(torch.promote_types(image_features.dtype, text_features.dtype), torch.float32)
    return image_features.to(dtype), text_features.to(dtype)


def check_scalar(name: str, value: Tensor | float, *, like: Tensor) -> Tensor:
    """Turn a python float or one-element tensor into a 0-dim tensor on ``like``'s device/dtype."""
    if not isinstance(value, Tensor):
        if not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a tensor or a float, got {type(value).__name__}")
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if value.numel() != 1:
        raise ValueError(f"{name} must hold a single value, got shape {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but the features are on {like.device}")
    return value.reshape(()).to(like.dtype)


def full_precision(t: Tensor) -> torch.autocast:
    """A region where autocast is off: the losses compute in their (float32 or wider) input dtype
    even when called inside a bf16/fp16 autocast region, materialised or chunked alike."""
    return torch.autocast(t.device.type, enabled=False)


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
