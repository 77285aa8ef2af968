"""Linear probe: logistic regression on frozen image embeddings, regularisation chosen on a
validation split, optionally few-shot (k labelled images per class).

Protocol: the training pool is split (stratified) into train and validation; each inverse
regularisation strength ``C`` in a log-spaced grid is fitted on train and scored on validation;
the best ``C`` is refitted on train + validation and evaluated once on the test set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .accuracy import confusion_matrix, per_class_accuracy, topk_accuracy

log = logging.getLogger(__name__)

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-2, 4, 13))  # 0.01 … 10⁴, ×√10 steps


@dataclass
class ProbeResult:
    accuracy: float  # top-1 on the test set
    top5: float | None  # None with fewer than five classes
    C: float  # the chosen inverse regularisation strength
    val_accuracy: float | None  # of the chosen C on the validation split (None when there was none)
    per_class: list[float | None]
    confusion: torch.Tensor  # (C, C) counts on the test set
    n_train: int
    n_val: int
    n_test: int
    k_shot: int | None

    def to_dict(self) -> dict:
        return {
            "top1": self.accuracy,
            "top5": self.top5,
            "C": self.C,
            "val_top1": self.val_accuracy,
            "per_class_top1": self.per_class,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "k_shot": self.k_shot,
        }


def few_shot_indices(labels: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """``k`` random indices per class (all of a class that has fewer, with a warning), sorted."""
    if k < 1:
        raise ValueError(f"k-shot must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            log.warning("class %d has only %d training images (< k=%d): using all of them", c, len(idx), k)
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) indices: ``fraction`` of each class held out (at least one of every class
    that has two or more samples; none of a singleton class)."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _estimator(*, max_iter: int, seed: int):
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:
        raise ImportError("the linear probe needs scikit-learn: pip install 'clipforge[eval]'") from e
    return LogisticRegression(max_iter=max_iter, random_state=seed)


def _fit(model, x: np.ndarray, y: np.ndarray, C: float):
    """Fit in place; a fit that stops at ``max_iter`` is logged, not warned about each time."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.set_params(C=C).fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.debug("linear probe C=%g stopped at max_iter before converging", C)
    return model


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    k_shot: int | None = None,
    val_fraction: float = 0.2,
    Cs: tuple[float, ...] = DEFAULT_CS,
    max_iter: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Fit the probe on ``train_*`` (a ``k_shot`` subset of it if given) and evaluate on ``test_*``.

    With a single sample per class nothing can be held out, and ``C`` falls back to 1.0."""
    x, y = train_features.float().numpy(), train_labels.numpy()
    if k_shot is not None:
        pick = few_shot_indices(y, k_shot, seed=seed)
        x, y = x[pick], y[pick]
    if len(np.unique(y)) < 2:
        raise ValueError("the linear probe needs training images of at least two classes")
    tr, va = stratified_split(y, val_fraction, seed=seed)
    best_C, best_val = 1.0, None
    if len(va):
        # The path from strong to weak regularisation, each fit starting from the previous solution
        # (warm start): about half the iterations of independent fits.
        path = _estimator(max_iter=max_iter, seed=seed).set_params(warm_start=True)
        for C in sorted(Cs):
            acc = float((_fit(path, x[tr], y[tr], C).predict(x[va]) == y[va]).mean())
            log.debug("linear probe C=%g: validation accuracy %.4f", C, acc)
            if best_val is None or acc > best_val:  # ties keep the smaller C (stronger regularisation)
                best_C, best_val = C, acc
    else:
        log.warning("no validation split possible (one sample per class): using C=1.0")
    clf = _fit(_estimator(max_iter=max_iter, seed=seed), x, y, best_C)
    proba = np.zeros((len(test_labels), num_classes), dtype=np.float64)  # (N, C), absent classes stay 0
    proba[:, clf.classes_] = clf.predict_proba(test_features.float().numpy())
    scores = torch.from_numpy(proba)
    acc = topk_accuracy(scores, test_labels, ks=(1, 5))
    confusion = confusion_matrix(scores.argmax(dim=1), test_labels, num_classes)
    return ProbeResult(
        accuracy=acc[1],
        top5=acc.get(5),
        C=best_C,
        val_accuracy=best_val,
        per_class=per_class_accuracy(confusion),
        confusion=confusion,
        n_train=len(y),  # the final fit uses train + validation
        n_val=len(va),
        n_test=len(test_labels),
        k_shot=k_shot,
    )
