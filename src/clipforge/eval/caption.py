"""Captioning by retrieval: the best captions for an image from a bank of candidate texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import CLIP
from .prompts import read_entries
from .zeroshot import encode_texts


@dataclass
class CaptionMatch:
    caption: str
    similarity: float  # cosine similarity of image and caption embeddings
    probability: float  # softmax over the whole bank of logit_scale · cosine

    def to_dict(self) -> dict:
        return {"caption": self.caption, "similarity": self.similarity, "probability": self.probability}


def load_caption_bank(path: str | Path) -> list[str]:
    """Captions from a text file, one per line (blank and ``#`` lines skipped, repeats dropped)."""
    return list(dict.fromkeys(text for _, text in read_entries(path, what="caption bank")))


class CaptionBank:
    """Candidate captions embedded once; :meth:`top_k` ranks them for any image embeddings."""

    def __init__(
        self, model: CLIP, tokenizer: Callable, captions: Sequence[str], *, batch_size: int = 256
    ) -> None:
        if not captions:
            raise ValueError("the caption bank is empty")
        self.model = model
        self.captions = list(captions)
        self.embeddings = encode_texts(model, tokenizer, self.captions, batch_size=batch_size)  # (M, E)

    def top_k(self, image_features: torch.Tensor, *, k: int = 5) -> list[list[CaptionMatch]]:
        """Image embeddings (N, E) → for each image, its ``k`` best captions, best first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        sims = image_features.float().cpu() @ self.embeddings.T  # (N, M)
        scale, _ = self.model.scale_and_bias()
        probs = (scale * sims).softmax(dim=-1)  # (N, M)
        values, indices = sims.topk(min(k, len(self.captions)), dim=-1)  # (N, k)
        return [
            [
                CaptionMatch(self.captions[j], float(v), float(probs[i, j]))
                for v, j in zip(vs, js, strict=True)
            ]
            for i, (vs, js) in enumerate(zip(values.tolist(), indices.tolist(), strict=True))
        ]
