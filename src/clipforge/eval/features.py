"""Embeddings of image files in batches, skipping (and reporting) unreadable images.

Text embeddings and the batched image encoder itself are in :mod:`clipforge.eval.zeroshot`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..data.images import ImageDecodeError, load_image
from ..data.skips import Skip
from ..models import CLIP
from ..progress import progress_bar
from .zeroshot import encode_images

log = logging.getLogger(__name__)


@dataclass
class ImageFeatures:
    """Normalised embeddings of the images that could be read, and what happened to the others."""

    features: torch.Tensor  # (N_ok, E), float32 on CPU
    kept: list[int]  # index into the input list of each row of ``features``
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) per skipped file


def read_images(
    paths: Sequence[str | Path], *, warn: bool = False
) -> tuple[list[Image.Image], list[int], list[tuple[str, str]]]:
    """Decoded images, the input index of each, and (path, reason) for each one that failed."""
    images, kept, failures = [], [], []
    for i, p in enumerate(paths):
        try:
            images.append(load_image(p))
            kept.append(i)
        except ImageDecodeError as e:
            failures.append((str(p), e.reason))
            if warn:
                log.warning("skipped unreadable image %s: %s", p, e.reason)
    return images, kept, failures


def embed_images(
    model: CLIP, transform: Callable, images: Sequence[Image.Image], *, batch_size: int = 64
) -> torch.Tensor:
    """PIL images → normalised embeddings (N, E), float32 on CPU (through ``zeroshot.encode_images``)."""
    if not images:
        return torch.zeros(0, model.config.embed_dim)
    pixels = torch.stack([transform(im) for im in images])  # (N, 3, H, W)
    return encode_images(model, pixels, batch_size=batch_size).cpu()


def encode_image_files(
    model: CLIP,
    transform: Callable,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "images",
) -> ImageFeatures:
    """Read and embed image files in batches; an unreadable file is logged, listed and skipped."""
    chunks, kept, failures = [], [], []
    bar = progress_bar(total=len(paths), desc=desc, unit="img", enabled=progress)
    for start in range(0, len(paths), batch_size):
        images, ok, bad = read_images(paths[start : start + batch_size])
        if images:
            chunks.append(embed_images(model, transform, images, batch_size=batch_size))
        kept += [start + i for i in ok]
        failures += bad
        bar.update(len(ok) + len(bad))
    bar.close()
    if failures:
        named = "; ".join(f"{p}: {r}" for p, r in failures[:5]) + ("; ..." if len(failures) > 5 else "")
        log.warning("skipped %d of %d images that could not be read (%s)", len(failures), len(paths), named)
    features = torch.cat(chunks) if chunks else torch.zeros(0, model.config.embed_dim)
    return ImageFeatures(features, kept, failures)


@torch.no_grad()
def encode_labelled(
    model: CLIP,
    dataset: Dataset | IterableDataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    limit: int | None = None,
    progress: bool = False,
    desc: str = "images",
) -> tuple[torch.Tensor, list[Any], list[tuple[str, str]]]:
    """Embed a dataset of ``(preprocessed image, target)`` items (or :class:`Skip`) in batches:
    ``(features (N, E) float32 on CPU, targets, [(where, reason) per skipped item])``. ``limit``
    stops after that many usable items (the first ones of an iterable, evenly spaced otherwise)."""

    if limit is not None and not isinstance(dataset, IterableDataset) and len(dataset) > limit:
        stride = len(dataset) / limit
        dataset = Subset(dataset, [int(i * stride) for i in range(limit)])  # every class, not the first few
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list)
    chunks, targets, failures = [], [], []
    bar = progress_bar(desc=desc, unit="img", enabled=progress)
    for batch in loader:
        kept = []
        for item in batch:
            if isinstance(item, Skip):
                failures.append((item.where, item.reason))
            elif limit is None or len(targets) + len(kept) < limit:
                kept.append(item)
        if kept:
            pixels = torch.stack([torch.as_tensor(p) for p, _ in kept])  # (b, 3, H, W)
            chunks.append(encode_images(model, pixels, batch_size=batch_size).cpu())  # (b, E)
            targets += [t for _, t in kept]
        bar.update(len(batch))
        if limit is not None and len(targets) >= limit:
            break
    bar.close()
    features = torch.cat(chunks) if chunks else torch.zeros(0, model.config.embed_dim)
    return features, targets, failures
