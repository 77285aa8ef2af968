"""Classification metrics on score matrices: top-k accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch


def topk_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Fraction of rows whose true label is among the ``k`` highest scores, for each ``k``.

    ``scores`` (N, C), ``labels`` (N,). A ``k`` above the number of classes C is left out."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"scores (N, C) and labels (N,) expected, got {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("no samples to score")
    ks = tuple(k for k in ks if k <= scores.shape[1])
    if not ks:
        return {}
    top = scores.topk(max(ks), dim=1).indices  # (N, kmax)
    hits = top == labels.to(top.device)[:, None]  # (N, kmax)
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()  # (N,)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Recall of each class from a confusion matrix; ``None`` for a class with no samples."""
    totals = confusion.sum(dim=1)
    return [None if t == 0 else (confusion[i, i] / t).item() for i, t in enumerate(totals.tolist())]


def mean_per_class_accuracy(confusion: torch.Tensor) -> float:
    """Balanced accuracy: the mean of the per-class accuracies of the classes that have samples."""
    values = [a for a in per_class_accuracy(confusion) if a is not None]
    return sum(values) / len(values)
