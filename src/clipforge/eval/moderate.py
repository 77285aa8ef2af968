"""Content moderation by zero-shot scoring against a policy's flagged and benign descriptions.

Each image is scored against every description of the policy (flagged and benign together): with
``mode: softmax`` the scores are a probability distribution over the descriptions, with
``mode: sigmoid`` an independent probability per description. For each flagged description the
*margin* is ``score - threshold``; the image is **flagged** when the largest margin is ≥ 0, and the
description with that margin is the one that matched. Otherwise it **passes**, and the matched
description is the best-scoring benign one (the closest flagged one when the policy has none).
The reported margin is that largest flagged margin either way: ≥ 0 flags, < 0 passes, and its
size says how far the image is from the decision boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ..models import CLIP
from .classifier import ZeroShotClassifier
from .policy import Policy


@dataclass
class Decision:
    flagged: bool
    matched: str  # the description that decided (see the module docstring)
    score: float  # the matched description's score
    margin: float  # max over flagged descriptions of score - threshold (≥ 0 ⇔ flagged)
    nearest_flagged: str  # the flagged description with that margin
    threshold: float  # its threshold
    scores: dict[str, float]  # every description's score

    @property
    def decision(self) -> str:
        return "flag" if self.flagged else "pass"

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "matched": self.matched,
            "score": self.score,
            "margin": self.margin,
            "nearest_flagged": self.nearest_flagged,
            "threshold": self.threshold,
            "scores": self.scores,
        }


class Moderator:
    """A policy bound to a model: description embeddings are built once."""

    def __init__(
        self, model: CLIP, tokenizer: Callable, policy: Policy, *, transform: Callable | None = None
    ) -> None:
        self.policy = policy
        self.classifier = ZeroShotClassifier(
            model, tokenizer, policy.descriptions, list(policy.templates), transform=transform
        )

    def decide(self, scores: torch.Tensor) -> list[Decision]:
        """Scores (N, D) in ``policy.descriptions`` order → one decision per row."""
        flagged, benign = self.policy.flagged, self.policy.benign
        thresholds = torch.tensor([r.threshold for r in flagged])  # (F,)
        names = self.policy.descriptions
        out = []
        for row in scores.float():
            margins = row[: len(flagged)] - thresholds  # (F,)
            f = int(margins.argmax())
            margin = float(margins[f])
            if margin >= 0 or not benign:
                m = f
            else:
                m = len(flagged) + int(row[len(flagged) :].argmax())
            out.append(
                Decision(
                    flagged=margin >= 0,
                    matched=names[m],
                    score=float(row[m]),
                    margin=margin,
                    nearest_flagged=flagged[f].description,
                    threshold=flagged[f].threshold,
                    scores={n: float(s) for n, s in zip(names, row.tolist(), strict=True)},
                )
            )
        return out

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.scores_from_features(features, mode=self.policy.mode)

    def moderate(self, images: torch.Tensor | Sequence[Image.Image]) -> list[Decision]:
        """Preprocessed (B, 3, H, W) images or PIL images → one decision each."""
        return self.decide(self.scores_from_features(self.classifier.encode(images)))
