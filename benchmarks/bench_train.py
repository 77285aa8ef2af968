"""Training-step throughput: clipforge's loop step vs a minimal open_clip training step, same data.

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 8] [--rounds 2] \
        [--peer-python /work/venv-oc/bin/python]

Both sides train the same architecture (ViT 64 px / patch 8 / width 256 / depth 6; text width 256
/ depth 6 / context 32; embed 256 — clipforge's ``vit-small``) on the same batch of 128 shapes
images and their captions (OpenAI BPE), in fp32 and in bf16 autocast. One step is: forward, CLIP
loss, backward, AdamW step. The open_clip side is a minimal loop written here (create_model from
the matching config dict, ``ClipLoss``, ``torch.optim.AdamW``); it runs in the reference
environment (``--peer-python``) in a subprocess. Configurations alternate over ``--rounds`` rounds
and the best round counts (the machine is shared). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BATCH = 128
OPEN_CLIP_CONFIG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6},
}


def make_batch(path: Path) -> None:
    """128 shapes images (normalised, OpenAI mean/std) and their captions' OpenAI tokens."""
    from clipforge.config import PreprocessConfig
    from clipforge.data import ShapesDataset, ShapesSpec
    from clipforge.data.transforms import image_transform
    from clipforge.tokenizer import get_tokenizer

    ds = ShapesDataset(
        "train",
        spec=ShapesSpec(image_size=64),
        transform=image_transform(PreprocessConfig(), 64, train=False),
    )
    images, captions = zip(*(ds[i] for i in range(BATCH)), strict=True)
    tokens = get_tokenizer("openai", context_length=32)(list(captions))
    torch.save({"images": torch.stack(images), "tokens": tokens}, path)


def time_steps(step, steps: int) -> float:
    """Samples/s over ``steps`` steps after two warm-up steps."""
    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - t0)


def clipforge_rate(batch: dict, precision: str, steps: int) -> float:
    from clipforge.models import create_model
    from clipforge.train.accumulation import forward_backward
    from clipforge.train.optim import build_optimizer
    from clipforge.train.precision import autocast_for
    from clipforge.train.step import make_loss_fn

    torch.manual_seed(0)
    model = create_model("vit-small").train()
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    autocast = autocast_for(torch.device("cpu"), torch.bfloat16 if precision == "bf16" else torch.float32)
    loss_fn = make_loss_fn("clip", chunk_size=None, distributed=False)
    micro = [(batch["images"], batch["tokens"])]

    def step():
        forward_backward(model, micro, loss_fn, autocast=autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, steps)


def open_clip_rate(batch: dict, precision: str, steps: int) -> float:  # runs in the reference env
    import contextlib

    import open_clip
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:  # register the matching config, then build it the usual way
        (Path(tmp) / "bench-vit-small.json").write_text(json.dumps(OPEN_CLIP_CONFIG))
        open_clip.add_model_config(tmp)
        model = open_clip.create_model("bench-vit-small").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    loss_fn = ClipLoss()
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )
    images, tokens = batch["images"], batch["tokens"]

    def step():
        with autocast():
            img, txt, scale = _features(model, images, tokens)
            loss = loss_fn(img, txt, scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, steps)


def _features(model, images, tokens):
    out = model(images, tokens)
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peer-python", default="/work/venv-oc/bin/python")
    ap.add_argument("--peer", nargs=3, metavar=("BATCH", "PRECISION", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:  # the open_clip side, inside the reference environment
        rate = open_clip_rate(torch.load(args.peer[0], weights_only=True), args.peer[1], int(args.peer[2]))
        print(json.dumps({"rate": rate}))
        return

    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.pt"
        make_batch(path)
        batch = torch.load(path, weights_only=True)
        have_peer = Path(args.peer_python).exists()
        for _ in range(args.rounds):
            for precision in ("fp32", "bf16"):
                r = clipforge_rate(batch, precision, args.steps)
                best[("clipforge", precision)] = max(best.get(("clipforge", precision), 0.0), r)
                if have_peer:
                    done = subprocess.run(
                        [args.peer_python, __file__, "--peer", str(path), precision, str(args.steps)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    r = json.loads(done.stdout.strip().splitlines()[-1])["rate"]
                    best[("open_clip", precision)] = max(best.get(("open_clip", precision), 0.0), r)

    print(
        f"Training step, ViT 64px/8 w256 d6 + text w256 d6 ctx32, batch {BATCH}, "
        f"{torch.get_num_threads()} threads, "
        f"best of {args.rounds} rounds x {args.steps} steps\n"
    )
    print("| precision | open_clip samples/s | clipforge samples/s | clipforge / open_clip |")
    print("|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        ours, peer = best[("clipforge", precision)], best.get(("open_clip", precision))
        ratio = f"{ours / peer:.2f}x" if peer else "n/a (no reference env)"
        print(f"| {precision} | {peer or float('nan'):.1f} | {ours:.1f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
