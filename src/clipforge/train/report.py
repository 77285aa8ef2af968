"""The quickstart's report: ``eval.json`` figures and ``report.md`` with three plots.

Plots (matplotlib, imported only here): the training loss curve, zero-shot accuracy per task
against chance, and the image-text similarity matrix of a few held-out examples. Without
matplotlib the report is written without plots and says how to get them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..data import ShapesDataset, ShapesSpec
from ..data.transforms import image_transform
from ..fileio import atomic_write_text
from ..tokenizer import tokenizer_from_metadata
from .metrics_log import read_metrics

TASK_ORDER = ("colour", "shape", "pattern", "count", "position", "colour_shape_seen", "colour_shape_heldout")


def summarise(
    results: dict[str, float],
    *,
    steps: int,
    batch_size: int,
    train_seconds: float,
    total_seconds: float,
    targets: dict[str, float],
) -> dict[str, Any]:
    """Flat evaluation results -> ``{"zeroshot": {task: {top1, top5, chance}}, "retrieval": {...},
    "checks": {...}, ...}``."""
    zeroshot: dict[str, dict[str, float]] = {}
    retrieval: dict[str, float] = {}
    for key, value in results.items():
        parts = key.split("/")
        if parts[0] == "zeroshot" and len(parts) == 3:
            zeroshot.setdefault(parts[1], {})[parts[2]] = value
        elif parts[0] == "retrieval":
            retrieval[parts[1]] = value
    checks = {
        f"{task} top1 >= {goal:.0%}": zeroshot.get(task, {}).get("top1", 0.0) >= goal
        for task, goal in targets.items()
    }
    held = zeroshot.get("colour_shape_heldout")
    if held:
        checks["colour_shape_heldout top1 >= 2x chance"] = held["top1"] >= 2 * held["chance"]
    return {
        "steps": steps,
        "batch_size": batch_size,
        "samples_seen": steps * batch_size,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "zeroshot": {t: zeroshot[t] for t in TASK_ORDER if t in zeroshot}
        | {t: v for t, v in zeroshot.items() if t not in TASK_ORDER},
        "zeroshot_mean_top1": results.get("zeroshot/mean_top1"),
        "retrieval": retrieval,
        "checks": checks,
    }


def write_report(run_dir: Path, figures: dict[str, Any], *, model_path: Path) -> Path:
    """Write the plots and ``report.md`` into ``run_dir``; returns the report's path."""
    plots: list[tuple[str, str]] = []
    note = ""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        note = "\n_Plots need matplotlib: `pip install clipforge[plot]`._\n"
    else:
        plots.append(("Training loss", _plot_loss(run_dir)))
        plots.append(("Zero-shot accuracy per task against chance", _plot_accuracy(run_dir, figures)))
        plots.append(("Image-text similarity on held-out examples", _plot_similarity(run_dir, model_path)))

    lines = [
        "# clipforge quickstart report",
        "",
        f"A CLIP model trained from scratch on the built-in shapes data: {figures['steps']} steps of "
        f"{figures['batch_size']} pairs ({figures['samples_seen']:,} image-caption pairs seen) in "
        f"{figures['train_seconds'] / 60:.1f} min of training.",
        "",
        "## Zero-shot accuracy",
        "",
        "Each task classifies held-out images by comparing them with prompts such as "
        '"a photo of a red shape." — the model was never trained on these labels, only on captions.',
        "`colour_shape_heldout` uses colour + shape combinations that never appeared in training: "
        "accuracy above chance there means the model composes what it learnt.",
        "",
        "| task | top-1 | top-5 | chance |",
        "|---|---|---|---|",
    ]
    for task, acc in figures["zeroshot"].items():
        top5 = f"{acc['top5']:.1%}" if "top5" in acc else "-"
        lines.append(f"| {task} | {acc['top1']:.1%} | {top5} | {acc['chance']:.1%} |")
    r = figures["retrieval"]
    if r:
        lines += [
            "",
            "## Retrieval on the val split",
            "",
            "| direction | R@1 | R@5 | R@10 |",
            "|---|---|---|---|",
        ]
        for d in ("text_to_image", "image_to_text"):
            lines.append(
                f"| {d.replace('_', ' ')} | "
                f"{r[f'{d}_R@1']:.1%} | {r[f'{d}_R@5']:.1%} | {r[f'{d}_R@10']:.1%} |"
            )
    lines += ["", "## Checks", ""] + [
        f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in figures["checks"].items()
    ]
    for title, file in plots:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    lines += [
        note,
        "## Files",
        "",
        f"- checkpoint: `{model_path.name}` (load it with `clipforge.load(path)`)",
        "- every figure: `eval.json`; training curves: `metrics.jsonl`; settings: `run.json`",
        "",
    ]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _plot_loss(run_dir: Path) -> str:
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=110)
    plt.close(fig)
    return "loss.png"


def _plot_accuracy(run_dir: Path, figures: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    tasks = list(figures["zeroshot"])
    top1 = [figures["zeroshot"][t]["top1"] for t in tasks]
    chance = [figures["zeroshot"][t]["chance"] for t in tasks]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(tasks))
    ax.bar(x, top1, color="tab:green", label="zero-shot top-1")
    ax.scatter(x, chance, color="black", marker="_", s=400, linewidths=2, label="chance", zorder=3)
    ax.set_xticks(list(x), [t.replace("colour_shape_", "colour+shape\n") for t in tasks], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy.png", dpi=110)
    plt.close(fig)
    return "accuracy.png"


@torch.no_grad()
def _plot_similarity(run_dir: Path, model_path: Path, *, n: int = 8) -> str:
    import matplotlib.pyplot as plt


    model, info = load_checkpoint(model_path)
    tokenizer = tokenizer_from_metadata(info.tokenizer)
    size = info.config.vision.image_size
    val = ShapesDataset("val", spec=ShapesSpec(image_size=size))
    pils, captions = zip(*(val[i] for i in range(n)), strict=True)
    transform = image_transform(info.config.preprocess, size, train=False)
    img = model.encode_image(torch.stack([transform(p) for p in pils]))  # (n, E)
    txt = model.encode_text(
        tokenizer(list(captions), context_length=info.config.text.context_length)
    )  # (n, E)
    sim = (img @ txt.T).numpy()  # (n images, n captions)

    fig, ax = plt.subplots(figsize=(9, 7))
    ax.imshow(sim.T, cmap="viridis")
    for i, p in enumerate(pils):  # each image as a thumbnail over its column, in the same axes
        ax.imshow(p, extent=(i - 0.45, i + 0.45, -0.6, -1.5))
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -1.55)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    for i in range(n):
        for j in range(n):
            ax.text(
                i,
                j,
                f"{sim[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if sim[i, j] > sim.mean() else "white",
            )
    ax.set_yticks(range(n), captions, fontsize=8)
    ax.set_xticks([])
    ax.set_title(
        "cosine similarity: image (column) vs caption (row); the diagonal are the true pairs", fontsize=9
    )
    fig.savefig(run_dir / "similarity.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "similarity.png"
