"""Whole-dataset evaluations behind ``clipforge eval``: zero-shot classification, image-text
retrieval and the linear probe, each returning a report that serialises to JSON.

The numbers come from the same functions the training loop and ``quickstart`` use
(:func:`~clipforge.eval.zeroshot.build_classifier`, :func:`~clipforge.eval.zeroshot.zero_shot_accuracy`,
:func:`~clipforge.eval.retrieval.retrieval_metrics`), so a model scores the same here as there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import Skip, build_dataset, describe_source
from ..data.protocols import KeyedByImage, load_skips_of
from ..data.skips import no_usable_pairs
from ..models import CLIP
from ..progress import progress_bar
from .accuracy import confusion_matrix, mean_per_class_accuracy, per_class_accuracy
from .clip_benchmark import BenchmarkImages, BenchmarkSet
from .datasets import LabelledImages
from .features import encode_image_files, encode_labelled
from .linear_probe import ProbeResult, linear_probe, stratified_split
from .retrieval import retrieval_metrics
from .zeroshot import build_classifier, encode_images, encode_texts, predict, zero_shot_accuracy

log = logging.getLogger(__name__)


def _skips(failures: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"path": p, "reason": r} for p, r in failures]


# ---- zero-shot ---------------------------------------------------------------------------------
@dataclass
class ZeroShotReport:
    classnames: list[str]
    n_templates: int
    accuracy: dict[str, float]  # {"top1": ..., "top5": ...}
    confusion: torch.Tensor  # (C, C) counts, row = true class
    n_images: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_rows: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        per_class = per_class_accuracy(self.confusion)
        return {
            "task": "zeroshot",
            **self.accuracy,
            "mean_per_class_top1": mean_per_class_accuracy(self.confusion),
            "chance": 1.0 / len(self.classnames),
            "per_class_top1": dict(zip(self.classnames, per_class, strict=True)),
            "classnames": self.classnames,
            "n_templates": self.n_templates,
            "n_images": self.n_images,
            "confusion": self.confusion.tolist(),
            "skipped": _skips(self.failures) + [{"row": r} for r in self.skipped_rows],
        }


def zeroshot_dataset(
    model: CLIP,
    tokenizer: Callable,
    transform: Callable,
    data: LabelledImages,
    templates: list[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> ZeroShotReport:
    """Template-ensembled zero-shot accuracy (top-1/5, per class, confusion) on a labelled set."""
    feats = encode_image_files(model, transform, data.paths, batch_size=batch_size, progress=progress)
    if not feats.kept:
        raise ValueError(f"{data.source}: none of the {len(data)} images could be read")
    labels = torch.tensor([data.labels[i] for i in feats.kept])  # (N,)
    return _zeroshot_report(
        model, tokenizer, feats.features, labels, data.classnames, templates, feats.failures, data.skipped
    )


def zeroshot_benchmark(
    model: CLIP,
    tokenizer: Callable,
    transform: Callable,
    bench: BenchmarkSet,
    *,
    templates: list[str],
    classnames: list[str],
    batch_size: int = 64,
    workers: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> ZeroShotReport:
    """Zero-shot accuracy on a CLIP_benchmark WebDataset split (:mod:`.clip_benchmark`)."""
    features, targets, failures = encode_labelled(
        model,
        BenchmarkImages(bench, transform=transform),
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        progress=progress,
        desc=bench.name,
    )
    if not targets:
        raise ValueError(f"{bench.root}: no usable images in split {bench.split!r}")
    labels = torch.tensor(targets, dtype=torch.long)  # (N,)
    if int(labels.max()) >= len(classnames):
        raise ValueError(f"{bench.root}: label {int(labels.max())} but only {len(classnames)} class names")
    return _zeroshot_report(model, tokenizer, features, labels, classnames, templates, failures, [])


def _zeroshot_report(
    model: CLIP,
    tokenizer: Callable,
    features: torch.Tensor,
    labels: torch.Tensor,
    classnames: list[str],
    templates: list[str],
    failures: list[tuple[str, str]],
    skipped_rows: list[str],
) -> ZeroShotReport:
    classifier = build_classifier(model, tokenizer, classnames, templates)  # (C, E)
    features = features.to(classifier.device)  # (N, E)
    accuracy = zero_shot_accuracy(features, classifier, labels, topk=(1, 5))
    predictions = predict(features, classifier).cpu()  # (N,)
    confusion = confusion_matrix(predictions, labels, len(classnames))
    return ZeroShotReport(list(classnames), len(templates), accuracy, confusion, len(labels), failures, skipped_rows)


# ---- retrieval ---------------------------------------------------------------------------------
@dataclass
class RetrievalReport:
    metrics: dict[str, float]
    n_images: int
    n_captions: int
    skipped: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "retrieval",
            **self.metrics,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "skipped": self.skipped,
        }


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


def retrieval_dataset(
    model: CLIP,
    tokenizer: Callable,
    transform: Callable,
    source: str | Path,
    *,
    image_key: str = "filepath",
    caption_key: str = "title",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> RetrievalReport:
    """Recall@1/5/10 both ways, mean and median rank, on image-caption data in any format that
    :func:`clipforge.data.build_dataset` reads. Rows naming the same image file are one image with
    several captions (as are multi-caption JSONL rows and multi-line ``.txt`` files)."""

    dataset = build_dataset(
        source, transform=transform, image_key=image_key, caption_key=caption_key, all_captions=True
    )
    skips = load_skips_of(dataset)
    keyed = isinstance(dataset, KeyedByImage)  # map-style pairs: group rows by image file
    items = _Indexed(dataset) if keyed else dataset
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers, collate_fn=list)
    image_of: dict[Any, int] = {}
    chunks, captions, owner = [], [], []
    for batch in progress_bar(loader, desc="retrieval images", unit="batch", enabled=progress):
        new = []
        for n, entry in enumerate(batch):
            index, item = entry if keyed else (len(image_of) + n, entry)
            if isinstance(item, Skip):
                skips.append(item)
                continue
            pixels, texts = item
            key = dataset.image_path(index) if keyed else index
            if key not in image_of:
                image_of[key] = len(image_of)
                new.append(pixels)
            captions += texts
            owner += [image_of[key]] * len(texts)
        if new:
            chunks.append(encode_images(model, torch.stack(new), batch_size=batch_size).cpu())  # (b, E)
    if not chunks:
        raise no_usable_pairs(str(source), skips, columns=describe_source(source) in ("csv", "jsonl"))
    skipped = [str(s) for s in skips]
    for reason in skipped[:5]:
        log.warning("skipped %s", reason)
    image_emb = torch.cat(chunks)  # (N, E)
    text_emb = encode_texts(model, tokenizer, captions).cpu()  # (M, E)
    metrics = retrieval_metrics(image_emb, text_emb, owner)
    return RetrievalReport(metrics, image_emb.shape[0], len(captions), skipped)


# ---- linear probe ------------------------------------------------------------------------------
@dataclass
class ProbeReport:
    probe: ProbeResult
    classnames: list[str]
    zeroshot: dict[str, float] | None  # zero-shot accuracy on the same test images, when asked
    failures: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        out = {"task": "linear_probe", **self.probe.to_dict()}
        out["per_class_top1"] = dict(zip(self.classnames, self.probe.per_class, strict=True))
        out["classnames"] = self.classnames
        if self.zeroshot is not None:
            out["zeroshot_top1_same_test"] = self.zeroshot["top1"]
        out["confusion"] = self.probe.confusion.tolist()
        out["skipped"] = _skips(self.failures)
        return out


def linear_probe_dataset(
    model: CLIP,
    transform: Callable,
    data: LabelledImages,
    *,
    train: LabelledImages | None = None,
    k_shot: int | None = None,
    test_fraction: float = 0.5,
    val_fraction: float = 0.2,
    seed: int = 0,
    tokenizer: Callable | None = None,
    templates: list[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> ProbeReport:
    """Linear probe with ``train`` as the training pool and ``data`` as the test set, or, without
    ``train``, a stratified ``test_fraction`` of ``data`` held out for testing. With a tokenizer and
    templates, the zero-shot accuracy on the same test images is reported beside it."""
    if train is not None and list(train.classnames) != list(data.classnames):
        raise ValueError(f"{train.source} and {data.source} have different classes")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    feats = encode_image_files(model, transform, data.paths, batch_size=batch_size, progress=progress)
    labels = torch.tensor([data.labels[i] for i in feats.kept])  # (N,)
    failures = list(feats.failures)
    if train is None:
        tr, te = stratified_split(labels.numpy(), test_fraction, seed=seed)
        x_tr, y_tr, x_te, y_te = feats.features[tr], labels[tr], feats.features[te], labels[te]
    else:
        tfeats = encode_image_files(model, transform, train.paths, batch_size=batch_size, progress=progress)
        failures += tfeats.failures
        x_tr, y_tr = tfeats.features, torch.tensor([train.labels[i] for i in tfeats.kept])
        x_te, y_te = feats.features, labels
    if len(y_te) == 0 or len(y_tr) == 0:
        raise ValueError("the linear probe needs both training and test images")
    probe = linear_probe(
        x_tr,
        y_tr,
        x_te,
        y_te,
        num_classes=len(data.classnames),
        k_shot=k_shot,
        val_fraction=val_fraction,
        seed=seed,
    )
    zeroshot = None
    if tokenizer is not None and templates:
        classifier = build_classifier(model, tokenizer, data.classnames, templates)  # (C, E)
        zeroshot = zero_shot_accuracy(x_te.to(classifier.device), classifier, y_te, topk=(1,))
    log.info(
        "linear probe: top-1 %.4f with C=%g (%d train, %d test)",
        probe.accuracy,
        probe.C,
        len(y_tr),
        len(y_te),
    )
    return ProbeReport(probe, list(data.classnames), zeroshot, failures)
