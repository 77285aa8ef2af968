"""clipforge quickstart: train and evaluate a small CLIP on built-in data, offline, in ~5 minutes.

Learns a vocabulary, trains a small ViT CLIP on procedural shapes, evaluates zero-shot on every
shapes task and retrieval, and writes eval.json, report.md with plots and the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a small CLIP on built-in shapes data in ~5 min and report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, default=Path("runs"), help="parent directory of the run (default: runs)"
    )
    p.add_argument("--name", default="quickstart", help="run directory name (default: quickstart)")
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="time budget; the step count adapts to this machine's speed (default: 5)",
    )
    p.add_argument("--steps", type=int, default=None, help="a fixed number of steps instead of a time budget")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..train.quickstart import quickstart

    r = quickstart(
        out=args.out, name=args.name, minutes=args.minutes, steps=args.steps, progress=args.progress
    )
    z = r.figures["zeroshot"]
    print()
    print(f"{'task':<22} {'top-1':>7} {'chance':>7}")
    for task, acc in z.items():
        print(f"{task:<22} {acc['top1']:>7.1%} {acc['chance']:>7.1%}")
    ret = r.figures["retrieval"]
    if ret:
        print(
            f"retrieval text->image R@1/5/10: {ret['text_to_image_R@1']:.1%} / {ret['text_to_image_R@5']:.1%}"
            f" / {ret['text_to_image_R@10']:.1%}"
        )
    print()
    print(f"report:     {r.report_path}")
    print(f"figures:    {r.eval_path}")
    print(f"checkpoint: {r.checkpoint}")
    return 0
