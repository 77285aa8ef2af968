"""Periodic evaluation during training: zero-shot tasks and image-text retrieval on held-out data.

The evaluation images are decoded once, when the run starts, into tensors kept in memory, so an
evaluation is only the forward passes. Nothing here touches a random state.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..eval.features import encode_labelled
from ..eval.retrieval import retrieval_metrics
from ..eval.zeroshot import build_classifier, encode_images, encode_texts, zero_shot_accuracy
from ..models import CLIP


@dataclass(frozen=True)
class EvalTask:
    """A zero-shot task, either decoded once (``images (N, 3, H, W)``, ``labels (N,)``: small sets)
    or read at each evaluation from ``dataset`` (items ``(image, label)`` or a ``Skip``; large or
    user-given sets), at most ``limit`` images of it."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    images: Tensor | None = None
    labels: Tensor | None = None
    dataset: Dataset | None = None
    limit: int | None = None

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classnames)


@dataclass(frozen=True)
class RetrievalSet:
    """Held-out pairs: ``images (N, 3, H, W)``, ``captions[j]`` describing image ``text_to_image[j]``."""

    images: Tensor
    captions: list[str]
    text_to_image: list[int]


def _load_all(dataset: Dataset, *, limit: int | None, workers: int) -> list[Any]:
    if isinstance(dataset, IterableDataset):  # a stream: its first ``limit`` items
        return list(itertools.islice(iter(dataset), limit))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(
        subset,
        batch_size=64,
        num_workers=workers,
        collate_fn=list,
        generator=torch.Generator().manual_seed(0),
    )  # never draws from the global RNG
    return [item for batch in loader for item in batch]


def materialize_task(task: Any, *, limit: int | None = None, workers: int = 0) -> EvalTask:
    """Decode a task (``name``, ``classnames``, ``templates`` and a ``dataset`` of ``(image, target)``,
    e.g. a shapes :class:`~clipforge.data.shapes_tasks.ZeroShotTask` built with the eval transform)."""
    items = [it for it in _load_all(task.dataset, limit=limit, workers=workers) if isinstance(it, tuple)]
    if not items:
        raise ValueError(f"zero-shot task {task.name!r} has no usable images")
    images = torch.stack([torch.as_tensor(img) for img, _ in items])  # (N, 3, H, W)
    labels = torch.tensor([int(t) for _, t in items], dtype=torch.long)
    return EvalTask(task.name, tuple(task.classnames), tuple(task.templates), images, labels)


def materialize_retrieval(dataset: Dataset, *, limit: int | None = 1000, workers: int = 0) -> RetrievalSet:
    """Decode up to ``limit`` held-out ``(image, caption)`` pairs (skipped samples are left out)."""
    items = [it for it in _load_all(dataset, limit=limit, workers=workers) if isinstance(it, tuple)]
    if not items:
        raise ValueError("the validation data has no usable pairs")
    images = torch.stack([torch.as_tensor(img) for img, _ in items])  # (N, 3, H, W)
    return RetrievalSet(images, [str(c) for _, c in items], list(range(len(items))))


@torch.no_grad()
def evaluate(
    model: CLIP,
    tokenizer: Any,
    *,
    tasks: Sequence[EvalTask] = (),
    retrieval: RetrievalSet | None = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    batch_size: int = 256,
    workers: int = 0,
) -> dict[str, float]:
    """``{"zeroshot/<task>/top1": ..., "zeroshot/<task>/chance": ..., "zeroshot/mean_top1": ...,
    "retrieval/text_to_image_R@1": ..., ...}``. The model is left in eval mode."""
    model.eval()
    results: dict[str, float] = {}
    with autocast():
        for task in tasks:
            classifier = build_classifier(model, tokenizer, task.classnames, task.templates)  # (C, E)
            if task.images is not None:
                feats, labels = encode_images(model, task.images, batch_size=batch_size), task.labels  # (N, E)
            else:
                feats, targets, _ = encode_labelled(
                    model, task.dataset, batch_size=batch_size, workers=workers, limit=task.limit
                )  # (N, E)
                if not targets:
                    raise ValueError(f"zero-shot task {task.name!r} has no usable images")
                labels = torch.tensor(targets, dtype=torch.long)
            acc = zero_shot_accuracy(feats, classifier, labels, topk=(1, 5))
            for key, value in acc.items():
                results[f"zeroshot/{task.name}/{key}"] = value
            results[f"zeroshot/{task.name}/chance"] = task.chance
        if tasks:
            results["zeroshot/mean_top1"] = sum(results[f"zeroshot/{t.name}/top1"] for t in tasks) / len(tasks)
        if retrieval is not None:
            img = encode_images(model, retrieval.images, batch_size=batch_size)  # (N, E)
            txt = encode_texts(model, tokenizer, retrieval.captions, batch_size=batch_size)  # (M, E)
            for key, value in retrieval_metrics(img, txt, retrieval.text_to_image).items():
                results[f"retrieval/{key}"] = value
    return results


def headline(results: dict[str, float]) -> tuple[str, float] | None:
    """The figure that picks the best checkpoint: mean zero-shot top-1, else mean retrieval R@1."""
    if "zeroshot/mean_top1" in results:
        return "zeroshot/mean_top1", results["zeroshot/mean_top1"]
    keys = ("retrieval/text_to_image_R@1", "retrieval/image_to_text_R@1")
    if all(k in results for k in keys):
        return "retrieval/mean_R@1", sum(results[k] for k in keys) / 2
    return None


def regression_report(
    results: dict[str, float], baseline: dict[str, float], *, tolerance: float
) -> tuple[dict[str, float], list[str]]:
    """Zero-shot change since the starting model: ``{"regression/<task>/top1_delta": now - start,
    "regression/mean_top1_delta": ...}``, and the tasks that lost more than ``tolerance`` top-1."""
    deltas: dict[str, float] = {}
    dropped = []
    for key, start in baseline.items():
        if key.startswith("zeroshot/") and key.endswith("/top1") and key in results:
            task = key[len("zeroshot/") : -len("/top1")]
            deltas[f"regression/{task}/top1_delta"] = results[key] - start
            if results[key] - start < -tolerance:
                dropped.append(f"{task} {start:.3f} -> {results[key]:.3f}")
    if deltas:
        deltas["regression/mean_top1_delta"] = sum(deltas.values()) / len(deltas)
    return deltas, dropped
