"""Figures for evaluation results (matplotlib, imported lazily: ``pip install 'clipforge[eval]'``)."""

from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'clipforge[eval]'") from e
    matplotlib.use("Agg", force=False)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix(
    confusion: torch.Tensor, classnames: list[str], path: str | Path, *, title: str = "confusion matrix"
) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    plt = _pyplot()
    counts = confusion.double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)  # (C, C), rows sum to 1
    n = len(classnames)
    side = min(max(4.0, 0.45 * n + 2.0), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), classnames, rotation=90, fontsize=8)
    ax.set_yticks(range(n), classnames, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j] > 0:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
