"""clipforge merge A B --alpha 0.5 --out C: WiSE-FT weight interpolation of two checkpoints.

Write (1 - alpha) * A + alpha * B. A is usually the zero-shot model, B its fine-tuned version; alpha
0 gives A, 1 gives B.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._apps import MODEL_HELP

HELP = "interpolate two checkpoints of one model (WiSE-FT)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="first model (usually the zero-shot one): " + MODEL_HELP)
    p.add_argument("b", metavar="B", help="second model, same architecture and tokenizer (any reference A takes)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of B, in [0, 1] (default 0.5)")
    p.add_argument("--out", type=Path, required=True, help="where to write the merged checkpoint")


def run(args: argparse.Namespace) -> int:
    from ..train.merge import merge_checkpoints

    path = merge_checkpoints(args.a, args.b, alpha=args.alpha, out=args.out)
    print(f"merged {args.a} and {args.b} with alpha={args.alpha}: {path}")
    return 0
