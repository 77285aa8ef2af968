"""Training-step throughput: clipforge's loop step vs a minimal open_clip training step, same data.

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 8] [--rounds 2] \
        [--peer-python /work/venv-oc/bin/python]

Both sides train the same architecture (ViT 64 px / patch 8 / width 256 / depth 6; text width 256
/ depth 6 / context 32; embed 256 — clipforge's ``vit-small``) on the same batch of 128 shapes
images and their captions (OpenAI BPE), in fp32 and in bf16 autocast. One step is: forward, CLIP
loss, backward, AdamW step. The open_clip side is a minimal loop written here (create_model from
the matching config dict, ``ClipLoss``, ``torch.optim.AdamW``); it runs in the reference
environment (``--peer-python``) in a subprocess. Configurations alternate over ``--rounds`` rounds
and the best round counts (the machine is shared). Prints a markdown table; ``--json`` also writes
the rows, each with the device its loss was computed on. On a GPU (the peer: the same Python):

    python benchmarks/bench_train.py --device cuda --precisions bf16 --sdpa flash --compile \
        --peer-python "$(command -v python)" --json train.json
"""

from __future__ import annotations

import argparse
import contextlib
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


def time_steps(step, steps: int, *, kernels) -> tuple[float, str]:
    """(samples/s over ``steps`` steps after two warm-up steps, the device of the loss)."""
    with kernels():
        for _ in range(2):
            loss = step()
        _synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize()
    return BATCH * steps / (time.perf_counter() - t0), loss.device.type


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU kernels run asynchronously: time them to their end


def attention_kernels(choice: str):
    """A factory of contexts: ``flash`` allows only the fused kernels (flash; memory-efficient where a
    mask rules flash out), so that an attention call falling back to the math kernel fails."""
    if choice == "default":
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def clipforge_rate(batch: dict, precision: str, steps: int, args: argparse.Namespace) -> tuple[float, str]:
    from clipforge.models import create_model
    from clipforge.train.accumulation import forward_backward
    from clipforge.train.optim import build_optimizer
    from clipforge.train.precision import autocast_for
    from clipforge.train.step import make_loss_fn

    torch.manual_seed(0)
    model = create_model("vit-small").train().to(args.device)
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    autocast = autocast_for(torch.device(args.device), torch.bfloat16 if precision == "bf16" else torch.float32)
    loss_fn = make_loss_fn("clip", chunk_size=None, distributed=False)
    batch = to_device(batch, args.device)
    micro = [(batch["images"], batch["tokens"])]
    forward = torch.compile(model) if args.compile else model

    def step():
        loss = forward_backward(forward, micro, loss_fn, autocast=autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return time_steps(step, steps, kernels=attention_kernels(args.sdpa))


def open_clip_rate(batch: dict, precision: str, steps: int, args: argparse.Namespace) -> tuple[float, str]:
    """The open_clip side; runs in the reference environment."""
    import open_clip
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:  # register the matching config, then build it the usual way
        (Path(tmp) / "bench-vit-small.json").write_text(json.dumps(OPEN_CLIP_CONFIG))
        open_clip.add_model_config(tmp)
        model = open_clip.create_model("bench-vit-small").train().to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    loss_fn = ClipLoss()
    autocast = (
        (lambda: torch.autocast(args.device, dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )
    batch = to_device(batch, args.device)
    images, tokens = batch["images"], batch["tokens"]
    forward = torch.compile(model) if args.compile else model

    def step():
        with autocast():
            img, txt, scale = _features(forward, images, tokens)
            loss = loss_fn(img, txt, scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return time_steps(step, steps, kernels=attention_kernels(args.sdpa))


def _features(model, images, tokens):
    out = model(images, tokens)
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 (autocast) or both")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up steps compile)")
    ap.add_argument("--sdpa", default="default", choices=["default", "flash"],
                    help="flash: fused attention kernels only; a fall-back to the math kernel fails")
    ap.add_argument("--peer-python", default="/work/venv-oc/bin/python")
    ap.add_argument("--json", help="also write the rows and settings to this JSON file")
    ap.add_argument("--peer", nargs=3, metavar=("BATCH", "PRECISION", "STEPS"), help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = build_parser().parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if args.peer:  # the open_clip side, inside the reference environment
        batch = torch.load(args.peer[0], weights_only=True)
        rate, device = open_clip_rate(batch, args.peer[1], int(args.peer[2]), args)
        print(json.dumps({"rate": rate, "device": device}))
        return

    precisions = args.precisions.split(",")
    best: dict[tuple[str, str], float] = {}
    devices: dict[tuple[str, str], str] = {}
    passed = ["--device", args.device, "--sdpa", args.sdpa] + (["--compile"] if args.compile else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.pt"
        make_batch(path)
        batch = torch.load(path, weights_only=True)
        have_peer = Path(args.peer_python).exists()
        for _ in range(args.rounds):
            for precision in precisions:
                r, devices[("clipforge", precision)] = clipforge_rate(batch, precision, args.steps, args)
                best[("clipforge", precision)] = max(best.get(("clipforge", precision), 0.0), r)
                if have_peer:
                    done = subprocess.run(
                        [args.peer_python, __file__, "--peer", str(path), precision, str(args.steps), *passed],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    peer = json.loads(done.stdout.strip().splitlines()[-1])
                    best[("open_clip", precision)] = max(best.get(("open_clip", precision), 0.0), peer["rate"])
                    devices[("open_clip", precision)] = peer["device"]

    print(
        f"Training step, ViT 64px/8 w256 d6 + text w256 d6 ctx32, batch {BATCH}, "
        f"{torch.get_num_threads()} threads, {args.device}, compile {'on' if args.compile else 'off'}, "
        f"best of {args.rounds} rounds x {args.steps} steps\n"
    )
    print("| precision | open_clip samples/s | clipforge samples/s | clipforge / open_clip |")
    print("|---|---|---|---|")
    for precision in precisions:
        ours, peer = best[("clipforge", precision)], best.get(("open_clip", precision))
        ratio = f"{ours / peer:.2f}x" if peer else "n/a (no reference env)"
        print(f"| {precision} | {peer or float('nan'):.1f} | {ours:.1f} | {ratio} |")
    if args.json:
        rows = [
            {"peer": peer, "precision": precision, "device": devices[(peer, precision)], "samples/s": rate}
            for (peer, precision), rate in best.items()
        ]
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "peer")}
        meta = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
        Path(args.json).write_text(json.dumps({"benchmark": "train", "settings": settings, **meta, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
