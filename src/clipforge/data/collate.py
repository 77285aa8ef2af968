"""Batching: drop skipped samples, tokenize captions, and carry the skip counts to the main process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from clipforge.data.skips import Skip
from clipforge.data.transforms import normalize_uint8

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass
class Batch:
    """A training batch.

    ``images`` is float ``(B, 3, H, W)`` from an on-the-fly transform, or uint8 ``(B, H, W, 3)``
    from a pre-decoded cache (normalise it on the device with :func:`prepare_images`). ``tokens``
    is ``(B, ctx)``. ``skipped`` counts the samples dropped from this batch by reason and
    ``skip_notes`` says where (the first few); ``skip_keys`` names every skipped sample as
    ``(reason, where)`` so that ``SkipStats.update`` counts a sample met in several epochs once.
    A batch whose samples were all skipped has ``B == 0`` (``len(batch) == 0``): count it, then move on without a step.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    texts: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    skip_notes: list[str] = field(default_factory=list)
    skip_keys: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return Batch(
            self.images.pin_memory(),
            self.tokens.pin_memory(),
            self.texts,
            self.skipped,
            self.skip_notes,
            self.skip_keys,
        )


class Collator:
    """``collate_fn`` for the pair datasets: ``Collator(tokenizer)`` where ``tokenizer(list[str])``
    returns a LongTensor ``(B, ctx)``. Keeps at most ``max_notes`` skip notes per batch."""

    def __init__(self, tokenizer: Tokenizer, *, max_notes: int = 8) -> None:
        self.tokenizer = tokenizer
        self.max_notes = max_notes

    def __call__(self, samples: Sequence[tuple[torch.Tensor, str] | Skip | None]) -> Batch:
        skipped: Counter[str] = Counter()
        notes: list[str] = []
        keys: list[tuple[str, str]] = []
        images, texts = [], []
        for s in samples:
            if s is None or isinstance(s, Skip):
                reason = s.reason if s is not None else "unknown"
                skipped[reason] += 1
                if s is not None:
                    keys.append((s.reason, s.where))
                if len(notes) < self.max_notes:
                    notes.append(str(s) if s is not None else "a dataset returned None")
                continue
            image, text = s
            images.append(image)
            texts.append(text)
        if not images:
            return Batch(torch.empty(0), torch.empty(0, 0, dtype=torch.long), [], skipped, notes, keys)
        tokens = self.tokenizer(texts)
        if tokens.shape[0] != len(texts):
            raise ValueError(f"tokenizer returned {tokens.shape[0]} rows for {len(texts)} captions")
        return Batch(torch.stack(images), tokens, texts, skipped, notes, keys)  # images (B, 3, H, W) or (B, H, W, 3)


def prepare_images(
    images: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Batch images on ``device`` as normalised float ``(B, 3, H, W)``: uint8 ``(B, H, W, 3)`` cache
    batches are moved first (4x fewer bytes) and normalised there; float batches are only moved."""
    images = images.to(device, non_blocking=True) if device is not None else images
    if images.dtype == torch.uint8:
        return normalize_uint8(images, mean, std)
    return images
