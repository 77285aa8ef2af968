"""Text augmentation for tag-like captions: tag/word dropout and shuffled tag order.

A caption with a comma is a tag list (``"dog, beach, sunset"``): its tags may be shuffled and each
dropped with probability ``dropout``. Any other caption is a sentence: only word dropout applies
(its word order carries meaning). At least one tag or word always survives. Draws come from torch's
global RNG, which the loader seeds per ``(seed, epoch, index)``.
"""

from __future__ import annotations

import torch


def augment_caption(caption: str, *, dropout: float = 0.0, shuffle_tags: bool = False) -> str:
    """``caption`` with tags (comma-separated) or words dropped with probability ``dropout`` and,
    for tag lists with ``shuffle_tags``, the tags in a random order; never empty."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    tagged = "," in caption
    parts = [t.strip() for t in caption.split(",")] if tagged else caption.split()
    parts = [p for p in parts if p]
    if not parts:
        return caption
    if tagged and shuffle_tags and len(parts) > 1:
        parts = [parts[i] for i in torch.randperm(len(parts)).tolist()]
    if dropout > 0 and len(parts) > 1:
        keep = (torch.rand(len(parts)) >= dropout).tolist()
        if not any(keep):  # never drop every word: keep one at random
            keep[int(torch.randint(len(parts), ()))] = True
        parts = [p for p, k in zip(parts, keep, strict=True) if k]
    return ", ".join(parts) if tagged else " ".join(parts)
